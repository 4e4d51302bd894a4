"""Harness for the ROS tests: node processes and a client with its own rclpy context.

Every node runs as a separate process (`python -m infinipot_ros.node`) on a test-unique ROS domain with
localhost-only discovery; the pytest process talks to it through real topics and services. Helpers are
handed out through the `harness` fixture (tests cannot import conftest under importlib mode).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[2]


def domain_id(offset: int) -> int:
    """A ROS domain id in 1..100 derived from the pid (parallel test runs do not see each other)."""
    return (os.getpid() + offset) % 100 + 1


def ros_env(domain: int) -> dict[str, str]:
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1")


class NodeProcess:
    """A `python -m <module> --ros-args ...` child; output goes to a temp file (never a full pipe)."""

    def __init__(self, module: str, ros_args: list[str], domain: int) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="infinipot-test-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", *ros_args],
            cwd=REPO, env=ros_env(domain), stdout=self._log, stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int, float, str]:
        """Send `sig`, wait; returns (exit code, seconds to exit, output). Kills after `timeout`."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elapsed = time.monotonic() - t0
        out = self.output()
        self._log.close()
        os.unlink(self._log.name)
        return self.proc.returncode, elapsed, out


class RosClient:
    """An rclpy node in its own context in the pytest process, spun by hand."""

    def __init__(self, domain: int, name: str = "infinipot_test_client") -> None:
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

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> list[Any]:
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

    def call(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        self.spin_until(future.done, timeout)
        assert future.done(), f"no response from {client.srv_name} within {timeout}s"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="session")
def harness() -> SimpleNamespace:
    return SimpleNamespace(
        NodeProcess=NodeProcess, RosClient=RosClient, domain_id=domain_id, ros_env=ros_env, REPO=REPO
    )
