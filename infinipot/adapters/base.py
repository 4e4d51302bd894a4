"""The contract every model adapter fulfils, so the streaming session never sees architecture details.

Why an adapter layer: each video VLM has its own frame preprocessing, vision tower, special tokens and
position scheme (Qwen2-VL's 3-D M-RoPE vs. plain 1-D RoPE). The session only needs: frames in, visual
embeddings + their positions out; text in, embeddings + positions out; and one forward over embeddings
with an explicit cache. Keeping the position rule here (one place per architecture) lets it be swapped.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from infinipot.rope_shift import RotaryConfig


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32" / "bfloat16" / "float16" (the CLI/parameter spelling) or a torch dtype -> torch dtype.

    Shared by every adapter's `from_pretrained`, so all accept the same spellings; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass(frozen=True)
class KVGeometry:
    """Shape of the language model's KV cache: what a token costs in memory."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    position_rows: int = 1  # rows of rotary position ids per token: 3 for M-RoPE, 1 for 1-D RoPE

    @property
    def bytes_per_token(self) -> int:
        """Bytes of keys + values one token occupies across all layers and KV heads (no metadata)."""
        element = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element

    @property
    def slot_bytes(self) -> int:
        """Bytes one token costs in the session's store: keys, values and per-slot metadata (what budgets
        in bytes divide by; see `infinipot.kv_store.slot_bytes`)."""
        from infinipot.kv_store import slot_bytes

        return slot_bytes(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype, self.position_rows)


@dataclass
class VisualChunk:
    """Vision tokens of `num_frames` consecutive temporal frames, ready to be prefilled.

    A "temporal frame" is what the model turns into one grid of tokens: two video frames for Qwen2-VL
    (temporal patch size 2), one frame elsewhere. Tokens are ordered frame by frame, row-major in space.
    """

    embeds: torch.Tensor  # (n_tokens, hidden) in the model's dtype/device
    num_frames: int  # temporal frames in this chunk
    frame_grid: tuple[int, int]  # (rows, cols) of tokens per temporal frame after merging
    frame_offset: torch.Tensor  # (n_tokens,) int64: 0..num_frames-1, which temporal frame
    patch_index: torch.Tensor  # (n_tokens,) int64: 0..rows*cols-1, spatial position in the frame
    # Where the chunk sits in the stream, filled by the session before `visual_positions` (None/0 when a
    # caller prefills chunks on their own, e.g. training): the logical position at which the stream's video
    # began, how many temporal frames came before this chunk, and per temporal frame the seconds since the
    # stream's first frame (its first raw frame's header stamp). Adapters whose family lays a video out as
    # ONE group (Qwen2-VL/2.5-VL) need them; adapters with a per-token counter ignore them.
    stream_start: int | None = None
    # added to every temporal id of the stream's video: what re-anchoring took off (infinipot/reanchor.py)
    stream_t_shift: int = 0
    first_frame: int = 0
    frame_times: tuple[float, ...] | None = None
    # ... and the seconds of each temporal frame's LAST raw frame (Qwen3-VL stamps a patch with the mean)
    frame_end_times: tuple[float, ...] | None = None
    # extra per-token features sliced with the tokens, (k, n_tokens, hidden): Qwen3-VL's DeepStack features
    token_features: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[0])

    def frame(self, k: int) -> "VisualChunk":
        """Temporal frame `k` alone, as a one-frame chunk that keeps its place in the stream."""
        per = self.frame_grid[0] * self.frame_grid[1]
        part = slice(k * per, (k + 1) * per)
        return VisualChunk(
            embeds=self.embeds[part],
            num_frames=1,
            frame_grid=self.frame_grid,
            frame_offset=self.frame_offset[part] - k,
            patch_index=self.patch_index[part],
            stream_start=self.stream_start,
            stream_t_shift=self.stream_t_shift,
            first_frame=self.first_frame + k,
            frame_times=None if self.frame_times is None else (self.frame_times[k],),
            frame_end_times=None if self.frame_end_times is None else (self.frame_end_times[k],),
            token_features=None if self.token_features is None else self.token_features[:, part],
        )

    def frame_seconds(self, k: int) -> float:
        """Time of temporal frame k since the stream's first frame: the mean of its first and last raw
        frame's (for one raw frame per temporal frame: that frame's time); 0 when unknown."""
        if self.frame_times is None:
            return 0.0
        end = self.frame_times[k] if self.frame_end_times is None else self.frame_end_times[k]
        return (self.frame_times[k] + end) / 2.0


