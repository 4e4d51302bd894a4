"""Bounded positions (issue 14, item 2): re-anchoring by rotation is exact, and ids stay under the limit.

The reference is transformers' own rotary embedding of each model (its `rotary_emb` module and the
rotate_half formula every one of these attention layers applies), never `infinipot.rope_shift`:
* the primitive: rotating a key cached at p to p' equals embedding the pre-RoPE key at p';
* end to end, for every tiny adapter: a session streams, compresses and re-anchors; every cached key must
  equal the model's RoPE of that token's pre-RoPE key (captured from k_proj while streaming) at the token's
  NEW position ids, and a question's logits over the session's store equal (<= 1e-4 relative) those over a
  store built that way, i.e. the same tokens prefilled at the new positions;
* a stream that crosses the limit several times keeps every position id below it while the cap holds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infinipot.errors import BudgetError
from infinipot.kv_store import FixedKVStore
from infinipot.reanchor import plan_anchors
from infinipot.rope_shift import rotate_keys
from infinipot.session import POSITION_LIMIT_SHARE, SessionConfig, StreamingSession

SMALL = dict(max_question_tokens=8, max_new_tokens=4)


def _rotary_module(adapter) -> torch.nn.Module:
    model = adapter.model.model
    text = getattr(model, "language_model", None) or model.text_model
    return text.rotary_emb


def _layers(adapter) -> list[torch.nn.Module]:
    model = adapter.model.model
    text = getattr(model, "language_model", None) or model.text_model
    return list(text.layers)


def _rope(adapter, pre_keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """transformers' RoPE of pre-RoPE keys (H, n, D) at positions (rows, n): k·cos + rotate_half(k)·sin."""
    rows = positions.shape[0]
    ids = positions.long().unsqueeze(1) if rows > 1 else positions.long().reshape(1, -1)  # (3, 1, n) / (1, n)
    cos, sin = _rotary_module(adapter)(pre_keys, ids)
    cos, sin = cos[0], sin[0]  # (n, D)
    half = pre_keys.shape[-1] // 2
    rotated_half = torch.cat([-pre_keys[..., half:], pre_keys[..., :half]], dim=-1)
    return pre_keys * cos + rotated_half * sin


def _random_positions(rows: int, n: int, generator: torch.Generator, high: int = 5000) -> torch.Tensor:
    return torch.randint(0, high, (rows, n), generator=generator)


def test_rotation_equals_rope_at_the_new_position(adapter) -> None:
    rotary = adapter.rotary_config()
    g = torch.Generator().manual_seed(3)
    heads, n, dim = adapter.geometry.num_kv_heads, 50, adapter.geometry.head_dim
    pre = torch.randn(heads, n, dim, generator=g)
    old = _random_positions(rotary.rows, n, g)
    new = _random_positions(rotary.rows, n, g)
    new[:, :5] = old[:, :5]  # unchanged tokens come back bit-identical
    cached = _rope(adapter, pre, old)
    moved = rotate_keys(cached, old, new, rotary)
    expected = _rope(adapter, pre, new)
    assert torch.equal(moved[:, :5], cached[:, :5])
    assert torch.allclose(moved, expected, atol=2e-5, rtol=0), float((moved - expected).abs().max())
    # Different rows per frequency section really matter (M-RoPE): rotating with one row would be wrong.
    if rotary.rows > 1:
        wrong = rotate_keys(cached, old, new[:1].expand_as(new), rotary)
        assert not torch.allclose(wrong, expected, atol=1e-3)


def test_plan_anchors_compacts_gaps_and_squeezes() -> None:
    anchors = torch.tensor([40, 42, 50, 51, 90])
    assert plan_anchors(anchors, 10, 2, 1000).tolist() == [10, 12, 14, 15, 17]
    squeezed = plan_anchors(anchors, 10, 2, 4).tolist()
    assert squeezed[0] == 10 and squeezed[-1] <= 14 and squeezed == sorted(squeezed)


class _PreRopeKeys:
    """Captures every layer's pre-RoPE keys per token id while a session streams: the k_proj output, or for
    models that normalise keys before RoPE (Qwen3-VL's `k_norm`) that norm's output."""

    def __init__(self, session: StreamingSession) -> None:
        self.session = session
        self.keys: list[dict[int, torch.Tensor]] = [dict() for _ in _layers(session.adapter)]
        geometry = session.adapter.geometry
        self.modules = []
        for i, layer in enumerate(_layers(session.adapter)):
            module = getattr(layer.self_attn, "k_norm", None) or layer.self_attn.k_proj
            module.register_forward_hook(self._hook(i, geometry.num_kv_heads, geometry.head_dim))
            self.modules.append(module)

    def _hook(self, layer: int, heads: int, dim: int):
        def record(_module, _inputs, output):
            staged = self.session.store._staged
            if staged is None:
                return
            pre = output[0].detach().reshape(-1, heads, dim).transpose(0, 1)  # (H, n, D)
            for j, token in enumerate(staged[0].tolist()):
                self.keys[layer][token] = pre[:, j].clone()

        return record

    def remove(self) -> None:
        for module in self.modules:
            module._forward_hooks.clear()


