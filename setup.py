"""pip install of the Python side of infinipot_ros (engine, node, evaluation tools and their commands).

On a ROS 2 install, `colcon build` uses CMakeLists.txt instead (it also generates the interfaces); in the
plain virtual environment made by `make setup`, CMake generates only the interfaces and this file installs
the Python packages and console commands into `.venv/bin`.
"""
from setuptools import setup

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
    ],
    entry_points={
        "console_scripts": [
            "infinipot_node = infinipot_ros.node:main",
            "infinipot-ask = infinipot_ros.ask_cli:main",
            "infinipot_synthetic_camera = infinipot_ros.synthetic_camera:main",
            "infinipot-demo = infinipot_ros.demo:main",
            "infinipot-bench = infinipot.bench:main",
            "infinipot-train = infinipot.train:main",
            "infinipot-synth = infinipot_eval.synth_cli:main",
            "infinipot-eval = infinipot_eval.eval_cli:main",
            "infinipot_bag_player = infinipot_eval.bag_player:main",
            "infinipot-stress = infinipot_ros.stress:main",
        ]
    },
)
