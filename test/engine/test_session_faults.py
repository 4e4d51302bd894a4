"""A model failure in the middle of a stream, and asking a question, must leave the session consistent."""
from __future__ import annotations

import pytest
import torch

from infinipot.session import SessionConfig, StreamingSession


class _FailingForward:
    """Wraps an adapter's real forward and raises a real exception on the chosen call numbers."""

    def __init__(self, forward, fail_on: set[int]):
        self._forward, self._fail_on, self.calls = forward, fail_on, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls in self._fail_on:
            raise RuntimeError("injected model failure")
        return self._forward(*args, **kwargs)


def _budget(adapter) -> int:
    """64 tokens, or more where frames carry text (so one block still fits the gap |M| - |C|)."""
    return max(64, len(adapter.prefix_token_ids()) + 4 * (adapter.tokens_per_frame + adapter.max_frame_text_tokens))


def _state(session: StreamingSession) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in session.store.state_dict().items()}


def test_ask_leaves_the_whole_store_state_identical(adapter, make_frames) -> None:
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=_budget(adapter)))
    for i, frame in enumerate(make_frames(12, seed=3)):
        session.add_frame(frame, stamp=float(i))
    before = _state(session)
    session.ask("what colour was the cube", max_new_tokens=5)
    after = _state(session)
    assert before.keys() == after.keys()
    for key in before:
        if isinstance(before[key], torch.Tensor):
            assert torch.equal(before[key], after[key]), key
        else:
            assert before[key] == after[key], key


def test_a_failed_model_call_during_ingest_loses_only_that_block(adapter, make_frames) -> None:
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=_budget(adapter)))
    frames = make_frames(8, seed=4)
    step = adapter.frames_per_step
    for i, frame in enumerate(frames[: 2 * step]):
        session.add_frame(frame, stamp=float(i))
    held = session.store.length
    wrapped = _FailingForward(adapter.forward, fail_on={1})
    adapter.forward = wrapped
    try:
        with pytest.raises(RuntimeError, match="injected"):
            for i, frame in enumerate(frames[2 * step: 3 * step]):
                session.add_frame(frame, stamp=float(2 * step + i))
        assert session.store.length == held, "the failed block must be rolled back"
        assert session.stats().frames_pending == 0, "the failed block must not stay pending"
        for i, frame in enumerate(frames[3 * step: 4 * step]):
            session.add_frame(frame, stamp=float(3 * step + i))
        before, after = adapter.frame_text_ids(3, float(3 * step))  # the frame text belongs to the block too
        assert session.store.length == held + adapter.tokens_per_frame + len(before) + len(after)
        assert session.ask("did you see a green ball", max_new_tokens=3).new_tokens >= 1
    finally:
        del adapter.forward  # back to the class's real method
