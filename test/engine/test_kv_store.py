"""FixedKVStore: fixed allocation, per-head compaction, rollback, persistence, and use inside a real model."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from infinipot.errors import CacheCapacityError
from infinipot.kv_store import FixedKVStore

LAYERS, HEADS, DIM = 2, 2, 4


def _write(store: FixedKVStore, n: int, start_id: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(start_id, start_id + n)
    store.stage_tokens(ids, ids // 4, ids % 4)
    written = []
    for layer in range(store.num_layers):
        k = torch.randn(1, store.num_kv_heads, n, store.head_dim, generator=g)
        v = torch.randn(1, store.num_kv_heads, n, store.head_dim, generator=g)
        store.update(k, v, layer)
        written.append((k, v))
    return written[0]


def _pointers(store: FixedKVStore) -> list[int]:
    ptrs = [t.data_ptr() for layer in store.layers for t in (layer.keys, layer.values)]
    meta = (store.token_index, store.frame_id, store.patch_index, store.positions)
    return ptrs + [t.data_ptr() for t in meta]


def test_capped_store_never_reallocates() -> None:
    store = FixedKVStore(LAYERS, HEADS, DIM, capacity=40)
    pointers, cap_bytes = _pointers(store), store.nbytes_capacity
    # keys + values (fp32) + metadata: int64 token id, int32 frame id, int32 patch, one int32 position row
    assert cap_bytes == 40 * store.bytes_per_token == 40 * LAYERS * HEADS * (2 * DIM * 4 + 8 + 4 + 4 + 4)
    next_id = 0
    for step in range(30):
        n = 7 if store.length + 7 <= 40 else 40 - store.length
        _write(store, n, next_id, seed=step)
        next_id += n
        assert store.nbytes_used == store.length * store.bytes_per_token <= cap_bytes
        if store.length >= 35:
            keep = torch.stack([torch.randperm(store.length)[:20] for _ in range(HEADS)])
            for layer in range(LAYERS):
                store.compact(layer, keep)
        if step % 5 == 4:
            store.truncate(store.length - 1)
        assert _pointers(store) == pointers
        assert store.nbytes_capacity == cap_bytes


def test_write_past_capacity_raises_and_leaves_store_unchanged() -> None:
    store = FixedKVStore(LAYERS, HEADS, DIM, capacity=10)
    _write(store, 8, 0)
    before = store.view(0)[0].clone()
    zeros = torch.zeros(3, dtype=torch.long)
    store.stage_tokens(torch.arange(8, 11), zeros, zeros)
    with pytest.raises(CacheCapacityError):
        store.update(torch.zeros(1, HEADS, 3, DIM), torch.zeros(1, HEADS, 3, DIM), 0)
    assert store.length == 8
    assert torch.equal(store.view(0)[0], before)


def test_truncate_keeps_earlier_slots_bit_identical() -> None:
    store = FixedKVStore(LAYERS, HEADS, DIM, capacity=32)
    _write(store, 12, 0, seed=1)
    snapshot = [tuple(t.clone() for t in store.view(i)) for i in range(LAYERS)]
    meta = [tuple(t.clone() for t in store.metadata(i)) for i in range(LAYERS)]
    _write(store, 9, 12, seed=2)  # question + answer tokens
    store.truncate(12)
    assert store.length == 12
    for i in range(LAYERS):
        assert all(torch.equal(a, b) for a, b in zip(store.view(i), snapshot[i]))
        assert all(torch.equal(a, b) for a, b in zip(store.metadata(i), meta[i]))
    with pytest.raises(ValueError):
        store.truncate(13)


def test_compact_moves_each_heads_kept_slots_to_the_front() -> None:
    store = FixedKVStore(1, 3, DIM, capacity=16)
    n = 10
    slot = torch.arange(n, dtype=torch.float32)
    keys = slot.view(1, 1, n, 1).expand(1, 3, n, DIM) + torch.arange(3).view(1, 3, 1, 1) * 100
    store.stage_tokens(torch.arange(n) + 50, torch.arange(n) // 5, torch.arange(n) % 5)
    store.update(keys.contiguous(), -keys.contiguous(), 0)
    keep = torch.tensor([[0, 2, 4, 9], [7, 1, 3, 5], [6, 7, 8, 9]])  # head 1 unsorted on purpose
    store.compact(0, keep)
    assert store.length == 4
    k, v = store.view(0)
    expected = keep.sort(dim=1).values
    for h in range(3):
        assert torch.equal(k[0, h, :, 0], expected[h].float() + 100 * h)
        assert torch.equal(v[0, h, :, 0], -(expected[h].float() + 100 * h))
    token_index, frame_id, patch_index = store.metadata(0)
    assert torch.equal(token_index, expected + 50)
    assert torch.equal(frame_id, expected // 5)
    assert torch.equal(patch_index, expected % 5)
    with pytest.raises(ValueError):
        store.compact(0, torch.tensor([[0, 0], [1, 2], [1, 2]]))  # repeated slot


def test_state_dict_round_trip() -> None:
    store = FixedKVStore(LAYERS, HEADS, DIM, capacity=24)
    _write(store, 15, 0, seed=3)
    store.set_prefix_length(2)
    store.compact(0, torch.tensor([[0, 1, 3, 5, 8], [0, 1, 2, 9, 14]]))
    store.compact(1, torch.tensor([[0, 1, 4, 6, 7], [0, 1, 10, 11, 12]]))
    state = store.state_dict()
    restored = FixedKVStore(LAYERS, HEADS, DIM, capacity=24)
    restored.load_state_dict(state)
    assert restored.length == 5 and restored.prefix_length == 2
    for i in range(LAYERS):
        assert all(torch.equal(a, b) for a, b in zip(restored.view(i), store.view(i)))
        assert all(torch.equal(a, b) for a, b in zip(restored.metadata(i), store.metadata(i)))
    # The restored store continues the token ids instead of reusing them.
    k = torch.zeros(1, HEADS, 1, DIM)
    for s in (store, restored):
        for layer in range(LAYERS):
            s.update(k, k, layer)
    assert torch.equal(restored.metadata(0)[0], store.metadata(0)[0])
    assert int(restored.metadata(0)[0][0, -1]) == 15


def test_uncapped_baseline_grows_and_keeps_contents() -> None:
    store = FixedKVStore(LAYERS, HEADS, DIM, capacity=None)
    first_k, _ = _write(store, 50, 0, seed=4)
    _write(store, 100, 50, seed=5)
    assert store.length == 150 and store.capacity is None
    assert store.nbytes_capacity >= store.nbytes_used == 150 * store.bytes_per_token
    assert torch.equal(store.view(0)[0][:, :, :50], first_k)
    assert torch.equal(store.metadata(1)[0][0], torch.arange(150))


# --------------------------------------------------------------------------------- inside a real model
def _tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    return Qwen2ForCausalLM(config).eval()


def _store_for(model: Qwen2ForCausalLM, capacity: int) -> FixedKVStore:
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    return FixedKVStore(c.num_hidden_layers, c.num_key_value_heads, head_dim, capacity)


@torch.no_grad()
def test_chunked_prefill_matches_dynamic_cache() -> None:
    model = _tiny_qwen2()
    ids = torch.randint(0, 128, (1, 30), generator=torch.Generator().manual_seed(1))
    store, dynamic = _store_for(model, 40), DynamicCache()
    ours = [model(ids[:, :17], cache=store, use_cache=True).logits,
            model(ids[:, 17:], cache=store, use_cache=True).logits]
    theirs = [model(ids[:, :17], cache=dynamic, use_cache=True).logits,
              model(ids[:, 17:], cache=dynamic, use_cache=True).logits]
    assert store.length == 30 and store.get_seq_length() == dynamic.get_seq_length()
    assert (torch.cat(ours, 1) - torch.cat(theirs, 1)).abs().max() <= 1e-5
    for layer in range(2):
        assert torch.allclose(store.view(layer)[0], dynamic.layers[layer].keys, atol=1e-6)


@torch.no_grad()
def test_eviction_then_continue_equals_masked_full_forward() -> None:
    model = _tiny_qwen2()
    total, prefilled = 34, 26
    ids = torch.randint(0, 128, (1, total), generator=torch.Generator().manual_seed(2))
    store = _store_for(model, 30)
    store.stage_tokens(torch.arange(prefilled), torch.full((prefilled,), -1), torch.full((prefilled,), -1))
    model(ids[:, :prefilled], cache=store, use_cache=True)
    evicted = torch.tensor([3, 4, 9, 15, 16, 17, 22])
    keep_mask = torch.ones(prefilled, dtype=torch.bool)
    keep_mask[evicted] = False
    keep = keep_mask.nonzero().squeeze(1).expand(store.num_kv_heads, -1)
    for layer in range(store.num_layers):
        store.compact(layer, keep)
    assert store.length == prefilled - evicted.numel()
    positions = torch.arange(prefilled, total).unsqueeze(0)  # logical positions continue
    ours = model(ids[:, prefilled:], position_ids=positions, cache=store, use_cache=True).logits

    # Oracle: one forward over all tokens; the continuation rows cannot see the evicted tokens.
    allowed = torch.ones(total, total).tril().bool()
    allowed[prefilled:, evicted] = False
    mask = torch.zeros(1, 1, total, total).masked_fill(~allowed, torch.finfo(torch.float32).min)
    full = model(ids, attention_mask=mask, position_ids=torch.arange(total).unsqueeze(0)).logits
    assert (ours - full[:, prefilled:]).abs().max() <= 1e-5
    # Without the eviction mask the results differ: the check is not vacuous.
    unmasked = model(ids).logits
    assert (ours - unmasked[:, prefilled:]).abs().max() > 1e-3


def _tensors_reachable(obj: object, seen: set[int]) -> list[torch.Tensor]:
    """Every tensor held in `obj`'s attributes, its layers' attributes, lists and tuples (each once)."""
    found: list[torch.Tensor] = []
    values = list(vars(obj).values())
    while values:
        value = values.pop()
        if isinstance(value, torch.Tensor):
            if value.untyped_storage().data_ptr() not in seen:
                seen.add(value.untyped_storage().data_ptr())
                found.append(value)
        elif isinstance(value, (list, tuple)):
            values.extend(value)
        elif hasattr(value, "_store") and value is not obj:  # a FixedKVLayer
            values.extend(v for k, v in vars(value).items() if k != "_store")
    return found


@pytest.mark.parametrize("dtype, rows", [(torch.float32, 1), (torch.bfloat16, 3)])
def test_capacity_bytes_cover_every_tensor_the_store_allocates(dtype: torch.dtype, rows: int) -> None:
    """kv_cap_bytes (nbytes_capacity) is the whole allocation, metadata included (issue 14, item 4)."""
    store = FixedKVStore(3, 2, 128, capacity=50, dtype=dtype, position_rows=rows)
    allocated = sum(t.untyped_storage().nbytes() for t in _tensors_reachable(store, set()))
    assert store.nbytes_capacity == allocated == 50 * store.bytes_per_token
    # The metadata is a stated share: head_dim 128 in bf16 with 3 position rows -> 28 B of 540 B per head.
    if dtype == torch.bfloat16:
        assert store.bytes_per_token == 3 * 2 * (2 * 128 * 2 + 8 + 4 + 4 + 3 * 4)
