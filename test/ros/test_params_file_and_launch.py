"""The user-facing configuration: config/robot.yaml with --params-file, SIGTERM shutdown, launch file."""
from __future__ import annotations

import ast
import importlib.util
import signal
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.srv import GetParameters

from infinipot_ros.parameters import PARAMETERS
from infinipot_ros.msg import CacheStats
from infinipot_ros.srv import AskVideo

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "config" / "robot.yaml"
LAUNCH = REPO / "launch" / "robot.launch.py"


def yaml_params() -> dict:
    return yaml.safe_load(YAML.read_text())["infinipot"]["ros__parameters"]


def test_yaml_holds_every_parameter_with_its_default() -> None:
    values = yaml_params()
    assert set(values) == {p.name for p in PARAMETERS}
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default, spec.name
        assert spec.check(values[spec.name]) is None


def test_node_starts_from_params_file_and_stops_on_sigterm(harness) -> None:  # noqa: ANN001
    domain = harness.domain_id(47)
    node = harness.NodeProcess(["--params-file", str(YAML)], domain)
    ros = harness.RosClient(domain)
    try:
        get = ros.node.create_client(GetParameters, "/infinipot/get_parameters")
        names = [p.name for p in PARAMETERS]
        resp = ros.call(get, GetParameters.Request(names=names), timeout=60.0)
        got = {n: v for n, v in zip(names, resp.values)}
        expected = yaml_params()
        assert got["model"].string_value == expected["model"]
        assert list(got["cameras"].string_array_value) == expected["cameras"]
        assert got["sample_rate_hz"].double_value == expected["sample_rate_hz"]
        assert got["queue_size"].integer_value == expected["queue_size"]
        ask = ros.node.create_client(AskVideo, "/ask_video")
        answer = ros.call(ask, AskVideo.Request(question="Anything?"), timeout=30.0)
        assert not answer.success and "no frames" in answer.error_message
        # Capped by default (issue 14): the file alone gives a hard KV cap, reported on ~/cache_stats.
        stats = ros.subscribe(CacheStats, "/infinipot/cache_stats")
        ros.spin_until(lambda: any(m.token_budget > 0 for m in stats), timeout=30.0)
        last = [m for m in stats if m.token_budget > 0][-1]
        assert last.token_budget == expected["budget_tokens"] > 0 and last.kv_cap_bytes > 0, last
        assert last.kv_bytes <= last.kv_cap_bytes and last.policy == expected["policy"] != "full"
    finally:
        ros.close()
        code, elapsed, out = node.stop(signal.SIGTERM)
    assert code == 0 and elapsed < 5.0, f"exit {code} after {elapsed:.1f}s\n{out}"
    assert "Traceback" not in out, out


def test_bad_parameter_file_value_fails_fast(harness, tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text("infinipot:\n  ros__parameters:\n    target_ratio: 7.0\n")
    node = harness.NodeProcess(["--params-file", str(bad)], harness.domain_id(53))
    try:
        node.proc.wait(60)
    finally:
        code, _, out = node.stop()
    assert code != 0 and "target_ratio" in out and "Traceback" not in out, out


@pytest.mark.parametrize(
    "text, reason",
    [
        ("target_ratio: 1.0", "target_ratio"),  # in the old range, but |C| = |M| is refused by the engine
        ("recent_ratio: 1.0", "recent_ratio"),
        ("budget_tokens: 0\n    budget_mb: 0.0", "policy: full"),  # uncapped only on purpose
    ],
)
def test_values_the_engine_refuses_stop_the_node_at_start_up(harness, tmp_path, text: str, reason: str) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"infinipot:\n  ros__parameters:\n    {text}\n")
    node = harness.NodeProcess(["--params-file", str(bad)], harness.domain_id(59))
    try:
        node.proc.wait(60)
    finally:
        code, _, out = node.stop()
    assert code != 0 and reason in out and "Traceback" not in out, out


def _launch_arguments(tree: ast.Module) -> set[str]:
    """Names of DeclareLaunchArgument(...) calls and of the OVERRIDES table in the launch file."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "OVERRIDES" for t in node.targets):
            names.update(k.value for k in node.value.keys)  # type: ignore[attr-defined]
    return names


def test_launch_file_arguments_are_node_parameters() -> None:
    tree = ast.parse(LAUNCH.read_text())
    declared = _launch_arguments(tree)
    assert {"model", "cameras", "budget_tokens", "budget_mb", "policy"} <= declared
    # params_file names the YAML file itself; every other argument overrides a node parameter.
    assert declared - {"params_file"} <= {p.name for p in PARAMETERS}
    source = LAUNCH.read_text()
    assert 'executable="infinipot_node"' in source and 'package="infinipot_ros"' in source
    assert "get_package_share_directory" in source and "robot.yaml" in source


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros not installed here")
def test_launch_description_loads() -> None:  # pragma: no cover - runs where ROS 2 launch exists
    import runpy

    module = runpy.run_path(str(LAUNCH))
    description = module["generate_launch_description"]()
    assert description.entities
