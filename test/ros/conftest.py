"""Harness for the ROS tests: node processes and a client with its own rclpy context.

Every node runs as a separate process (`python -m infinipot_ros.node`) on a test-unique ROS domain with
localhost-only discovery; the pytest process talks to it through real topics and services. Helpers are
handed out through the `harness` fixture (tests cannot import conftest under importlib mode).
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


def domain_id(offset: int) -> int:
    """A ROS domain id in 1..100 derived from the pid (parallel test runs do not see each other)."""
    return (os.getpid() + offset) % 100 + 1


def _load_shared_ros_client() -> type:
    spec = importlib.util.spec_from_file_location("ros_client", Path(__file__).parents[1] / "ros_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.RosClient


RosClient = functools.partial(_load_shared_ros_client(), name="infinipot_test_client", qos=10, timeout=30.0)


@pytest.fixture(scope="session")
def harness() -> SimpleNamespace:
    # the node as a child process: the stress tool's own launcher, shared with test/reliability
    from infinipot_eval.stress import NodeProcess, ros_env

    return SimpleNamespace(
        NodeProcess=NodeProcess, RosClient=RosClient, domain_id=domain_id, ros_env=ros_env, REPO=REPO
    )
