"""Frames lost between a camera's publisher and the node are counted from the publisher's sequence numbers.

A real node process and a real rclpy publisher (this test's process) on the default sensor-data QoS: a
burst of raw 320x240 frames overruns the best-effort link (history depth 5), as a live camera does when
the node is busy. Every message the publisher sent is either received or counted lost, exactly, as long
as the first and the last get through (the slow frames around the burst make sure of that). 320x240 and
not 640x480: here (Fast DDS over localhost UDP) a best-effort 640x480 frame is often lost even on its own,
so the slow frames that bound the count would not reliably arrive.
"""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from infinipot_ros.msg import CacheStats

TOPIC = "/loss/image_raw"
BURST = 300


def _frame(stamp: float, data: bytes) -> Image:
    msg = Image(height=240, width=320, encoding="rgb8", is_bigendian=0, step=320 * 3)
    msg.data = data
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
    return msg


def test_frames_lost_in_transport_are_counted_and_warned(harness) -> None:  # noqa: ANN001
    domain = harness.domain_id(37)
    node = harness.NodeProcess(
        ["-p", "model:=builtin:tiny-qwen2-vl", "-p", f"cameras:=['{TOPIC}']", "-p", "stats_period_s:=0.2",
         "-p", "budget_tokens:=256", "-p", "sample_rate_hz:=2.0"], domain)
    ros = harness.RosClient(domain)
    try:
        pub = ros.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
        stats = ros.subscribe(CacheStats, "/infinipot/cache_stats")
        diags = ros.subscribe(DiagnosticArray, "/diagnostics")
        ready = ros.spin_until(lambda: pub.get_subscription_count() and any(s.token_budget for s in stats), 120)
        assert ready, node.output()[-3000:]
        rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        template = _frame(0.0, rgb.tobytes())
        sent, stamp = 0, 2000.0

        def publish() -> None:
            nonlocal sent, stamp
            stamp += 0.05
            template.header.stamp.sec = int(stamp)
            template.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
            pub.publish(template)
            sent += 1

        def received() -> int:
            return max((s.frames_received for s in stats if s.camera == "loss"), default=0)

        while received() == 0 and sent < 20:  # one at a time until the node has one (matching may lag)
            publish()
            ros.spin_until(received, 2.0)
        assert received() == 1, node.output()[-3000:]
        unseen = sent - 1  # sent before the node's first message: not for it, not counted
        for _ in range(2):  # slow frames: these get through
            publish()
            ros.spin_for(0.3)
        for _ in range(BURST):  # as fast as rclpy publishes: overruns the best-effort reader's history
            publish()
        since = time.time()
        for _ in range(5):
            ros.spin_for(0.4)
            publish()

        def settled() -> CacheStats | None:
            last = next((s for s in reversed(stats) if s.camera == "loss"), None)
            if last is not None and last.frames_received + last.frames_lost_in_transport == sent - unseen:
                return last
            return None

        final = ros.spin_until(settled, 20.0)
        last = next((s for s in reversed(stats) if s.camera == "loss"), None)
        assert final is not None, (sent, last.frames_received, last.frames_lost_in_transport)
        assert final.frames_lost_in_transport > 0, f"the burst lost nothing ({final.frames_received} of {sent})"
        assert final.frames_received < sent - unseen

        def warned() -> DiagnosticStatus | None:
            for arr in diags:
                if arr.header.stamp.sec + arr.header.stamp.nanosec * 1e-9 < since - 1.0:
                    continue
                for status in arr.status:
                    if status.name == "infinipot: camera loss" and "lost in transport" in status.message:
                        return status
            return None

        status = ros.spin_until(warned, 5.0)
        assert status is not None and status.level == DiagnosticStatus.WARN, [
            (s.name, s.level, s.message) for a in diags[-5:] for s in a.status]
        values = {kv.key: kv.value for kv in status.values}
        assert int(values["frames_lost_in_transport"]) > 0
    finally:
        ros.close()
        code, _, out = node.stop()
    assert code == 0 and "Traceback" not in out, out[-3000:]


def test_counter_counts_gaps_per_publisher_and_stays_bounded() -> None:
    from infinipot_ros.transport import TransportLossCounter

    def info(gid: bytes, seq: int) -> dict:
        return {"publication_sequence_number": seq, "publisher_gid": {"data": gid}}

    c = TransportLossCounter(max_publishers=2)
    assert c.observe(info(b"a", 40)) == 0  # a writer's first message: earlier ones were not for us
    assert c.observe(info(b"a", 41)) == 0
    assert c.observe(info(b"b", 1)) == 0
    assert c.observe(info(b"a", 45)) == 3  # 42, 43, 44 lost
    assert c.observe(info(b"b", 3)) == 1  # another writer, its own numbering
    assert c.observe(info(b"a", 44)) == 0  # a late one already counted lost is not counted twice
    assert c.observe(None) == 0 and c.observe({"publication_sequence_number": None}) == 0
    assert (c.lost, c.unnumbered) == (4, 2)
    c.observe(info(b"c", 7))  # a third writer: the least recently heard ("b") is forgotten
    assert c.observe(info(b"b", 9)) == 0 and c.lost == 4
    assert c.observe(info(b"c", 9)) == 1
