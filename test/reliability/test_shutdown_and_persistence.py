"""SIGINT/SIGTERM under load, and the video memory surviving a restart (`session_path`)."""
from __future__ import annotations

import signal
import time

import pytest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_busy_node_quickly_without_traceback(rel, sig: int) -> None:  # noqa: ANN001
    """Frames streaming and a long answer being generated when the signal arrives."""
    rig = rel.NodeRig(rel, 41 + sig, ["-p", "budget_tokens:=256", "-p", "max_answer_tokens:=4000"])
    try:
        rig.wait_ready()
        rig.send_frames(6, pause=0.05)
        rig.fresh_stats(predicate=lambda s: s.frames_ingested >= 4)
        future = rig.ask_client.call_async(rig.AskVideo.Request(
            question="Describe everything.", camera="raw", max_new_tokens=4000))
        rig.send_frames(10, seed=50, pause=0.03)  # keeps arriving while the worker generates
        assert not future.done(), "the long answer finished too early to test shutdown under load"
    finally:
        code, elapsed, out = rig.close(sig)
    assert code == 0 and elapsed < 5.0, f"exit {code} after {elapsed:.1f}s\n{out[-3000:]}"
    assert "Traceback" not in out, out[-5000:]


def test_memory_is_saved_on_sigterm_and_restored_on_restart(rel, tmp_path) -> None:  # noqa: ANN001
    params = ["-p", "budget_tokens:=256", "-p", f"session_path:={tmp_path}"]
    first = rel.NodeRig(rel, 61, params)
    try:
        first.wait_ready()
        empty = first.fresh_stats()
        prefix_tokens = empty.tokens_held  # the prompt prefix only
        first.send_frames(8)  # stamps 1000.5 .. 1004.0
        held = first.fresh_stats(predicate=lambda s: s.frames_ingested == 8)
        assert held.tokens_held > prefix_tokens
        before = first.ask("What did you see?")
        assert before.success, before.error_message
    finally:
        code, elapsed, out = first.close(signal.SIGTERM)
    assert code == 0 and elapsed < 5.0 and "Traceback" not in out, out[-3000:]
    assert (tmp_path / "raw.session").is_file(), out[-3000:]

    second = rel.NodeRig(rel, 62, params)
    try:
        second.wait_ready()
        # Before any new frame: the restored memory holds what was seen before the restart.
        restored = second.fresh_stats(predicate=lambda s: s.frames_ingested > 0)
        assert restored.frames_received == 0
        assert restored.tokens_held == held.tokens_held > prefix_tokens
        answer = second.ask("What did you see before the restart?")
        assert answer.success, answer.error_message
        start, end = rel.stamp_seconds(answer.memory_start), rel.stamp_seconds(answer.memory_end)
        assert (start, end) == (rel.stamp_seconds(before.memory_start), rel.stamp_seconds(before.memory_end))
        assert 1000.0 < start <= end <= 1004.0
        # New frames continue the restored stream.
        second.send_frames(2, seed=99)  # stamps 1000.5, 1001.0 < 1004: the stream restarted
        second.stamp = 1010.0
        second.send_frames(2, seed=98)
        later = second.fresh_stats(predicate=lambda s: s.frames_received == 4 and s.frames_sampled >= 2)
        assert later is not None
        assert second.ask("And now?").success
    finally:
        code, elapsed, out = second.close(signal.SIGINT)
    assert code == 0 and elapsed < 5.0 and "Traceback" not in out, out[-3000:]
    assert "restored" in out