@dataclass
class StreamBlock:
    """What the session prefills for one visual chunk: its visual tokens plus the text that belongs to its
    frames (timestamps, frame wrappers such as SmolVLM2's "Frame from 00:05:" or Qwen3-VL's "<2.5 seconds>"),
    in prompt order, with positions.

    Frame text tokens carry their frame (`frame_offset`) and `patch_index` -1, so the store records which
    frame they belong to; selection never scores them and drops them with their frame's last visual token.
    `forward_kwargs` are passed on to `adapter.forward` for this block (Qwen3-VL: DeepStack features)."""

    embeds: torch.Tensor  # (n, hidden)
    positions: torch.Tensor  # the adapter's position ids for the n tokens
    frame_offset: torch.Tensor  # (n,) int64: temporal frame within the chunk, text included
    patch_index: torch.Tensor  # (n,) int64: spatial index for visual tokens, -1 for frame text
    next_start: int
    forward_kwargs: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[0])


class VLMAdapter(ABC):
    """One loaded vision-language model plus everything architecture-specific about streaming into it.

    Adapters do not choose the autograd mode: the session runs them under `torch.no_grad()`, the training
    script (infinipot_train/train.py) with gradients, through the very same methods."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype

    #: raw video frames per temporal frame (Qwen2-VL: 2; 1-D RoPE adapters: 1)
    frames_per_step: int
    #: (rows, cols) of tokens per temporal frame
    frame_grid: tuple[int, int]
    #: model id or local path it was loaded from (recorded in saved sessions)
    name: str = ""
    #: config `model_type` of the checkpoint (e.g. "qwen2_vl"); saved sessions refuse another one
    model_type: str = ""

    @property
    def tokens_per_frame(self) -> int:
        return self.frame_grid[0] * self.frame_grid[1]

    @property
    @abstractmethod
    def geometry(self) -> KVGeometry:
        """KV cache geometry of the language model."""

    @property
    @abstractmethod
    def eos_token_ids(self) -> list[int]:
        """Token ids that end an answer."""

    @abstractmethod
    def prefix_token_ids(self) -> list[int]:
        """Text before the stream's first visual token (system prompt, user turn, vision start). Never evicted."""

    @abstractmethod
    def question_token_ids(self, question: str) -> list[int]:
        """Text appended after the visual stream to ask `question` and open the assistant's answer."""

    @abstractmethod
    def encode_frames(self, frames: Sequence[np.ndarray]) -> VisualChunk:
        """Turn RGB uint8 frames (H, W, 3), len a multiple of frames_per_step, into vision tokens."""

    @abstractmethod
    def text_embeds(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(n,) int64 token ids -> (n, hidden) input embeddings."""

    @abstractmethod
    def text_positions(self, start: int, num_tokens: int) -> tuple[torch.Tensor, int]:
        """Position ids for `num_tokens` text tokens from logical position `start`; returns (ids, next start)."""

    @abstractmethod
    def visual_positions(self, start: int, chunk: VisualChunk) -> tuple[torch.Tensor, int]:
        """Position ids for a visual chunk placed at logical position `start`; returns (ids, next start)."""

    @abstractmethod
    def forward(
        self, embeds: torch.Tensor, position_ids: torch.Tensor, cache: object, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """Run the language model over (1, n, hidden) embeddings with explicit positions, writing K/V into
        `cache` (a transformers Cache); return logits (1, n, vocab), or only the last `logits_to_keep`
        rows when it is > 0 (prefill needs none, a question only the last: the lm_head is costly)."""

    #: most text tokens one temporal frame may carry (timestamps, wrappers); sizes the budget's smallest step
    max_frame_text_tokens: int = 0

    def frame_text_ids(self, frame_index: int, seconds: float) -> tuple[list[int], list[int]]:
        """Text before and after temporal frame `frame_index` of the stream, taken `seconds` after the
        stream's first frame (`VisualChunk.frame_seconds`). Default: none (the frame is only its visual tokens)."""
        return [], []

    def stream_block(self, start: int, chunk: VisualChunk) -> StreamBlock:
        """The chunk's tokens as the session prefills them, from logical position `start`: per temporal frame
        its text before (`frame_text_ids`), its visual tokens (`visual_positions`), its text after; text
        positions from `text_positions`. Adapters whose frames carry no text get the visual chunk alone."""
        texts = [self.frame_text_ids(chunk.first_frame + k, chunk.frame_seconds(k)) for k in range(chunk.num_frames)]
        if not any(before or after for before, after in texts):
            positions, next_start = self.visual_positions(start, chunk)
            return StreamBlock(chunk.embeds, positions, chunk.frame_offset, chunk.patch_index, next_start)
        embeds, positions, offsets, patches = [], [], [], []

        def add_text(ids: list[int], k: int) -> None:
            nonlocal start
            pos, start = self.text_positions(start, len(ids))
            embeds.append(self.text_embeds(torch.tensor(ids, dtype=torch.long)))
            positions.append(pos)
            offsets.append(torch.full((len(ids),), k, dtype=torch.long))
            patches.append(torch.full((len(ids),), -1, dtype=torch.long))

        for k, (before, after) in enumerate(texts):
            if before:
                add_text(before, k)
            frame = chunk.frame(k)
            pos, start = self.visual_positions(start, frame)
            embeds.append(frame.embeds)
            positions.append(pos)
            offsets.append(frame.frame_offset.cpu() + k)
            patches.append(frame.patch_index.cpu())
            if after:
                add_text(after, k)
        return StreamBlock(
            torch.cat(embeds), torch.cat(positions, dim=-1), torch.cat(offsets), torch.cat(patches), start
        )

    def attention_config(self) -> object:
        """The config whose `_attn_implementation` the language model's attention layers read.

        Why a hook: the evidence probe (infinipot/evidence.py) swaps the attention function of the language
        model only, never the vision tower's. transformers' `get_decoder()` returns the text model for every
        adapter here; an adapter whose model differs overrides this."""
        return self.model.get_decoder().config

    def model_identity(self) -> dict[str, str]:
        """Content hashes of the loaded checkpoint: its config and its weights (computed once).

        Content, not the name or path: the same checkpoint copied elsewhere is the same model, a fine-tune
        saved under the old name is not. The weights hash covers every tensor's name, shape and dtype and
        an evenly strided sample of up to 4096 of its values: a few milliseconds even for billions of
        parameters, and any fine-tune changes the samples.
        """
        cached = getattr(self, "_model_identity", None)
        if cached is None:
            cached = {"config_sha256": _config_sha256(self.model), "weights_sha256": _weights_sha256(self.model)}
            self._model_identity = cached
        return dict(cached)

    # ------------------------------------------------------------------ re-anchoring (bounded positions)
    # The layout-specific half of `infinipot.reanchor`: where a frame's anchor is and which position rows move
    # with it. Each adapter implements these next to its position rule.

    @property
    def max_position_embeddings(self) -> int:
        """The language model's trained position range (its config's `max_position_embeddings`)."""
        raise NotImplementedError(f"{type(self).__name__} does not report max_position_embeddings")

    def rotary_config(self) -> "RotaryConfig":
        """The language model's rotary settings for `infinipot.rope_shift.rotate_keys`."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    @property
    def position_frame_stride(self) -> int:
        """Position distance between the anchors of two consecutive temporal frames when none is evicted
        (their frame text included): re-anchoring closes wider gaps to this."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    def position_frame_anchor(self, positions: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        """(..., n) anchor of each token's frame, from its ids (..., rows, n) and patch index (..., n; -1 for
        frame text): increasing with the frame's place in the stream. A frame's anchor is the smallest over
        its held tokens, so frame text may give other values than the frame's visual tokens."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    def position_shift(
        self, positions: torch.Tensor, patch_index: torch.Tensor, frame_shift: torch.Tensor, base_shift: int = 0
    ) -> torch.Tensor:
        """(..., rows, n) position deltas of tokens whose frame anchor moves by `frame_shift` (..., n)
        (0 = the token stays); `positions` (..., rows, n) are their current ids. `base_shift`: how far the
        stream's video base moves (layouts where all frames share one base, e.g. Qwen2-VL's video layout)."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    def decode(self, token_ids: Sequence[int]) -> str:
        """Answer text for generated ids (special tokens dropped)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    def fingerprint(self) -> dict[str, object]:
        """What a saved session must match to be resumed on this adapter: architecture, KV geometry and
        the model's identity.

        Keys cached after RoPE are only meaningful for the same model type, frame grid and geometry, and
        values only for the same weights: another checkpoint of the same shape (a fine-tune) must not load.
        """
        geometry = self.geometry
        return {
            **self.model_identity(),
            "model_type": self.model_type,
            "num_layers": geometry.num_layers,
            "num_kv_heads": geometry.num_kv_heads,
            "head_dim": geometry.head_dim,
            "dtype": str(geometry.dtype).replace("torch.", ""),
            "frame_grid": list(self.frame_grid),
            "frames_per_step": self.frames_per_step,
        }


_CONFIG_IGNORED = ("transformers_version", "dtype", "torch_dtype")  # dtype is part of the KV geometry


def _config_sha256(model: torch.nn.Module) -> str:
    """sha256 of the model config without bookkeeping keys (paths, versions, dtype)."""
    import hashlib
    import json

    config = getattr(model, "config", None)
    if config is None:
        return ""

    def clean(value: object) -> object:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not str(k).startswith("_") and k not in _CONFIG_IGNORED}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(config.to_dict()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_WEIGHT_SAMPLES = 4096


def _weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over every tensor's name, shape, dtype and a strided sample of its values."""
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            flat = tensor.detach().reshape(-1)
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // _WEIGHT_SAMPLES)
            sample = flat[::step][:_WEIGHT_SAMPLES].to(device="cpu", dtype=torch.float64)
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()