def _reference_store(session: StreamingSession, capture: _PreRopeKeys) -> FixedKVStore:
    """A store with the session's tokens, values and metadata, whose keys are the model's RoPE of each token's
    pre-RoPE key at the token's current (re-anchored) position ids."""
    store = session.store
    reference = FixedKVStore(
        store.num_layers, store.num_kv_heads, store.head_dim, store.capacity, store.dtype, store.device,
        position_rows=store.position_rows,
    )
    reference.load_state_dict(store.state_dict())
    for layer in range(store.num_layers):
        token_index = store.metadata(layer)[0]
        positions = store.position_ids(layer)
        keys = torch.empty_like(store.view(layer)[0])
        for h in range(store.num_kv_heads):
            pre = torch.stack([capture.keys[layer][t][h] for t in token_index[h].tolist()])  # (n, D)
            keys[0, h] = _rope(session.adapter, pre.unsqueeze(0), positions[h])[0]
        reference.reanchor(layer, keys, positions)
    return reference


def _question_logits(session: StreamingSession, store: FixedKVStore) -> torch.Tensor:
    adapter = session.adapter
    ids = torch.tensor(adapter.question_token_ids("what colour"), dtype=torch.long)
    positions, _ = adapter.text_positions(session.stats().next_position, len(ids))
    length = store.length
    with torch.no_grad():
        logits = adapter.forward(adapter.text_embeds(ids).unsqueeze(0), positions, store, logits_to_keep=len(ids))
    store.truncate(length)
    return logits


@pytest.mark.parametrize("policy", ["infinipot", "uniform"])
def test_rotated_session_equals_prefill_at_the_new_positions(adapter, make_frames, policy: str) -> None:
    per_frame = adapter.tokens_per_frame + adapter.max_frame_text_tokens  # a frame with its text
    prefix = len(adapter.prefix_token_ids())
    config = SessionConfig(policy=policy, budget_tokens=prefix + 8 * per_frame, position_limit=None, **SMALL)
    probe = StreamingSession(adapter, config)
    limit = probe._stream_start + 2 * 9 * adapter.position_frame_stride + probe.reserve_tokens + 4
    session = StreamingSession(adapter, SessionConfig(**{**config.as_dict(), "position_limit": limit}))
    capture = _PreRopeKeys(session)
    session.reset()  # prefill the prefix again, now with the capture hooks in place
    try:
        frames = make_frames(16, seed=5)
        i = 0
        while session.stats().reanchors < 3 and i < 2000:
            session.add_frame(frames[i % len(frames)], stamp=0.5 * i)
            i += 1
    finally:
        capture.remove()
    stats = session.stats()
    assert stats.reanchors >= 2 and stats.compressions >= 2, stats
    assert stats.next_position < limit
    reference = _reference_store(session, capture)
    for layer in range(session.store.num_layers):
        ours, theirs = session.store.view(layer)[0], reference.view(layer)[0]
        assert torch.allclose(ours, theirs, atol=5e-5, rtol=0), float((ours - theirs).abs().max())
    ours = _question_logits(session, session.store)
    theirs = _question_logits(session, reference)
    relative = float((ours - theirs).norm() / theirs.norm())
    print(f"{adapter.model_type} {policy}: logits relative difference {relative:.2e}, {stats.reanchors} re-anchors")
    assert relative <= 1e-4, relative
    # The reference is not trivially the session's store: at the OLD positions the logits differ.
    stale = _reference_store(session, capture)
    for layer in range(stale.num_layers):
        shifted = stale.position_ids(layer).clone()
        shifted[..., stale.prefix_length:] += 7
        keys = stale.view(layer)[0].clone()
        for h in range(stale.num_kv_heads):
            pre = torch.stack([capture.keys[layer][t][h] for t in stale.metadata(layer)[0][h].tolist()])
            keys[0, h] = _rope(adapter, pre.unsqueeze(0), shifted[h])[0]
        stale.reanchor(layer, keys, shifted)
    stale_logits = _question_logits(session, stale)
    assert float((stale_logits - theirs).norm() / theirs.norm()) > 1e-3


