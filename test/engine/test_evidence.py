"""Answer evidence (infinipot/evidence.py) and the held-frame view (infinipot/memory_map.py), every tiny adapter.

The reference for the weights is independent of the probe: transformers' own eager attention with
`output_attentions=True`, run over a copy of the compressed store, and a plain per-head loop that maps
each attention column to its frame through the store's metadata.
"""
from __future__ import annotations

import math

import pytest
import torch

from infinipot.adapters.loading import load_adapter
from infinipot.errors import QuestionError
from infinipot.evidence import probe_installed
from infinipot.kv_store import FixedKVStore
from infinipot.session import SessionConfig, StreamingSession

QUESTION = "what colour was the cube?"


def _budget(adapter, frames: int = 5) -> int:
    """|M| for `frames` temporal frames, each with its visual tokens and its per-frame text (timestamps)."""
    return len(adapter.prefix_token_ids()) + frames * (adapter.tokens_per_frame + adapter.max_frame_text_tokens)


def _stream(session: StreamingSession, frames, step: float = 0.5) -> None:
    for i, frame in enumerate(frames):
        session.add_frame(frame, stamp=10.0 + step * i)


def _reference_weights(session: StreamingSession, question: str) -> dict[int, float]:
    """Per-frame share of the first answer token's attention, from transformers' eager attention."""
    adapter, store = session.adapter, session.store
    copy = FixedKVStore(store.num_layers, store.num_kv_heads, store.head_dim, None, dtype=store.dtype,
                        position_rows=store.position_rows)
    copy.load_state_dict(store.state_dict())
    ids = torch.tensor(adapter.question_token_ids(question))
    positions, _ = adapter.text_positions(session.stats().next_position, len(ids))
    if positions.dim() == 2 and positions.shape[0] == 3:
        positions = positions.unsqueeze(1)
    config = adapter.attention_config()
    saved = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = adapter.model.get_decoder()(
                inputs_embeds=adapter.text_embeds(ids).unsqueeze(0), position_ids=positions.reshape(-1, 1, len(ids))
                if positions.dim() == 3 else positions.reshape(1, -1), cache=copy, use_cache=True,
                output_attentions=True,
            )
    finally:
        config._attn_implementation = saved
    length = store.length
    mass: dict[int, float] = {}
    for layer, attn in enumerate(out.attentions):
        heads = attn.shape[1]
        group = heads // store.num_kv_heads
        frame_id = store.metadata(layer)[1]
        for h in range(heads):
            row = attn[0, h, -1]
            for col in range(length):
                f = int(frame_id[h // group, col])
                if f >= 0:
                    mass[f] = mass.get(f, 0.0) + float(row[col])
    total = sum(mass.values())
    return {f: m / total for f, m in mass.items()}


def test_evidence_equals_eager_attention_after_compression(adapter, make_frames):
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=_budget(adapter)))
    _stream(session, make_frames(adapter.frames_per_step * 12, seed=3))
    assert session.stats().compressions >= 1
    held = session.store.frame_id[:, :, : session.store.length]
    assert not all(torch.equal(held[0, 0], held[layer, head]) for layer in range(held.shape[0])
                   for head in range(held.shape[1])), "the test needs per-head different tokens"
    expected = _reference_weights(session, QUESTION)
    answer = session.ask(QUESTION, max_new_tokens=1, max_evidence=10_000)
    got = {e.frame_id: e.weight for e in answer.evidence}
    assert got.keys() == expected.keys()
    for f, w in expected.items():
        assert got[f] == pytest.approx(w, abs=1e-5)
    weights = [e.weight for e in answer.evidence]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1.0, abs=1e-6)
    stamps = session._counters.frame_stamps
    assert all((e.start, e.end) == stamps[e.frame_id] for e in answer.evidence)


def test_probe_changes_no_output(make_frames, tiny_cache):
    """Evidence on vs. off on two fresh copies of the same model: same answer, bit-identical cache."""
    frames = make_frames(8, seed=4)
    results = []
    for evidence in (False, True):
        model = load_adapter("builtin:tiny-qwen2-vl")
        session = StreamingSession(model, SessionConfig(policy="infinipot", budget_tokens=_budget(model, 3),
                                                        evidence=evidence, max_new_tokens=4))
        assert probe_installed(model.attention_config()) is evidence
        _stream(session, frames)
        answer = session.ask(QUESTION)
        assert bool(answer.evidence) is evidence
        keys = [session.store.view(layer)[0].clone() for layer in range(session.store.num_layers)]
        results.append((answer.text, answer.new_tokens, keys))
    (text_a, n_a, keys_a), (text_b, n_b, keys_b) = results
    assert (text_a, n_a) == (text_b, n_b)
    assert all(torch.equal(a, b) for a, b in zip(keys_a, keys_b))


def test_max_evidence_bounds_and_errors(adapter, make_frames):
    session = StreamingSession(adapter, SessionConfig(max_evidence=2, max_new_tokens=3))
    _stream(session, make_frames(adapter.frames_per_step * 4, seed=5))
    assert len(session.ask(QUESTION).evidence) == 2
    everything = session.ask(QUESTION, max_evidence=10**9).evidence
    assert len(everything) == len(session.held_frames()) == 4
    assert sum(e.weight for e in everything) == pytest.approx(1.0, abs=1e-6)
    assert session.ask(QUESTION, max_evidence=0).evidence == ()
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(QuestionError):
            session.ask(QUESTION, max_evidence=bad)


def test_held_frames_count_what_the_store_holds(adapter, make_frames):
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=_budget(adapter)))
    _stream(session, make_frames(adapter.frames_per_step * 12, seed=6))
    held = session.held_frames()
    store = session.store
    ids = set(store.frame_id[:, :, : store.length].flatten().tolist()) - {-1}
    assert [h.frame_id for h in held] == sorted(ids)
    assert math.isclose(sum(h.tokens for h in held), store.length - store.prefix_length, abs_tol=1e-9)
    assert all(0 < h.tokens <= adapter.tokens_per_frame + adapter.max_frame_text_tokens for h in held)
    stamps = session._counters.frame_stamps
    assert all((h.start, h.end) == stamps[h.frame_id] for h in held)
    assert held[-1].end == session.stats().memory_end
