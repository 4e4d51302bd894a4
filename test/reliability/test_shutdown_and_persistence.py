"""SIGINT/SIGTERM under load, and the video memory surviving a restart (`session_path`), kill -9 included."""
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
        # Several long answers queued (one model may hit its end-of-answer token after a few hundred tokens,
        # a fraction of a second), so the worker is still generating when the signal arrives.
        futures = [rig.ask_client.call_async(rig.AskVideo.Request(
            question="Describe everything.", camera="raw", max_new_tokens=4000)) for _ in range(6)]
        rig.send_frames(10, seed=50, pause=0.03)  # keeps arriving while the worker generates
        finished = [f.result() for f in futures if f.done()]
        assert len(finished) < len(futures), f"every long answer finished before the signal: {finished[-1]}"
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


def _values(status) -> dict[str, str]:  # noqa: ANN001
    return {kv.key: kv.value for kv in status.values}


def _saved_frames(path) -> int:  # noqa: ANN001
    """Frames the checkpoint at `path` holds (0 while there is none)."""
    import torch

    try:
        return int(torch.load(path, weights_only=True)["counters"]["frames_added"])
    except FileNotFoundError:
        return 0


def test_memory_survives_kill_9(rel, tmp_path) -> None:  # noqa: ANN001
    """Periodic atomic snapshots: after SIGKILL the node answers from the last one."""
    params = ["-p", "budget_tokens:=256", "-p", f"session_path:={tmp_path}", "-p", "session_save_period_s:=0.5"]
    first = rel.NodeRig(rel, 63, params)
    try:
        first.wait_ready()
        first.send_frames(8)  # stamps 1000.5 .. 1004.0
        held = first.fresh_stats(predicate=lambda s: s.frames_ingested == 8)
        before = first.ask("What did you see?")
        assert before.success, before.error_message
        snapshot = tmp_path / "raw.session"
        assert first.ros.spin_until(lambda: _saved_frames(snapshot) == 8, 5.0), "no snapshot within 5 s"
        status = first.worker_diag(lambda st: int(_values(st).get("snapshots", 0)) >= 1)
        cost = _values(status)  # what the snapshots cost, on /diagnostics
        assert int(cost["snapshot_errors"]) == 0 and int(cost["last_snapshot_bytes"]) > 0
    finally:
        code, _, out = first.close(signal.SIGKILL)
    assert code == -signal.SIGKILL, out[-3000:]
    assert not list(tmp_path.glob(".*.tmp"))

    second = rel.NodeRig(rel, 64, params)
    try:
        second.wait_ready()
        restored = second.fresh_stats(predicate=lambda s: s.frames_ingested > 0)
        assert restored.frames_received == 0 and restored.tokens_held == held.tokens_held
        answer = second.ask("What did you see before the crash?")
        assert answer.success, answer.error_message
        assert (rel.stamp_seconds(answer.memory_start), rel.stamp_seconds(answer.memory_end)) == (
            rel.stamp_seconds(before.memory_start), rel.stamp_seconds(before.memory_end))
    finally:
        code, _, out = second.close(signal.SIGTERM)
    assert code == 0 and "Traceback" not in out and "restored" in out, out[-3000:]


def test_memory_restored_under_a_smaller_budget_is_rebuilt_for_it(rel, tmp_path) -> None:  # noqa: ANN001
    """Never the saved budget kept silently: the node's parameters win, and the log says what changed."""
    first = rel.NodeRig(rel, 66, ["-p", "budget_tokens:=256", "-p", f"session_path:={tmp_path}"])
    try:
        first.wait_ready()
        first.send_frames(8)
        held = first.fresh_stats(predicate=lambda s: s.frames_ingested == 8)
        before = first.ask("What did you see?")
    finally:
        code, _, out = first.close(signal.SIGTERM)
    assert code == 0 and (tmp_path / "raw.session").is_file(), out[-3000:]

    # 24 tokens: less than the 28 held, so the rebuild compresses once with the node's policy
    second = rel.NodeRig(rel, 67, ["-p", "budget_tokens:=24", "-p", f"session_path:={tmp_path}"])
    try:
        second.wait_ready()
        rebuilt = second.fresh_stats(predicate=lambda s: s.frames_ingested > 0)
        assert rebuilt.token_budget == 24 and 0 < rebuilt.tokens_held <= 24 < held.tokens_held
        assert rebuilt.kv_bytes <= rebuilt.kv_cap_bytes < held.kv_cap_bytes
        answer = second.ask("And after the rebuild?")
        assert answer.success and rel.stamp_seconds(answer.memory_end) == rel.stamp_seconds(before.memory_end)
    finally:
        code, _, out = second.close(signal.SIGINT)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert "rebuilt for this node's parameters (budget_tokens 256 -> 24)" in out, out[-3000:]
