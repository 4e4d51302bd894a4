"""A KV cache allocated once for a fixed number of tokens, compacted in place, usable by transformers models.

Why not `DynamicCache`: it grows by concatenation, so a memory cap would only be a check around a growing
list. Here the cap is a property of the data structure: with a `capacity`, every layer's keys and values are
allocated once as (1, H, capacity, D) and never reallocated; a write past the end raises
`CacheCapacityError`. Compression (InfiniPot-V, arXiv 2506.15745) moves the kept slots to the front, per head,
so each KV head may keep different tokens while all heads keep the same count.

Every slot also carries metadata the scorers need: the token's global id in the stream (`token_index`,
int64: ids never repeat over a stream of any length), its temporal frame (`frame_id`, int32, -1 for text),
its spatial position in that frame (`patch_index`, int32, -1 for text), and the rotary position ids it was
written with (`positions`, int32, `position_rows` rows: 3 for M-RoPE, 1 for 1-D RoPE; kept so cached keys can
be re-anchored by rotation, see `infinipot.rope_shift`). The caller stages these with `stage_tokens()` before
each forward; each layer's `update()` writes them next to that layer's keys and values, so metadata and K/V
move together in `compact()`. The metadata lives on the store's device and is part of the cap:
`bytes_per_token` and `nbytes_capacity` count keys, values AND metadata (`slot_bytes` gives the formula).

`capacity=None` is the uncapped full-cache baseline only: storage grows by amortised doubling.

Batch size 1 only (one camera stream per store).
"""
from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from infinipot.errors import CacheCapacityError

__all__ = ["FixedKVStore", "FixedKVLayer", "slot_bytes"]

_META_FIELDS = ("token_index", "frame_id", "patch_index", "positions")
_META_DTYPES = {"token_index": torch.int64, "frame_id": torch.int32, "patch_index": torch.int32,
                "positions": torch.int32}


def slot_bytes(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, position_rows: int = 1
) -> int:
    """Bytes one token costs in a `FixedKVStore`, over all layers and KV heads: keys + values (2·D elements
    of `dtype`) plus its metadata (int64 token id, int32 frame id, int32 patch index, `position_rows` int32
    position ids). This is what a budget in bytes must divide by."""
    element = torch.empty((), dtype=dtype).element_size()
    meta = sum(torch.empty((), dtype=d).element_size() for n, d in _META_DTYPES.items() if n != "positions")
    meta += position_rows * torch.empty((), dtype=_META_DTYPES["positions"]).element_size()
    return num_layers * num_kv_heads * (2 * head_dim * element + meta)
#: first allocation of an uncapped store, in tokens
_MIN_GROWTH = 64


