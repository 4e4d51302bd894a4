"""StreamingSession behaviour, the same parametrised suite for every tiny adapter (see conftest.ADAPTER_NAMES)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infinipot.errors import BudgetError, FrameError, PolicyError, QuestionError, SessionStateError
from infinipot.policies import POLICY_NAMES
from infinipot.session import SessionConfig, StreamingSession

QUESTION = "what colour was the first cube?"


def _budget(adapter, frames: int = 6) -> int:
    """A threshold that holds the prefix plus `frames` temporal frames (with their frame text, if the adapter
    writes any): small enough to compress often."""
    return len(adapter.prefix_token_ids()) + frames * (adapter.tokens_per_frame + adapter.max_frame_text_tokens)


def _step_tokens(adapter, frame_index: int, seconds: float) -> int:
    """Tokens one temporal frame adds: its visual tokens plus its frame text (timestamps, wrappers)."""
    before, after = adapter.frame_text_ids(frame_index, seconds)
    return adapter.tokens_per_frame + len(before) + len(after)


def _stream(session: StreamingSession, frames, start: float = 0.0, step: float = 0.5) -> None:
    for i, frame in enumerate(frames):
        session.add_frame(frame, stamp=start + step * i)


def _snapshot(session: StreamingSession) -> dict[str, object]:
    store = session.store
    length = store.length
    stats = {k: v for k, v in session.stats().as_dict().items() if not k.endswith("_s")}  # not timings
    snap: dict[str, object] = {"length": length, "stats": stats}
    for layer in range(store.num_layers):
        keys, values = store.view(layer)
        snap[f"k{layer}"] = keys.clone()
        snap[f"v{layer}"] = values.clone()
    for name in ("token_index", "frame_id", "patch_index"):
        snap[name] = getattr(store, name)[:, :, :length].clone()
    return snap


def _assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key  # bit-identical
        else:
            assert a[key] == b[key], key


def test_cap_holds_over_a_long_stream(adapter):
    """1,000 frames under a cap: used bytes never exceed the cap, the buffers are never reallocated."""
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=_budget(adapter)))
    cap = session.store.nbytes_capacity
    pointer = session.store.layers[0].keys.data_ptr()
    threshold = session.budget.threshold_tokens
    assert cap == session.budget.capacity_tokens * adapter.geometry.slot_bytes
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for i in range(1000):
        session.add_frame(frame if i % 3 else 255 - frame, stamp=0.1 * i)
        assert session.store.nbytes_used <= cap
        assert session.store.length <= threshold
    stats = session.stats()
    assert stats.frames_added == stats.frames_ingested + stats.frames_pending == 1000
    assert stats.compressions > 10 and stats.kv_cap_bytes == cap == session.store.nbytes_capacity
    assert session.store.layers[0].keys.data_ptr() == pointer
    assert stats.tokens_evicted > 0


def test_uncapped_cache_grows_linearly(adapter, make_frames):
    session = StreamingSession(adapter, SessionConfig(policy="full", budget_tokens=10))  # full ignores budgets
    prefix = len(adapter.prefix_token_ids())
    sizes = []
    for i, frame in enumerate(make_frames(adapter.frames_per_step * 12, size=(16, 16))):
        session.add_frame(frame, stamp=float(i))
        if (i + 1) % adapter.frames_per_step == 0:
            sizes.append(session.stats().kv_bytes)
    steps = [_step_tokens(adapter, j, float(j * adapter.frames_per_step)) for j in range(12)]
    assert sizes == [(prefix + sum(steps[: j + 1])) * adapter.geometry.slot_bytes for j in range(12)]
    assert all(b - a == n * adapter.geometry.slot_bytes for a, b, n in zip(sizes, sizes[1:], steps[1:]))
    stats = session.stats()
    assert stats.token_budget == 0 and stats.kv_cap_bytes == 0 and stats.compressions == 0
    assert stats.memory_start == 0.0 and stats.memory_end == float(adapter.frames_per_step * 12 - 1)


@pytest.mark.parametrize("policy", [p for p in POLICY_NAMES if p != "full"])
def test_every_policy_streams_under_the_cap(adapter, make_frames, policy):
    session = StreamingSession(adapter, SessionConfig(policy=policy, budget_tokens=_budget(adapter, 4)))
    for i, frame in enumerate(make_frames(adapter.frames_per_step * 12, seed=3, size=(16, 16))):
        session.add_frame(frame, stamp=float(i))
        assert session.store.length <= session.budget.threshold_tokens
    assert session.stats().compressions >= 2
    assert session.ask(QUESTION, max_new_tokens=2).new_tokens >= 1


def test_ask_leaves_cache_bit_identical_and_is_repeatable(adapter, make_frames):
    session = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter), max_new_tokens=6))
    _stream(session, make_frames(adapter.frames_per_step * 10, seed=1))
    before = _snapshot(session)
    first = session.ask(QUESTION)
    _assert_same(before, _snapshot(session))
    second = session.ask(QUESTION)
    _assert_same(before, _snapshot(session))
    assert first.text == second.text and first.new_tokens == second.new_tokens
    assert 1 <= first.new_tokens <= 6 and first.ttft_s <= first.latency_s
    assert first.tokens_used == session.store.length + len(adapter.question_token_ids(QUESTION))
    assert first.memory_end == session.stats().memory_end


def test_streaming_continues_after_a_question(adapter, make_frames):
    """Multi-turn: asking in the middle must not change what the stream leads to."""
    frames = make_frames(adapter.frames_per_step * 8, seed=5)
    config = SessionConfig(budget_tokens=_budget(adapter, 4), max_new_tokens=3)
    asked, quiet = StreamingSession(adapter, config), StreamingSession(adapter, config)
    half = len(frames) // 2 + 1  # odd split: a pending frame is held over the question when steps are 2
    _stream(asked, frames[:half])
    pending = asked.stats().frames_pending
    asked.ask(QUESTION)
    assert asked.stats().frames_pending == pending
    _stream(asked, frames[half:], start=0.5 * half)
    _stream(quiet, frames)
    _assert_same(_snapshot(asked), _snapshot(quiet))
    assert asked.ask(QUESTION).text == quiet.ask(QUESTION).text


def test_memory_span_follows_evictions(adapter, make_frames):
    step = adapter.frames_per_step
    session = StreamingSession(adapter, SessionConfig(policy="sliding_window", budget_tokens=_budget(adapter, 4)))
    _stream(session, make_frames(step * 10, seed=2), start=100.0, step=1.0)
    stats = session.stats()
    held = sorted(set(session.store.frame_id[:, :, : session.store.length].flatten().tolist()) - {-1})
    assert stats.memory_start == 100.0 + held[0] * step  # first raw frame of the oldest held temporal frame
    assert stats.memory_end == 100.0 + step * 10 - 1
    assert stats.memory_start > 100.0  # the window slid


def test_bad_inputs_raise_typed_errors_and_leave_session_unchanged(adapter, make_frames):
    config = SessionConfig(budget_tokens=_budget(adapter), max_new_tokens=4, max_question_chars=60, max_question_tokens=8)
    session, twin = StreamingSession(adapter, config), StreamingSession(adapter, config)
    with pytest.raises(SessionStateError):
        session.ask(QUESTION)
    frames = make_frames(adapter.frames_per_step * 6, seed=4)
    _stream(session, frames, step=1.0)
    _stream(twin, frames, step=1.0)
    before = _snapshot(session)
    bad_frames = [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
        "not a frame",
    ]
    for bad in bad_frames:
        with pytest.raises(FrameError):
            session.add_frame(bad, stamp=100.0)
    good = frames[0]
    for stamp in (0.0, math.nan, math.inf, "soon"):  # earlier than the last frame, or not a finite number
        with pytest.raises(FrameError):
            session.add_frame(good, stamp=stamp)
    for question in ("", "   ", None, "x" * 61, " ".join(["red"] * 9)):
        with pytest.raises(QuestionError):
            session.ask(question)
    for max_new in (0, 5, -1):
        with pytest.raises(QuestionError):
            session.ask(QUESTION, max_new_tokens=max_new)
    _assert_same(before, _snapshot(session))
    assert session.ask(QUESTION).text == twin.ask(QUESTION).text
    session.add_frame(good, stamp=1000.0)  # still streams
    assert session.stats().frames_added == len(frames) + 1


def test_construction_errors(adapter):
    with pytest.raises(PolicyError):
        StreamingSession(adapter, SessionConfig(policy="nope"))
    with pytest.raises(BudgetError):
        StreamingSession(adapter, SessionConfig(budget_tokens=len(adapter.prefix_token_ids()) + 1))
    with pytest.raises(BudgetError):
        StreamingSession(adapter, SessionConfig(budget_tokens=100, budget_mb=1.0))
    with pytest.raises(BudgetError):
        StreamingSession(adapter, SessionConfig(max_new_tokens=0))


def test_budget_in_megabytes_caps_the_whole_store(adapter, make_frames):
    bytes_per_token = adapter.geometry.slot_bytes
    budget_mb = (_budget(adapter) + 200) * bytes_per_token / 2**20
    session = StreamingSession(adapter, SessionConfig(budget_mb=budget_mb))
    assert session.store.nbytes_capacity <= budget_mb * 2**20
    _stream(session, make_frames(adapter.frames_per_step * 30, size=(16, 16)))
    assert session.stats().kv_bytes <= session.stats().kv_cap_bytes <= budget_mb * 2**20


def test_reset_starts_over(adapter, make_frames):
    session = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter)))
    fresh = _snapshot(session)
    _stream(session, make_frames(adapter.frames_per_step * 9 + 1))
    session.reset()
    _assert_same(fresh, _snapshot(session))
    with pytest.raises(SessionStateError):
        session.ask(QUESTION)


def test_save_load_round_trip(adapter, make_frames, tmp_path):
    config = SessionConfig(budget_tokens=_budget(adapter), max_new_tokens=5)
    session = StreamingSession(adapter, config)
    frames = make_frames(adapter.frames_per_step * 9 + 1, seed=9)
    _stream(session, frames)
    path = session.save(tmp_path / "session.pt")
    loaded = StreamingSession.load(path, adapter)
    _assert_same(_snapshot(session), _snapshot(loaded))
    assert loaded.config == config
    assert loaded.ask(QUESTION).text == session.ask(QUESTION).text
    more = make_frames(adapter.frames_per_step * 3, seed=10)
    _stream(session, more, start=100.0)
    _stream(loaded, more, start=100.0)
    _assert_same(_snapshot(session), _snapshot(loaded))  # pending frames survived the round trip


def test_load_refuses_other_geometry(adapter, make_frames, tmp_path):
    from infinipot.adapters.loading import load_adapter

    session = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter)))
    _stream(session, make_frames(adapter.frames_per_step * 2))
    path = session.save(tmp_path / "s.pt")
    other_name = "builtin:tiny-qwen2.5-vl" if adapter.model_type != "qwen2_5_vl" else "builtin:tiny-qwen2-vl"
    other = load_adapter(other_name)
    with pytest.raises(SessionStateError, match="geometry"):
        StreamingSession.load(path, other)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SessionStateError):
        StreamingSession.load(tmp_path / "junk.pt", adapter)


def test_frame_text_stays_exactly_with_its_frame(adapter, make_frames):
    """Per-frame text (SmolVLM2's wrappers, Qwen3-VL's timestamps) is recorded with its frame; after many
    compressions every layer and head holds a frame's whole text iff it holds one of its visual tokens."""
    step = adapter.frames_per_step
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=_budget(adapter, 6)))
    stamps = [5.0 + 0.7 * i for i in range(step * 20)]
    _stream(session, make_frames(len(stamps), seed=8, size=(16, 16)), start=stamps[0], step=0.7)
    assert session.stats().compressions >= 3
    store = session.store
    text_tokens_seen = 0
    for layer in range(store.num_layers):
        _, frame_id, patch = store.metadata(layer)
        for head in range(store.num_kv_heads):
            fid, pid = frame_id[head].tolist(), patch[head].tolist()
            visual = {f for f, p in zip(fid, pid) if f >= 0 and p >= 0}
            text = [f for f, p in zip(fid, pid) if f >= 0 and p < 0]
            assert set(text) == (visual if adapter.max_frame_text_tokens else set())
            for f in visual if adapter.max_frame_text_tokens else ():
                seconds = (stamps[f * step] + stamps[(f + 1) * step - 1]) / 2 - stamps[0]
                before, after = adapter.frame_text_ids(f, seconds)
                assert text.count(f) == len(before) + len(after)
            text_tokens_seen += len(text)
    assert (text_tokens_seen > 0) == (adapter.max_frame_text_tokens > 0)
    assert session.ask(QUESTION, max_new_tokens=2).new_tokens >= 1
