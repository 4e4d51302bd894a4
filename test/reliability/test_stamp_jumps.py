"""Stamps that go backwards, through a real node process: jitter keeps the memory, a real jump restarts it.

The node keeps every frame (sample_rate_hz 0). A frame 50 ms earlier than the newest one is dropped and
counted out of order, and the memory (its span, its tokens) stays; a jump back by more than
stamp_restart_s (default 1 s) starts the memory afresh. Either way the counters stay consistent:
frames_ingested counts over the node's life like frames_sampled, and every received frame is sampled,
skipped or out of order.
"""
from __future__ import annotations

from typing import Any


def _consistent(s: Any) -> None:
    assert s.frames_received == s.frames_sampled + s.frames_skipped + s.frames_out_of_order, s
    assert s.frames_dropped == s.frames_skipped + s.frames_overflowed + s.frames_out_of_order, s
    assert s.frames_sampled == s.frames_ingested + s.frames_overflowed, s  # nothing pending: even counts


def test_jitter_is_dropped_and_only_a_real_jump_back_restarts(rel) -> None:  # noqa: ANN001
    rig = rel.NodeRig(rel, 71, ["-p", "budget_tokens:=256"])
    try:
        rig.wait_ready()
        rig.send_frames(8)  # stamps 1000.5 .. 1004.0
        held = rig.fresh_stats(predicate=lambda s: s.frames_ingested == 8)
        before = rig.ask()
        assert before.success, before.error_message

        rig.raw_pub.publish(rig.frame(50, stamp=1003.95))  # 50 ms before the newest frame
        rig.ros.spin_for(0.1)
        rig.send_frames(2, seed=60)  # 1004.5, 1005.0: the stream goes on
        after = rig.fresh_stats(predicate=lambda s: s.frames_received == 11 and s.frames_ingested == 10)
        assert after.frames_out_of_order == 1 and after.stream_restarts == 0
        assert rel.stamp_seconds(after.memory_start) == rel.stamp_seconds(held.memory_start)
        assert after.tokens_held > held.tokens_held
        _consistent(after)
        still = rig.ask()
        assert still.success and rel.stamp_seconds(still.memory_start) == rel.stamp_seconds(before.memory_start)

        rig.stamp = 10.0  # sim time reset: a jump back by ~995 s
        rig.send_frames(2, seed=70)  # 10.5, 11.0
        restarted = rig.fresh_stats(predicate=lambda s: s.frames_received == 13 and s.stream_restarts == 1
                                    and s.frames_ingested == 12)
        assert 10.0 < rel.stamp_seconds(restarted.memory_start) <= 11.0
        assert restarted.frames_out_of_order == 1
        _consistent(restarted)
    finally:
        code, _, out = rig.close()
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert "jumped back" in out
