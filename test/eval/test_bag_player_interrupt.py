"""Ctrl-C (or SIGTERM) on `infinipot_bag_player` ends playback cleanly: exit 0, no traceback.

rclpy's own signal handler shuts the context down on SIGINT and SIGTERM; whether Python also raises
KeyboardInterrupt depends on timing and on how the player was started (a shell's background job inherits
SIGINT ignored, so only rclpy's handler runs). The player used to die there with an RCLError traceback from
its next publish; both paths are exercised deterministically here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest


def _background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `infinipot_bag_player ... &` in a script inherits


@pytest.mark.parametrize("sig, preexec", [(signal.SIGINT, None), (signal.SIGINT, _background_job),
                                          (signal.SIGTERM, None)], ids=["SIGINT", "SIGINT-background", "SIGTERM"])
def test_signal_stops_the_looping_player_without_a_traceback(short_bag, sig, preexec) -> None:  # noqa: ANN001
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen([sys.executable, "-m", "infinipot_eval.bag_player", "--bag", str(short_bag), "--loop"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=preexec)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "playing" not in line and time.monotonic() < deadline:  # publishing has begun
            line = proc.stdout.readline()  # type: ignore[union-attr]
        time.sleep(1.0)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in out and "RCLError" not in out, (proc.returncode, out[-3000:])
