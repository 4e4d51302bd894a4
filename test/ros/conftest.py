"""Harness for the ROS tests: node processes and a client with its own rclpy context.

Every node runs as a separate process (`python -m infinipot_ros.node`) on a test-unique ROS domain with
localhost-only discovery; the pytest process talks to it through real topics and services. Helpers are
handed out through the `harness` fixture (tests cannot import conftest under importlib mode).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
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


def copy_tracked_sources(dest: Path) -> None:
    """The git-tracked files of the repo into `dest` (a package source folder for CMake / colcon builds).

    Why a copy: CMake refuses include paths inside the source dir, and the venv lives inside the repo."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for rel in files.splitlines():
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="session")
def harness() -> SimpleNamespace:
    # the node as a child process: the stress tool's own launcher, shared with test/reliability
    from infinipot_eval.stress import NodeProcess, ros_env

    return SimpleNamespace(
        NodeProcess=NodeProcess, RosClient=RosClient, domain_id=domain_id, ros_env=ros_env, REPO=REPO,
        copy_tracked_sources=copy_tracked_sources,
    )
