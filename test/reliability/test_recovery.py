"""Recovery from failing model calls and from slow answers, in a real node process.

The failures are real exceptions raised from the adapter's model call inside the node process
(`INFINIPOT_FAULT_INJECTION`, see infinipot_ros/fault_injection.py): nothing of the node is mocked. The
forward calls of a one-camera node are counted exactly: 1 = the prompt prefix at start-up; then one per
block of 2 frames; a question with max_new_tokens=1 is one call; a reset re-prefills the prefix (1 call).
"""
from __future__ import annotations

import logging
import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus

from infinipot_ros.fault_injection import FaultPlan, make_error

# call 4 = the first question (after the prefix and 2 blocks); call 9 = the first frame block after the
# policy switched to lower_budget (5 = prefix re-prefill after the reset, 6-7 = 4 frames, 8 = question)
PLAN = "runtime@forward:4;oom@forward:9"


def test_fault_plan_parsing_and_errors() -> None:
    plan = FaultPlan.parse(PLAN)
    assert [(r.error, r.method, sorted(r.calls)) for r in plan.rules] == [
        ("runtime", "forward", [4]), ("oom", "forward", [9])]
    for bad in ("oom", "oom@forward", "boom@forward:1", "oom@forward:0", "oom@forward:x"):
        with pytest.raises(ValueError):
            FaultPlan.parse(bad)
    import torch

    assert isinstance(make_error("oom", "x"), torch.cuda.OutOfMemoryError)
    for _ in range(3):
        plan.before_call("forward")
    with pytest.raises(RuntimeError, match="injected fault"):
        plan.before_call("forward")


def test_model_errors_are_reported_recovered_and_serving_continues(rel) -> None:  # noqa: ANN001
    rig = rel.NodeRig(rel, 31, ["-p", "budget_tokens:=256", "-p", "queue_size:=16",
                                "-p", "max_answer_tokens:=2000", "-p", "on_model_error:=reset"],
                      env={"INFINIPOT_FAULT_INJECTION": PLAN})
    try:
        rig.wait_ready()
        rig.send_frames(4)
        held = rig.fresh_stats(predicate=lambda s: s.frames_ingested == 4)
        assert held.tokens_held > 0

        # --- a RuntimeError inside the model while answering: reset ---
        since = time.time()
        failed = rig.ask("What is there?")
        assert not failed.success and "RuntimeError" in failed.error_message
        assert "injected fault" in failed.error_message and "reset" in failed.error_message
        diag = rig.worker_diag(lambda d: d.level == DiagnosticStatus.ERROR, since=since)
        assert "model error" in diag.message and "reset" in diag.message
        values = {kv.key: kv.value for kv in diag.values}
        assert int(values["model_errors"]) == 1
        after_reset = rig.fresh_stats(predicate=lambda s: s.tokens_held < held.tokens_held)
        assert after_reset.frames_ingested == 4  # frame counters count over the node's life (CacheStats.msg)
        refused = rig.ask("Anything now?")  # the memory was cleared: refused cleanly, not an error
        assert not refused.success and "no frames" in refused.error_message
        rig.send_frames(4, seed=10)
        rig.fresh_stats(predicate=lambda s: s.frames_ingested == 8)
        ok = rig.ask("And now?")
        assert ok.success, ok.error_message
        # ERROR is held for a while, then the worker is OK again.
        rig.worker_diag(lambda d: d.level == DiagnosticStatus.OK, timeout=15.0)

        # --- CUDA out of memory while ingesting, with on_model_error=lower_budget ---
        assert rig.set_param("on_model_error", string_value="lower_budget").successful
        assert not rig.set_param("on_model_error", string_value="explode").successful
        since = time.time()
        rig.send_frames(2, seed=20)
        diag = rig.worker_diag(lambda d: d.level == DiagnosticStatus.ERROR, since=since, timeout=15.0)
        assert "OutOfMemoryError" in diag.message and "lowered from 256 to 128" in diag.message
        lowered = rig.fresh_stats(predicate=lambda s: s.token_budget == 128)
        assert lowered.kv_cap_bytes < held.kv_cap_bytes and lowered.tokens_held < held.tokens_held
        assert lowered.frames_ingested == 8  # the failed block was not ingested; the counter carries on
        rig.send_frames(4, seed=30)
        rig.fresh_stats(predicate=lambda s: s.frames_ingested == 12 and s.token_budget == 128)
        assert rig.ask("Still serving?").success

        # --- a request past its deadline is answered false and does not block the next ones ---
        assert rig.set_param("request_timeout_s", double_value=0.1).successful
        t0 = time.monotonic()
        slow = rig.ask("Describe everything.", max_new_tokens=2000)
        assert not slow.success and "request_timeout_s" in slow.error_message
        assert time.monotonic() - t0 < 5.0
        assert rig.set_param("request_timeout_s", double_value=60.0).successful
        later = rig.ask("Are you still there?")
        assert later.success, later.error_message
        assert rig.node.alive()
    finally:
        code, elapsed, out = rig.close(signal.SIGTERM)
    assert code == 0 and elapsed < 5.0, f"exit {code} after {elapsed:.1f}s\n{out[-3000:]}"
    # The injected failures were logged with their traceback by the worker; nothing else was.
    assert out.count("Traceback (most recent call last)") == 2, out[-5000:]
    assert out.count("injected fault") >= 2


def test_keep_policy_leaves_memory_and_next_question_succeeds(monkeypatch) -> None:  # noqa: ANN001
    """on_model_error=keep, driven through the real worker thread (no ROS needed for this policy)."""
    from infinipot_ros.frame_queue import WorkQueues
    from infinipot_ros.parameters import NodeSettings
    from infinipot_ros.worker import AskRequest, FrameItem, InferenceWorker

    monkeypatch.setenv("INFINIPOT_FAULT_INJECTION", "runtime@forward:4")
    settings = NodeSettings.from_values({"cameras": ["/a/image_raw"], "budget_tokens": 256,
                                         "on_model_error": "keep"})
    queues: WorkQueues = WorkQueues(frame_capacity=8)
    worker = InferenceWorker(settings, queues, logging.getLogger("test_keep"))
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while worker.snapshot().state == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        rng = np.random.default_rng(0)
        for i in range(4):
            queues.frames.push("a", FrameItem("a", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), float(i)))
        while worker.snapshot().sessions["a"]["frames_ingested"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        before = worker.snapshot().sessions["a"]

        def ask() -> object:
            req = AskRequest("a", "What is there?", 1, 30.0)
            assert queues.requests.push(req)
            return req.wait(60)

        failed = ask()
        assert not failed.success and "kept" in failed.error_message
        snap = worker.snapshot()
        assert snap.model_errors == 1 and snap.last_model_error_at is not None
        assert snap.sessions["a"]["tokens_held"] == before["tokens_held"]
        assert snap.sessions["a"]["frames_ingested"] == 4
        ok = ask()
        assert ok.success and ok.memory_start == 0.0 and ok.memory_end == 3.0, ok
    finally:
        assert worker.stop(5.0)
