"""A node process plus the endpoints a reliability test talks to it with (imported by the tests by path).

Kept out of conftest.py because several test modules build on the same small rig; the node is the real
`python -m infinipot_ros.node` process started by the stress tool's launcher.
"""
from __future__ import annotations

import signal
import time
from typing import Any, Callable

import numpy as np


class NodeRig:
    """One node process (one raw camera, optionally a compressed one) and a client in this process."""

    def __init__(self, rel: Any, offset: int, params: list[str], env: dict[str, str] | None = None,
                 compressed: bool = False) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rcl_interfaces.srv import SetParameters
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from infinipot_ros.msg import CacheStats
        from infinipot_ros.srv import AskVideo

        self.rel = rel
        self.domain = rel.domain_id(offset)
        topics = ["/rel/raw/image_raw"] + (["/rel/comp/image_raw/compressed"] if compressed else [])
        names = ["raw"] + (["comp"] if compressed else [])
        # the untrained tiny model: it generates up to max tokens, which the busy-node tests rely on
        args = ["-p", "model:=builtin:tiny-qwen2-vl",
                "-p", f"cameras:={topics}", "-p", f"camera_names:={names}", "-p", "stats_period_s:=0.2",
                "-p", "sample_rate_hz:=0.0", *params]
        self.node = rel.NodeProcess(args, self.domain, env=env)
        self.ros = rel.RosClient(self.domain)
        n = self.ros.node
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)  # compatible with sensor-data
        self.raw_pub = n.create_publisher(Image, topics[0], qos)
        self.comp_pub = n.create_publisher(CompressedImage, topics[1], qos) if compressed else None
        self.stats = self.ros.subscribe(CacheStats, "/infinipot/cache_stats")
        self.diags = self.ros.subscribe(DiagnosticArray, "/diagnostics")
        self.ask_client = n.create_client(AskVideo, "/ask_video")
        self.param_client = n.create_client(SetParameters, "/infinipot/set_parameters")
        self.stamp = 1000.0
        self.AskVideo = AskVideo

    def wait_ready(self, timeout: float = 120.0) -> None:
        pubs = [p for p in (self.raw_pub, self.comp_pub) if p is not None]
        ok = self.ros.spin_until(
            lambda: self.ask_client.service_is_ready() and all(p.get_subscription_count() for p in pubs)
            and any(s.token_budget > 0 for s in self.stats),
            timeout,
        )
        assert ok, f"node not ready\n{self.node.output()[-4000:]}"

    def frame(self, seed: int, stamp: float | None = None) -> Any:
        from sensor_msgs.msg import Image

        if stamp is None:
            self.stamp += 0.5
            stamp = self.stamp
        rgb = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        msg = Image(height=48, width=64, encoding="rgb8", is_bigendian=0, step=192, data=rgb.tobytes())
        msg.header.stamp.sec = int(stamp)
        msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
        return msg

    def send_frames(self, count: int, seed: int = 0, pause: float = 0.08) -> None:
        for i in range(count):
            self.raw_pub.publish(self.frame(seed + i))
            self.ros.spin_for(pause)

    def fresh_stats(self, camera: str = "raw", predicate: Callable[[Any], bool] = lambda s: True,
                    timeout: float = 30.0) -> Any:
        """A stats message of `camera` stamped from now on that satisfies `predicate`."""
        since = time.time()

        def found() -> Any:
            for msg in reversed(self.stats):
                if self.rel.stamp_seconds(msg.header.stamp) < since:
                    return None
                if msg.camera == camera and predicate(msg):
                    return msg
            return None

        msg = self.ros.spin_until(found, timeout)
        last = next((m for m in reversed(self.stats) if m.camera == camera), None)
        assert msg is not None, f"no matching stats for {camera}; last: {last}\n{self.node.output()[-3000:]}"
        return msg

    def worker_diag(self, predicate: Callable[[Any], bool], timeout: float = 10.0, since: float | None = None) -> Any:
        since = time.time() if since is None else since

        def found() -> Any:
            for arr in reversed(self.diags):
                if self.rel.stamp_seconds(arr.header.stamp) < since:
                    return None
                for status in arr.status:
                    if status.name == "infinipot: worker" and predicate(status):
                        return status
            return None

        status = self.ros.spin_until(found, timeout)
        assert status is not None, "no matching worker diagnostics"
        return status

    def ask(self, question: str = "What is there?", camera: str = "raw", max_new_tokens: int = 1,
            timeout: float = 90.0) -> Any:
        return self.ros.call(self.ask_client, self.AskVideo.Request(
            question=question, camera=camera, max_new_tokens=max_new_tokens), timeout=timeout)

    def set_param(self, name: str, **value: Any) -> Any:
        from rcl_interfaces.msg import Parameter as ParameterMsg
        from rcl_interfaces.msg import ParameterType, ParameterValue

        kinds = {"double_value": ParameterType.PARAMETER_DOUBLE, "string_value": ParameterType.PARAMETER_STRING,
                 "integer_value": ParameterType.PARAMETER_INTEGER, "bool_value": ParameterType.PARAMETER_BOOL}
        (field, v), = value.items()
        from rcl_interfaces.srv import SetParameters

        pv = ParameterValue(type=kinds[field], **{field: v})
        return self.ros.call(self.param_client, SetParameters.Request(
            parameters=[ParameterMsg(name=name, value=pv)])).results[0]

    def close(self, sig: int = signal.SIGINT) -> tuple[int, float, str]:
        self.ros.close()
        return self.node.stop(sig)
