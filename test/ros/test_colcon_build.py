"""A real `colcon build` of this package (colcon from PyPI) in a temporary workspace, then the node it installed.

Why on top of test_colcon_layout_build.py (plain CMake): colcon is what users run, and it does things plain
CMake does not: package discovery from package.xml, the ament_cmake build type of colcon-ros, the install
space's setup scripts (`install/setup.bash` sets AMENT_PREFIX_PATH, PYTHONPATH, PATH). The workspace builds
over the venv as its underlay (the venv is laid out like /opt/ros/<distro>; it has no `local_setup.*`, so
colcon warns and goes on, as it does for any plain prefix). The node is then started from `install/`, with
the environment `install/setup.bash` gives, and answers a question about frames sent to it.

The build runs once for this module (about 15-30 s on 2 cores).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

VENV = Path(sys.prefix)
COLCON = VENV / "bin" / "colcon"


def _sourced_env(setup: Path, base: dict[str, str]) -> dict[str, str]:
    """The environment after `source setup` in bash (what a user's shell has)."""
    done = subprocess.run(["bash", "-c", f"source {setup} && env -0"], env=base, capture_output=True,
                          timeout=60, check=True)
    pairs = (item.split("=", 1) for item in done.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, harness) -> tuple[Path, dict[str, str]]:  # noqa: ANN001
    """`colcon build` of a copy of the package in ws/src; returns (ws, environment after install/setup.bash)."""
    assert COLCON.is_file(), "make setup installs colcon into the venv (requirements.txt)"
    ws = tmp_path_factory.mktemp("colcon_ws")
    harness.copy_tracked_sources(ws / "src" / "infinipot_ros")
    underlay = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
                    PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([str(COLCON), "build", "--event-handlers", "console_direct-",
                           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                          cwd=ws, env=underlay, capture_output=True, text=True, timeout=900)
    log = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    assert "Summary: 1 package finished" in done.stdout, log
    return ws, _sourced_env(ws / "install" / "setup.bash", underlay)


def test_colcon_discovers_the_package_and_installs_an_overlay(workspace) -> None:
    ws, env = workspace
    prefix = ws / "install" / "infinipot_ros"
    assert str(prefix) == env["AMENT_PREFIX_PATH"].split(os.pathsep)[0]  # the overlay comes first
    for rel in ("share/infinipot_ros/package.xml", "share/infinipot_ros/launch/robot.launch.py",
                "share/infinipot_ros/config/robot.yaml",
                "share/infinipot_ros/models/infinipot-tiny-qwen2vl/config.json",
                "share/ament_index/resource_index/packages/infinipot_ros"):
        assert (prefix / rel).is_file(), rel
    for exe in ("infinipot_node", "infinipot-ask", "infinipot_bag_player", "infinipot_synthetic_camera"):
        assert os.access(prefix / "lib" / "infinipot_ros" / exe, os.X_OK), exe
    probe = ("import infinipot_ros.node, infinipot.session, infinipot_eval.replay\n"
             "from infinipot_ros.srv import AskVideo\n"
             "import sys; print(infinipot_ros.node.__file__, infinipot.session.__file__,"
             " infinipot_eval.replay.__file__, sys.modules[AskVideo.__module__].__file__)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for loaded_from in done.stdout.split():  # from the install space, not the venv's pip install
        assert loaded_from.startswith(str(prefix)), done.stdout


def _frame(seed: int) -> Image:
    rng = np.random.default_rng(seed)
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 2000 + seed, 0
    msg.height, msg.width, msg.encoding, msg.step = 48, 64, "rgb8", 64 * 3
    msg.data = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8).tobytes()
    return msg


@pytest.mark.timeout(240)
def test_node_installed_by_colcon_answers(workspace, harness, tmp_path) -> None:  # noqa: ANN001
    from diagnostic_msgs.msg import DiagnosticArray

    from infinipot_eval.lockstep import NodeMonitor
    from infinipot_ros.msg import CacheStats
    from infinipot_ros.srv import AskVideo

    ws, env = workspace
    domain = harness.domain_id(37)
    exe = ws / "install" / "infinipot_ros" / "lib" / "infinipot_ros" / "infinipot_node"
    log = open(tmp_path / "node.log", "wb")  # noqa: SIM115 - closed below
    # the default model: the shipped one (share/infinipot_ros/models; the venv prefix is searched first)
    node = subprocess.Popen([str(exe), "--ros-args", "-p", "cameras:=['/colcon/image_raw']",
                             "-p", "sample_rate_hz:=0.0", "-p", "budget_tokens:=64", "-p", "stats_period_s:=0.2"],
                            cwd=tmp_path, env={**env, **{k: v for k, v in harness.ros_env(domain).items()
                                                         if k.startswith("ROS_") or k == "PYTHONUNBUFFERED"}},
                            stdout=log, stderr=subprocess.STDOUT)
    ros = harness.RosClient(domain)
    try:
        pub = ros.node.create_publisher(Image, "/colcon/image_raw", qos_profile_sensor_data)
        monitor = NodeMonitor()
        ros.node.create_subscription(CacheStats, "/infinipot/cache_stats", monitor.on_stats, 10)
        ros.node.create_subscription(DiagnosticArray, "/diagnostics", monitor.on_diagnostics, 10)
        ask = ros.node.create_client(AskVideo, "/ask_video")
        output = lambda: (tmp_path / "node.log").read_text(errors="replace")  # noqa: E731
        assert ros.spin_until(lambda: ask.service_is_ready() and pub.get_subscription_count() > 0, 90.0), output()
        assert ros.spin_until(lambda: monitor.worker.get("state") == "ready", 90.0), output()
        assert monitor.worker["model"] == "infinipot-tiny-qwen2vl"
        for i in range(4):
            pub.publish(_frame(i))
            ros.spin_for(0.1)
        ingested = lambda: monitor.counters and monitor.counters.ingested >= 4  # noqa: E731
        assert ros.spin_until(ingested, 60.0), output()
        resp = ros.call(ask, AskVideo.Request(question="What did you see?", camera="", max_new_tokens=6),
                        timeout=60.0)
        assert resp.success, resp.error_message
        assert resp.answer.strip() and resp.tokens_used > 0
    finally:
        ros.close()
        node.send_signal(signal.SIGINT)
        try:
            code = node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
            code = node.wait()
        log.close()
    out = (tmp_path / "node.log").read_text(errors="replace")
    assert code == 0 and "Traceback" not in out, out
