"""The worker thread with a real tiny-model session (no ROS): timeouts, errors, rejected frames."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from infinipot_ros.frame_queue import WorkQueues
from infinipot_ros.parameters import NodeSettings
from infinipot_ros.worker import AskRequest, FrameItem, InferenceWorker, ResetRequest


@pytest.fixture(scope="module")
def worker():  # noqa: ANN201
    settings = NodeSettings.from_values({"cameras": ["/a/image_raw"], "budget_tokens": 256})
    queues: WorkQueues = WorkQueues(frame_capacity=4)
    w = InferenceWorker(settings, queues, logging.getLogger("test_worker"))
    w.start()
    try:
        yield w, queues
    finally:
        assert w.stop(5.0)


def _wait_ready(w: InferenceWorker) -> None:
    import time

    deadline = time.monotonic() + 90
    while w.snapshot().state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.snapshot().state == "ready", w.snapshot()


def _wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    import time

    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert predicate()


def _ask(queues: WorkQueues, question: str, timeout: float = 30.0, camera: str = "a") -> object:
    req = AskRequest(camera, question, 4, timeout)
    assert queues.requests.push(req)
    return req.wait(60)


def test_frames_questions_timeouts_and_errors(worker) -> None:  # noqa: ANN001
    w, queues = worker
    _wait_ready(w)
    before_question = _ask(queues, "Too early?")
    assert not before_question.success and before_question.error_message
    rng = np.random.default_rng(0)
    for i in range(4):
        queues.frames.push("a", FrameItem("a", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), float(i)))
    _wait_for(lambda: w.snapshot().sessions["a"]["frames_ingested"] == 4)
    ok = _ask(queues, "What is there?")
    assert ok.success and ok.memory_start == 0.0 and ok.memory_end == 3.0, ok

    # A frame the engine refuses is counted and leaves the memory as it was.
    held = w.snapshot().sessions["a"]
    queues.frames.push("a", FrameItem("a", np.zeros((4, 4), np.uint8), 10.0))
    queues.frames.push("a", FrameItem("a", np.zeros((8, 8, 3), np.uint8), 1.0))  # stamp goes backwards
    _wait_for(lambda: w.snapshot().frames_rejected["a"] == 2)
    snap = w.snapshot()
    assert snap.frames_rejected["a"] == 2
    assert snap.sessions["a"]["frames_added"] == held["frames_added"]

    # A request that waited past its deadline is answered false without blocking the next one.
    stale = AskRequest("a", "stale", 4, timeout_s=0.0)
    queues.requests.push(stale)
    fresh = _ask(queues, "fresh")
    assert not stale.wait(5).success and "timed out" in stale.wait(5).error_message
    assert fresh.success and w.snapshot().requests_timed_out >= 1

    # An unexpected exception (unknown camera reaching the worker) is caught, counted, answered.
    errors = w.snapshot().errors
    broken = _ask(queues, "where?", camera="nope")
    assert not broken.success and "internal error" in broken.error_message
    assert w.snapshot().errors == errors + 1 and w.alive
    assert _ask(queues, "alive?").success

    reset = ResetRequest()
    queues.requests.push(reset)
    assert reset.wait(10)[0]
    assert w.snapshot().sessions["a"]["frames_added"] == 0


def test_a_memory_saved_by_another_model_is_refused_and_kept_aside(tmp_path, caplog) -> None:  # noqa: ANN001
    from infinipot.adapters.loading import load_adapter
    from infinipot.session import SessionConfig, StreamingSession
    from infinipot_ros.worker import restore_session

    qwen2 = load_adapter("builtin:tiny-qwen2-vl")
    session = StreamingSession(qwen2, SessionConfig(budget_tokens=256))
    rng = np.random.default_rng(0)
    for i in range(4):
        session.add_frame(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 1.0 + 0.5 * i)
    path = session.save(tmp_path / "cam.session")
    log = logging.getLogger("test_restore")
    with caplog.at_level(logging.INFO, logger="test_restore"):
        other = load_adapter("builtin:tiny-qwen2.5-vl")
        assert restore_session(path, other, SessionConfig(budget_tokens=256), "cam", log) is None
        same = restore_session(tmp_path / "none.session", qwen2, SessionConfig(budget_tokens=256), "cam", log)
    assert same is None  # no file: nothing to say
    [record] = caplog.records
    assert "not restored" in record.message and "another model" in record.message and "kept as" in record.message
    assert not path.exists()  # moved aside, so the next snapshot cannot overwrite it
    [aside] = tmp_path.glob("cam.session.refused-*")
    assert StreamingSession.load(aside, qwen2).stats().frames_ingested == 4  # nothing was lost