def test_positions_stay_bounded_while_the_stream_crosses_the_limit_many_times(adapter, make_frames) -> None:
    per_frame = adapter.tokens_per_frame + adapter.max_frame_text_tokens  # a frame with its text
    prefix = len(adapter.prefix_token_ids())
    budget = prefix + 8 * per_frame
    probe = StreamingSession(adapter, SessionConfig(budget_tokens=budget, **SMALL))
    limit = probe._stream_start + 3 * 9 * adapter.position_frame_stride + probe.reserve_tokens
    session = StreamingSession(adapter, SessionConfig(budget_tokens=budget, position_limit=limit, **SMALL))
    frames = make_frames(16, seed=9)
    raw = 0
    stride = adapter.position_frame_stride

    def unbounded() -> int:  # where the counter would be without re-anchoring
        return session._stream_start + (raw // adapter.frames_per_step) * stride

    while session.stats().reanchors < 5 or unbounded() < 4 * limit:
        session.add_frame(frames[raw % len(frames)], stamp=0.5 * raw)
        raw += 1
        stats = session.stats()
        assert stats.next_position < limit and stats.tokens_held <= budget
        for layer in range(session.store.num_layers):
            held = session.store.position_ids(layer)
            assert int(held.max()) < limit and int(held.min()) >= 0
        assert raw < 20000, "the stream never reached the limit"
    print(f"{raw} raw frames, {session.stats().reanchors} re-anchors, counter would be at {unbounded()}, "
          f"limit {limit}")
    answer = session.ask("what colour", max_new_tokens=2)
    assert answer.tokens_used <= budget + 8 + 20


def test_position_limit_default_and_validation(adapter) -> None:
    prefix = len(adapter.prefix_token_ids())
    budget = prefix + 8 * (adapter.tokens_per_frame + adapter.max_frame_text_tokens)
    session = StreamingSession(adapter, SessionConfig(budget_tokens=budget, **SMALL))
    assert session.position_limit == int(POSITION_LIMIT_SHARE * adapter.max_position_embeddings)
    assert session.stats().position_limit == session.position_limit
    with pytest.raises(BudgetError, match="position_limit"):
        StreamingSession(adapter, SessionConfig(budget_tokens=budget, position_limit=prefix + 3, **SMALL))


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_reanchored_video_layout_stays_one_video(name: str, make_frames, tiny_cache) -> None:
    """Qwen2-VL's video layout after re-anchoring: every held token's h/w ids share ONE base (the first
    position after the prompt), t keeps the frames' order, and later frames continue that video."""
    from infinipot import load_adapter

    adapter = load_adapter(f"builtin:{name}")
    assert adapter.position_layout == "video"
    rows, cols = adapter.frame_grid
    prefix = len(adapter.prefix_token_ids())
    config = SessionConfig(policy="infinipot", budget_tokens=prefix + 8 * adapter.tokens_per_frame, **SMALL)
    probe = StreamingSession(adapter, config)
    limit = probe._stream_start + 2 * 9 * adapter.position_frame_stride + max(rows, cols) + probe.reserve_tokens + 4
    session = StreamingSession(adapter, SessionConfig(**{**config.as_dict(), "position_limit": limit}))
    frames = make_frames(16, seed=7)
    i = 0
    while session.stats().reanchors < 3 and i < 4000:
        session.add_frame(frames[i % len(frames)], stamp=0.5 * i)
        i += 1
    assert session.stats().reanchors >= 3
    for layer in range(session.store.num_layers):
        _, frame_id, patch = (m[:, session.store.prefix_length:].long() for m in session.store.metadata(layer))
        ids = session.store.position_ids(layer)[..., session.store.prefix_length:].long()  # (H, 3, n)
        h_base = ids[:, 1] - patch // cols
        w_base = ids[:, 2] - patch % cols
        newest = frame_id == frame_id.max()
        # frames ingested since the last re-anchoring sit on the same base as the re-anchored ones
        assert bool((h_base == session._counters.video_start).all()) and bool((w_base == h_base).all())
        for head in range(frame_id.shape[0]):
            order = torch.argsort(frame_id[head], stable=True)
            t = ids[head, 0][order]
            assert bool((torch.diff(t) >= 0).all())  # t never goes backwards along the stream
        assert bool((ids[:, 0][newest] >= ids[:, 0][~newest].max()).all())
    assert session._counters.video_start == session._stream_start
    assert session.stats().next_position < limit
