"""`infinipot-demo` end to end and `infinipot-ask` without a node."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_ask_cli_without_service_exits_2(harness) -> None:  # noqa: ANN001
    done = subprocess.run(
        [sys.executable, "-m", "infinipot_ros.ask_cli", "hello?", "--wait", "1"],
        cwd=harness.REPO, env=harness.ros_env(harness.domain_id(61)), capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "no service /ask_video" in done.stderr


@pytest.mark.parametrize("args, complaint", [
    (["--max-tokens", "-5"], "--max-tokens must be between 0"),
    (["--max-tokens", str(2**32)], "--max-tokens must be between 0"),
    (["--wait", "-1"], "--wait must be"),
    (["--wait", "nan"], "--wait must be"),
    (["--timeout", "0"], "--timeout must be"),
])
def test_ask_cli_refuses_bad_arguments_before_asking(harness, args, complaint) -> None:  # noqa: ANN001
    done = subprocess.run(
        [sys.executable, "-m", "infinipot_ros.ask_cli", "hello?", "--wait", "1", *args],
        cwd=harness.REPO, env=harness.ros_env(harness.domain_id(62)), capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 64 and complaint in done.stderr, (done.returncode, done.stderr)


def test_demo_runs_and_exits_cleanly(harness) -> None:  # noqa: ANN001
    done = subprocess.run(
        [sys.executable, "-m", "infinipot_eval.demo"],
        cwd=harness.REPO, env=harness.ros_env(harness.domain_id(71)), capture_output=True, text=True,
        timeout=170,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Q: What colour was the" in out and "\nA: " in out and "latency" in out
    assert "right answer:" in out and "cache:" in out and "Traceback" not in out
    # the question comes after two objects came and went, with a 64-token memory: it has been compressed
    compressions = int(out.split(" compressions evicted")[0].rsplit(" ", 1)[-1])
    assert compressions >= 1, out
