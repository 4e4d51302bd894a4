"""Start the infinipot node with config/robot.yaml; a few launch arguments override it.

    ros2 launch infinipot_ros robot.launch.py
    ros2 launch infinipot_ros robot.launch.py model:=Qwen/Qwen2-VL-2B-Instruct budget_tokens:=2048 \
        cameras:="['/front/image_raw', '/rear/image_raw/compressed']"

A launch argument left empty keeps the value from the YAML file (parameters given after the file win).
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

#: Launch argument → (node parameter, type used to parse the text, help).
OVERRIDES = {
    "model": (str, "Model id or path (empty = config file)."),
    "cameras": (list, "Image topics as a YAML list, e.g. \"['/front/image_raw']\" (empty = config file)."),
    "budget_tokens": (int, "KV threshold in tokens (empty = config file)."),
    "budget_mb": (float, "KV threshold in MiB (empty = config file)."),
    "policy": (str, "Compression policy (empty = config file)."),
}


def _node(context, *args, **kwargs):  # noqa: ANN001, ANN202 - launch's OpaqueFunction signature
    import yaml

    overrides = {}
    for name, (kind, _help) in OVERRIDES.items():
        text = LaunchConfiguration(name).perform(context)
        if text == "":
            continue
        value = yaml.safe_load(text) if kind is list else kind(text)
        if kind is list and not isinstance(value, list):
            value = [str(value)]
        overrides[name] = value
    params = [LaunchConfiguration("params_file").perform(context)]
    if overrides:
        params.append(overrides)
    return [
        Node(
            package="infinipot_ros",
            executable="infinipot_node",
            name="infinipot",
            output="screen",
            emulate_tty=True,
            parameters=params,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("infinipot_ros"), "config", "robot.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node's parameters."),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=help_text)
        for name, (_kind, help_text) in OVERRIDES.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
