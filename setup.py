"""pip install of the Python side of infinipot_ros (engine, node, evaluation tools and their commands).

On a ROS 2 install, `colcon build` uses CMakeLists.txt instead (it also generates the interfaces); in the
plain virtual environment made by `make setup`, CMake generates only the interfaces and this file installs
the Python packages and console commands into `.venv/bin`.
"""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def shipped_model_files() -> list[tuple[str, list[str]]]:
    """models/<name>/* -> <prefix>/share/infinipot_ros/models/<name>/ (where colcon installs them too)."""
    entries = []
    for folder in sorted(p for p in (HERE / "models").glob("*") if p.is_dir()):
        files = sorted(str(f.relative_to(HERE)) for f in folder.iterdir() if f.is_file())
        entries.append((f"share/infinipot_ros/models/{folder.name}", files))
    return entries


setup(
    name="infinipot",  # not "infinipot_ros": that distribution name belongs to the rosidl-generated interfaces
    version="0.1.0",
    description="Streaming VLM video memory with InfiniPot-V KV-cache compression, as a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "infinipot",
        "infinipot.adapters",
        "infinipot.scorers",
        "infinipot_ros",
        "infinipot_eval",
        "infinipot_train",
    ],
    data_files=shipped_model_files(),
    entry_points={
        "console_scripts": [
            "infinipot_node = infinipot_ros.node:main",
            "infinipot-ask = infinipot_ros.ask_cli:main",
            "infinipot_synthetic_camera = infinipot_eval.synthetic_camera:main",
            "infinipot-demo = infinipot_eval.demo:main",
            "infinipot-bench = infinipot.bench:main",
            "infinipot-train = infinipot_train.train:main",
            "infinipot-model-eval = infinipot_train.model_eval:main",
            "infinipot-synth = infinipot_eval.synth_cli:main",
            "infinipot-eval = infinipot_eval.eval_cli:main",
            "infinipot-eval-suite = infinipot_eval.suite:main",
            "infinipot_bag_player = infinipot_eval.bag_player:main",
            "infinipot-stress = infinipot_eval.stress:main",
            "infinipot-bag-from-media = infinipot_eval.bag_from_media:main",
        ]
    },
)
