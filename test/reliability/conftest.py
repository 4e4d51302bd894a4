"""Harness for the reliability tests: node processes, a ROS client in this process, an in-process node.

Node processes are started by `infinipot_ros.stress.NodeProcess` (the stress tool's own launcher, so the
tests exercise it too) on a test-unique ROS domain with localhost-only discovery. Helpers are handed out
through fixtures because tests cannot import conftest under importlib mode.
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any, Callable

import pytest

#: Examples per fuzzed boundary (the brief asks for >= 2000 in the default run; raise it for soak runs).
FUZZ_EXAMPLES = int(os.environ.get("INFINIPOT_FUZZ_EXAMPLES", 2000))


def domain_id(offset: int) -> int:
    """A ROS domain id in 101..200 derived from the pid (disjoint from test/ros, which uses 1..100)."""
    return 101 + (os.getpid() + offset) % 100


class RosClient:
    """An rclpy node in its own context in the pytest process, spun by hand."""

    def __init__(self, domain: int, name: str = "infinipot_reliability_client") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = {}

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 50) -> list[Any]:
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, box.append, qos)
        return box

    def spin_until(self, predicate: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def call(self, client: Any, request: Any, timeout: float = 60.0) -> Any:
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.spin_until(future.done, timeout)
        assert future.done(), f"no response from {client.srv_name} within {timeout}s"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def stamp_seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture(scope="session")
def rel() -> SimpleNamespace:
    import importlib.util
    from pathlib import Path

    from infinipot_ros.stress import NodeProcess, ros_env

    spec = importlib.util.spec_from_file_location("reliability_rig", Path(__file__).with_name("rig.py"))
    rig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rig)  # type: ignore[union-attr]
    return SimpleNamespace(NodeProcess=NodeProcess, RosClient=RosClient, domain_id=domain_id,
                           ros_env=ros_env, stamp_seconds=stamp_seconds, FUZZ_EXAMPLES=FUZZ_EXAMPLES,
                           NodeRig=rig.NodeRig)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """The in-process model runs on one thread: on 2 shared cores, OpenMP spinning made each call ~100x
    slower (see node.py on OMP_WAIT_POLICY)."""
    import torch

    torch.set_num_threads(1)