class FixedKVLayer(CacheLayerMixin):
    """One layer of a `FixedKVStore`; transformers calls it through the store.

    It owns this layer's key/value buffers (the attribute names `keys`/`values` follow transformers'
    layers); the fill level and metadata live in the store, which keeps all layers consistent.
    """

    is_compileable = False
    is_croppable = True
    is_sliding = False

    def __init__(self, store: "FixedKVStore", layer_idx: int, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self._store = store
        self.layer_idx = layer_idx
        self.keys = keys
        self.values = values
        self.device = keys.device
        self.is_initialized = True  # allocated up front; there is nothing lazy to do

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to do: buffers are allocated by the store's constructor."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._store.update(key_states, value_states, self.layer_idx)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset): `update()` returns only the used slots plus the new ones."""
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self._store.layer_length(self.layer_idx)

    def get_max_length(self) -> int:
        capacity = self._store.capacity
        return -1 if capacity is None else capacity

    def reset(self) -> None:
        self._store.reset()

    def crop(self, tokens_to_remove: int) -> None:
        self._store.crop(tokens_to_remove)

    def offload(self) -> None:
        """Offloading would reallocate the buffers; the fixed store never moves them."""

    def prefetch(self) -> None:
        """See `offload`."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("FixedKVStore holds one stream (batch 1); beam search is not supported")


class FixedKVStore(Cache):
    """Fixed-capacity KV cache with per-slot token metadata; a drop-in `past_key_values` for transformers.

    Args:
        num_layers, num_kv_heads, head_dim: the language model's KV geometry.
        capacity: slots per layer and head, allocated once; None = uncapped baseline (grows by doubling).
        dtype, device: of the key/value buffers; the model's key states must match.
    """

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        capacity: int | None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        position_rows: int = 1,
    ):
        if num_layers <= 0 or num_kv_heads <= 0 or head_dim <= 0:
            raise ValueError(
                f"KV geometry must be positive, got layers={num_layers}, heads={num_kv_heads}, "
                f"head_dim={head_dim}"
            )
        if position_rows <= 0:
            raise ValueError(f"position_rows must be positive, got {position_rows}")
        if capacity is not None and capacity <= 0:
            raise ValueError(f"capacity must be positive or None, got {capacity}")
        self.num_layers = int(num_layers)
        self.num_kv_heads = int(num_kv_heads)
        self.head_dim = int(head_dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.position_rows = int(position_rows)
        self._capacity = None if capacity is None else int(capacity)
        alloc = self._capacity if self._capacity is not None else 0
        layers = [
            FixedKVLayer(self, i, self._empty_kv(alloc), self._empty_kv(alloc))
            for i in range(self.num_layers)
        ]
        super().__init__(layers=layers)
        for name in _META_FIELDS:
            setattr(self, name, self._empty_meta(name, alloc))
        self._lengths = [0] * self.num_layers
        self._next_token = [0] * self.num_layers  # per layer, so a forward's layers agree on auto ids
        self._staged: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._staged_used = [True] * self.num_layers
        self.prefix_length = 0

    # ----------------------------------------------------------------------------------------- allocation
    def _empty_kv(self, slots: int) -> torch.Tensor:
        return torch.zeros((1, self.num_kv_heads, slots, self.head_dim), dtype=self.dtype, device=self.device)

    def _empty_meta(self, name: str, slots: int) -> torch.Tensor:
        shape = (self.num_layers, self.num_kv_heads, slots)
        if name == "positions":
            shape = (self.num_layers, self.num_kv_heads, self.position_rows, slots)
        return torch.full(shape, -1, dtype=_META_DTYPES[name], device=self.device)

    @property
    def capacity(self) -> int | None:
        """Slots per layer and head (None: uncapped baseline)."""
        return self._capacity

    @property
    def allocated_tokens(self) -> int:
        """Slots currently allocated per layer and head (== capacity when capped)."""
        return int(self.token_index.shape[-1])

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token occupies across layers and heads: keys + values + metadata (`slot_bytes`)."""
        return slot_bytes(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype, self.position_rows)

    @property
    def nbytes_capacity(self) -> int:
        """Bytes allocated per slot for keys, values and metadata: the hard cap (uncapped: the current
        allocation). Every tensor the store allocates per slot is in this sum."""
        kv = sum(layer.keys.nbytes + layer.values.nbytes for layer in self.layers)
        return kv + sum(getattr(self, name).nbytes for name in _META_FIELDS)

    @property
    def nbytes_used(self) -> int:
        """Bytes of keys, values and metadata in used slots."""
        per_layer = self.bytes_per_token // self.num_layers
        return sum(self._lengths) * per_layer

    def _ensure_room(self, layer_idx: int, needed: int) -> None:
        """Capped: raise if `needed` slots do not fit. Uncapped baseline: grow by doubling."""
        alloc = self.allocated_tokens
        layer = self.layers[layer_idx]
        if self._capacity is not None:
            if needed > self._capacity:
                raise CacheCapacityError(
                    f"layer {layer_idx}: writing would need {needed} slots but the store holds "
                    f"{self._capacity}; compress or truncate before writing"
                )
            return
        if needed > layer.keys.shape[2]:
            new_slots = max(needed, 2 * layer.keys.shape[2], _MIN_GROWTH)
            used = self._lengths[layer_idx]
            for name in ("keys", "values"):
                grown = self._empty_kv(new_slots)
                grown[:, :, :used] = getattr(layer, name)[:, :, :used]
                setattr(layer, name, grown)
        if needed > alloc:
            new_slots = max(needed, 2 * alloc, _MIN_GROWTH)
            for name in _META_FIELDS:
                grown = self._empty_meta(name, new_slots)
                grown[..., :alloc] = getattr(self, name)
                setattr(self, name, grown)

    # ------------------------------------------------------------------------------------------- lengths
    @property
    def length(self) -> int:
        """Fill level in tokens. All layers agree after a full forward or compaction; in between (mid-forward,
        mid-compaction) this is the largest layer's."""
        return max(self._lengths)

    def layer_length(self, layer_idx: int) -> int:
        """Fill level of one layer."""
        return self._lengths[layer_idx]

    def set_prefix_length(self, n: int) -> None:
        """Protect slots [0, n) from eviction (the text prefix). Selection never moves them."""
        if n < 0 or (self._capacity is not None and n > self._capacity):
            raise ValueError(f"prefix length {n} outside [0, capacity={self._capacity}]")
        self.prefix_length = int(n)

    # ----------------------------------------------------------------------------------------- writing
    def stage_tokens(
        self,
        token_index: torch.Tensor,
        frame_id: torch.Tensor,
        patch_index: torch.Tensor,
        positions: torch.Tensor | None = None,
    ) -> None:
        """Give the metadata of the n tokens the next forward writes; each layer's next `update()` uses it.

        positions: the (position_rows, n) rotary position ids of the forward (any shape that reshapes to it,
        e.g. (3, 1, n)); None = unknown (-1), and such tokens cannot be re-anchored."""
        n = int(token_index.shape[0])
        tensors = []
        for name, t in (("token_index", token_index), ("frame_id", frame_id), ("patch_index", patch_index)):
            t = torch.as_tensor(t)
            if t.dim() != 1 or t.shape[0] != n:
                raise ValueError(f"{name} must be a 1-D tensor of length {n}, got shape {tuple(t.shape)}")
            tensors.append(t.to(device=self.device, dtype=_META_DTYPES[name]))
        if positions is None:
            rows = torch.full((self.position_rows, n), -1, dtype=torch.int32, device=self.device)
        else:
            positions = torch.as_tensor(positions)
            if positions.numel() != self.position_rows * n:
                raise ValueError(
                    f"positions must hold {self.position_rows} rows of {n} ids, got shape {tuple(positions.shape)}"
                )
            if positions.numel() and int(positions.max()) >= 2**31:
                raise ValueError("position ids above 2^31 cannot be stored (int32)")
            rows = positions.reshape(self.position_rows, n).to(device=self.device, dtype=torch.int32)
        self._staged = (tensors[0], tensors[1], tensors[2], rows)
        self._staged_used = [False] * self.num_layers

    def _metadata_for(self, layer_idx: int, n: int) -> tuple[torch.Tensor, ...]:
        """Staged metadata for this layer's write, or text metadata with fresh ids when nothing is staged
        (e.g. `model.generate` decoding one token at a time)."""
        if self._staged is not None and not self._staged_used[layer_idx]:
            token_index = self._staged[0]
            if token_index.shape[0] != n:
                raise ValueError(
                    f"layer {layer_idx}: {n} key states but {token_index.shape[0]} tokens staged "
                    "with stage_tokens()"
                )
            self._staged_used[layer_idx] = True
            staged = self._staged
            if all(self._staged_used):
                self._staged = None
            return staged
        start = self._next_token[layer_idx]
        token_index = torch.arange(start, start + n, dtype=torch.int64, device=self.device)
        text = torch.full((n,), -1, dtype=torch.int32, device=self.device)
        unknown = torch.full((self.position_rows, n), -1, dtype=torch.int32, device=self.device)
        return token_index, text, text, unknown

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write n new tokens of one layer into slots [length, length+n); return the used keys/values
        (1, H, length+n, D) as views of the fixed buffers."""
        if not 0 <= layer_idx < self.num_layers:
            raise IndexError(f"layer_idx {layer_idx} outside [0, {self.num_layers})")
        if key_states.shape[0] != 1 or key_states.dim() != 4:
            raise ValueError(f"FixedKVStore holds batch 1 (1, H, n, D) states, got {tuple(key_states.shape)}")
        if key_states.shape != value_states.shape or key_states.shape[1] != self.num_kv_heads or (
            key_states.shape[3] != self.head_dim
        ):
            raise ValueError(
                f"key/value states {tuple(key_states.shape)}/{tuple(value_states.shape)} do not match "
                f"the store geometry (1, {self.num_kv_heads}, n, {self.head_dim})"
            )
        if key_states.dtype != self.dtype:
            raise ValueError(f"key states are {key_states.dtype} but the store holds {self.dtype}")
        n = int(key_states.shape[2])
        start = self._lengths[layer_idx]
        end = start + n
        self._ensure_room(layer_idx, end)
        token_index, frame_id, patch_index, positions = self._metadata_for(layer_idx, n)
        layer = self.layers[layer_idx]
        layer.keys[:, :, start:end].copy_(key_states)
        layer.values[:, :, start:end].copy_(value_states)
        self.token_index[layer_idx, :, start:end] = token_index
        self.frame_id[layer_idx, :, start:end] = frame_id
        self.patch_index[layer_idx, :, start:end] = patch_index
        self.positions[layer_idx, :, :, start:end] = positions.unsqueeze(0)
        self._lengths[layer_idx] = end
        if n:
            self._next_token[layer_idx] = max(self._next_token[layer_idx], int(token_index.max()) + 1)
        return layer.keys[:, :, :end], layer.values[:, :, :end]

    # ------------------------------------------------------------------------------------------ reading
    def view(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of one layer's used slots, each (1, H, len, D). Views of the store: do not write."""
        end = self._lengths[layer_idx]
        layer = self.layers[layer_idx]
        return layer.keys[:, :, :end], layer.values[:, :, :end]

    def metadata(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token_index, frame_id, patch_index) of one layer's used slots, each (H, len).
        Views of the store: do not write."""
        end = self._lengths[layer_idx]
        return (
            self.token_index[layer_idx, :, :end],
            self.frame_id[layer_idx, :, :end],
            self.patch_index[layer_idx, :, :end],
        )

    def position_ids(self, layer_idx: int) -> torch.Tensor:
        """(H, position_rows, len) int32 rotary position ids of one layer's used slots (-1 = unknown).
        A view of the store: write only through `reanchor`."""
        return self.positions[layer_idx, :, :, : self._lengths[layer_idx]]

    def reanchor(self, layer_idx: int, keys: torch.Tensor, positions: torch.Tensor) -> None:
        """Replace one layer's used keys (1, H, len, D) and their position ids (H, rows, len) in place: the
        keys rotated to new positions (`infinipot.rope_shift`). Values and other metadata do not change."""
        end = self._lengths[layer_idx]
        layer = self.layers[layer_idx]
        if tuple(keys.shape) != (1, self.num_kv_heads, end, self.head_dim):
            raise ValueError(f"keys {tuple(keys.shape)} do not match layer {layer_idx}'s used slots")
        if tuple(positions.shape) != (self.num_kv_heads, self.position_rows, end):
            raise ValueError(f"positions {tuple(positions.shape)} do not match layer {layer_idx}'s used slots")
        layer.keys[:, :, :end].copy_(keys)
        self.positions[layer_idx, :, :, :end].copy_(positions)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._lengths[layer_idx]

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1 if self._capacity is None else self._capacity

    def get_mask_sizes(self, query_length: int, layer_idx: int) -> tuple[int, int]:
        return self._lengths[layer_idx] + query_length, 0

    # --------------------------------------------------------------------------------------- shrinking
    @property
    def next_token_index(self) -> int:
        """Id the next unstaged token would get (ids of evicted or rolled-back tokens are not reused)."""
        return max(self._next_token)

    def truncate(self, length: int, *, next_token_index: int | None = None) -> None:
        """Drop slots >= `length` in every layer (rolls back question/answer tokens). Slots below `length`
        are not touched, so they stay bit-identical. `next_token_index` also rolls back the id counter for
        unstaged writes (the session passes its own counter so that asking leaves the whole state as before)."""
        if not 0 <= length <= min(self._lengths):
            raise ValueError(f"cannot truncate to {length}: layers hold {min(self._lengths)} tokens")
        if length < self.prefix_length:
            self.prefix_length = int(length)
        self._lengths = [int(length)] * self.num_layers
        if next_token_index is None:
            next_token_index = max(self._next_token)  # ids are never reused, in any layer
        self._next_token = [int(next_token_index)] * self.num_layers
        self._staged = None
        self._staged_used = [True] * self.num_layers

    def crop(self, tokens_to_remove: int) -> None:
        """transformers' crop: a negative value removes that many tokens; a positive one is the new length."""
        length = self.length + tokens_to_remove if tokens_to_remove < 0 else tokens_to_remove
        self.truncate(max(0, min(length, self.length)))

    def compact(self, layer_idx: int, keep: torch.Tensor, *, check: bool = True) -> None:
        """Keep, per head, the slots `keep[h]` (H, n_keep) and move them, in ascending slot order, to the
        front: keys, values and metadata. Every head keeps n_keep slots; the buffers are not reallocated.

        `check=False` skips sorting and validating `keep` (each a device sync on a GPU) for callers that
        already hold ascending, unique, in-range indices, such as `select_keep_indices`."""
        length = self._lengths[layer_idx]
        if keep.dim() != 2 or keep.shape[0] != self.num_kv_heads:
            raise ValueError(
                f"keep must be (num_kv_heads={self.num_kv_heads}, n_keep), got {tuple(keep.shape)}"
            )
        keep = keep.to(device=self.device, dtype=torch.int64)
        n_keep = int(keep.shape[1])
        if n_keep == 0:
            self._lengths[layer_idx] = 0
            return
        if n_keep > length:
            raise ValueError(f"layer {layer_idx}: cannot keep {n_keep} of {length} slots")
        if check:
            keep = keep.sort(dim=1).values
            if int(keep[:, 0].min()) < 0 or int(keep[:, -1].max()) >= length:
                raise ValueError(f"layer {layer_idx}: keep indices must lie in [0, {length})")
            if n_keep > 1 and bool((keep[:, 1:] == keep[:, :-1]).any()):
                raise ValueError(f"layer {layer_idx}: keep indices repeat within a head")
        layer = self.layers[layer_idx]
        slots = layer.keys.shape[2]
        heads = torch.arange(self.num_kv_heads, device=self.device).unsqueeze(1)
        rows = (heads * slots + keep).reshape(-1)  # rows of the (H·slots, D) view
        for buffer in (layer.keys, layer.values):
            flat = buffer.view(self.num_kv_heads * slots, self.head_dim)
            kept = flat.index_select(0, rows)  # transient (H·n_keep, D)
            buffer[0, :, :n_keep].copy_(kept.view(self.num_kv_heads, n_keep, self.head_dim))
        for name in _META_FIELDS:
            meta = getattr(self, name)[layer_idx]
            if name == "positions":
                index = keep.unsqueeze(1).expand(-1, self.position_rows, -1)
                meta[:, :, :n_keep] = meta[:, :, :length].gather(2, index)
            else:
                meta[:, :n_keep] = meta[:, :length].gather(1, keep)
        self._lengths[layer_idx] = n_keep

    def reset(self) -> None:
        """Empty the store (buffers stay allocated) and forget the prefix and token ids."""
        self._lengths = [0] * self.num_layers
        self._next_token = [0] * self.num_layers
        self._staged = None
        self._staged_used = [True] * self.num_layers
        self.prefix_length = 0

    # -------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, torch.Tensor | int]:
        """The used part of the store plus what is needed to check geometry on load (CPU tensors)."""
        if len(set(self._lengths)) != 1:
            raise ValueError(
                f"layers hold different lengths {self._lengths}; finish the forward/compaction first"
            )
        end = self._lengths[0]
        return {
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "capacity": -1 if self._capacity is None else self._capacity,
            "length": end,
            "prefix_length": self.prefix_length,
            "next_token_index": max(self._next_token),
            "keys": torch.stack([layer.keys[0, :, :end] for layer in self.layers]).cpu(),
            "values": torch.stack([layer.values[0, :, :end] for layer in self.layers]).cpu(),
            **{name: getattr(self, name)[..., :end].cpu().clone() for name in _META_FIELDS},
        }

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        """Restore a `state_dict()` into this store's existing buffers (the geometry must match)."""
        for name in ("num_layers", "num_kv_heads", "head_dim"):
            if int(state[name]) != getattr(self, name):
                raise ValueError(
                    f"saved {name}={int(state[name])} does not match this store's {getattr(self, name)}"
                )
        end = int(state["length"])
        keys = state["keys"]
        assert isinstance(keys, torch.Tensor)
        if keys.dtype != self.dtype:
            raise ValueError(f"saved keys are {keys.dtype} but the store holds {self.dtype}")
        self.reset()
        for layer_idx in range(self.num_layers):
            self._ensure_room(layer_idx, end)
        for layer_idx, layer in enumerate(self.layers):
            layer.keys[0, :, :end].copy_(state["keys"][layer_idx])  # type: ignore[index]
            layer.values[0, :, :end].copy_(state["values"][layer_idx])  # type: ignore[index]
        if "positions" not in state:
            raise ValueError("the saved store has no position ids (saved by an older version); cannot resume it")
        for name in _META_FIELDS:
            getattr(self, name)[..., :end].copy_(state[name])  # type: ignore[arg-type]
        self._lengths = [end] * self.num_layers
        self._next_token = [int(state["next_token_index"])] * self.num_layers
        self.prefix_length = int(state["prefix_length"])
