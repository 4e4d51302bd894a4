"""Harness for the reliability tests: node processes, a ROS client in this process, an in-process node.

Node processes are started by `infinipot_eval.stress.NodeProcess` (the stress tool's own launcher, so the
tests exercise it too) on a test-unique ROS domain with localhost-only discovery. Helpers are handed out
through fixtures because tests cannot import conftest under importlib mode.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

#: Examples per fuzzed boundary (the brief asks for >= 2000 in the default run; raise it for soak runs).
FUZZ_EXAMPLES = int(os.environ.get("INFINIPOT_FUZZ_EXAMPLES", 2000))


def domain_id(offset: int) -> int:
    """A ROS domain id in 101..200 derived from the pid (disjoint from test/ros, which uses 1..100)."""
    return 101 + (os.getpid() + offset) % 100


def _load_shared_ros_client() -> type:
    spec = importlib.util.spec_from_file_location("ros_client", Path(__file__).parents[1] / "ros_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.RosClient


RosClient = functools.partial(_load_shared_ros_client(), name="infinipot_reliability_client", qos=50,
                              timeout=60.0)

def stamp_seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture(scope="session")
def rel() -> SimpleNamespace:
    import importlib.util
    from pathlib import Path

    from infinipot_eval.stress import NodeProcess, ros_env

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
