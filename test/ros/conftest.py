"""Harness for the ROS tests: node processes and a client with its own rclpy context.

Every node runs as a separate process (`python -m infinipot_ros.node`) on a test-unique ROS domain with
localhost-only discovery; the pytest process talks to it through real topics and services. Helpers are
handed out through the `harness` fixture (tests cannot import conftest under importlib mode).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

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


def _load_shared_ros_client() -> type:
    spec = importlib.util.spec_from_file_location("ros_client", Path(__file__).parents[1] / "ros_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.RosClient


RosClient = functools.partial(_load_shared_ros_client(), name="infinipot_test_client", qos=10, timeout=30.0)


@pytest.fixture(scope="session")
def harness() -> SimpleNamespace:
    return SimpleNamespace(
        NodeProcess=NodeProcess, RosClient=RosClient, domain_id=domain_id, ros_env=ros_env, REPO=REPO
    )
