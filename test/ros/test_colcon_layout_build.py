"""The full CMake build that `colcon build` runs on a ROS 2 install: interfaces + node + engine in one go.

The same CMakeLists.txt built with plain CMake against the venv (which the ROS wheels lay out like
/opt/ros/<distro>); test_colcon_build.py runs the real `colcon build`. This checks that one package really
installs the generated interfaces, the hand-written node merged into the same Python package, the engine, the
executables for `ros2 run`/launch, and launch/config/models under share/.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_full_cmake_build_installs_interfaces_node_engine_and_share_files(tmp_path: Path, harness) -> None:  # noqa: ANN001
    venv = Path(sys.prefix)
    src, build, install = tmp_path / "src", tmp_path / "build", tmp_path / "install"
    harness.copy_tracked_sources(src)  # CMake refuses include paths inside the source dir (the venv)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv))
    common = [f"-DCMAKE_PREFIX_PATH={venv}", f"-DCMAKE_INSTALL_PREFIX={install}",
              f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"]
    for cmd in (["cmake", "-S", str(src), "-B", str(build), *common],
                ["cmake", "--build", str(build), "-j2", "--target", "install"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    share = install / "share" / "infinipot_ros"
    for rel in ("package.xml", "launch/robot.launch.py", "config/robot.yaml"):
        assert (share / rel).is_file(), rel
    for exe in ("infinipot_node", "infinipot_synthetic_camera", "infinipot-ask", "infinipot_bag_player"):
        assert os.access(install / "lib" / "infinipot_ros" / exe, os.X_OK), exe

    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    probe = (
        "import infinipot_ros.node, infinipot.session, infinipot_eval.world, infinipot_train.train\n"
        "from infinipot_ros.srv import AskVideo\n"
        "from infinipot_ros.msg import CacheStats, VideoAnswer\n"
        "import sys; print(infinipot_ros.node.__file__, infinipot.session.__file__, sys.modules[AskVideo.__module__].__file__)\n"
    )
    run_env = dict(env, PYTHONPATH=str(site),
                   LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=run_env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for loaded_from in done.stdout.split():  # the node, the engine and the generated service type
        assert loaded_from.startswith(str(site)), done.stdout
