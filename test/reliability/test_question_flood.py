"""A flood of concurrent questions: every one answered or refused as busy, the cameras served throughout."""
from __future__ import annotations

import signal
import time


def test_question_flood_never_starves_the_cameras(rel) -> None:  # noqa: ANN001
    rig = rel.NodeRig(rel, 37, ["-p", "budget_tokens:=256", "-p", "max_answer_tokens:=400", "-p", "request_timeout_s:=60.0",
                                "-p", "image_qos:=reliable", "-p", "image_qos_depth:=100"])
    flood = 30
    try:
        rig.wait_ready()
        rig.send_frames(4)
        before = rig.fresh_stats(predicate=lambda s: s.frames_ingested == 4)
        request = rig.AskVideo.Request(question="Describe everything you saw.", camera="raw", max_new_tokens=400)
        futures = [rig.ask_client.call_async(request) for _ in range(flood)]
        # While the worker generates long answers and the rest wait or are refused, frames keep arriving.
        started = time.monotonic()
        rig.send_frames(30, seed=100, pause=0.05)
        during = rig.fresh_stats(predicate=lambda s: s.frames_received >= before.frames_received + 30,
                                 timeout=20.0)
        busy_for = time.monotonic() - started
        assert rig.ros.spin_until(lambda: all(f.done() for f in futures), 120.0), rig.node.output()[-3000:]
        answers = [f.result() for f in futures]
        answered = [a for a in answers if a.success]
        refused = [a for a in answers if not a.success]
        assert len(answered) + len(refused) == flood
        assert answered, [a.error_message for a in refused][:3]
        assert all("busy" in a.error_message for a in refused), [a.error_message for a in refused][:3]
        # the flood was still being answered when the frames had all arrived
        assert max(a.latency_s for a in answered) > busy_for * 0.5, (busy_for, [a.latency_s for a in answered])
        assert during.frames_rejected == 0
        assert rig.ask("Still there?").success
    finally:
        code, elapsed, out = rig.close(signal.SIGINT)
    assert code == 0 and elapsed < 5.0, f"exit {code} after {elapsed:.1f}s\n{out[-3000:]}"


def test_max_pending_questions_bounds_the_waiting_questions(rel) -> None:  # noqa: ANN001
    """max_pending_questions:=2: one question is answered at a time, two wait, the rest are refused as busy."""
    rig = rel.NodeRig(rel, 38, ["-p", "budget_tokens:=256", "-p", "max_answer_tokens:=3000", "-p",
                                "max_pending_questions:=2", "-p", "request_timeout_s:=60.0"])
    try:
        rig.wait_ready()
        rig.send_frames(4)
        rig.fresh_stats(predicate=lambda s: s.frames_ingested == 4)
        request = rig.AskVideo.Request(question="Describe everything you saw.", camera="raw", max_new_tokens=3000)
        futures = [rig.ask_client.call_async(request) for _ in range(8)]
        assert rig.ros.spin_until(lambda: all(f.done() for f in futures), 120.0), rig.node.output()[-3000:]
        answers = [f.result() for f in futures]
        busy = [a.error_message for a in answers if not a.success]
        assert all("busy: 2 questions already waiting (max_pending_questions)" in m for m in busy), busy
        # 3000-token answers take seconds each: at most the one being answered plus two waiting got through
        assert sum(a.success for a in answers) <= 3 and len(busy) >= 5, [a.error_message for a in answers]
    finally:
        code, _, out = rig.close(signal.SIGINT)
    assert code == 0 and "Traceback" not in out, out[-3000:]
