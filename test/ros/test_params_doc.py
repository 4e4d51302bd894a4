"""The README's parameter table and config/robot.yaml must list every declared node parameter."""
from __future__ import annotations

from pathlib import Path

import yaml

from infinipot_ros.parameters import PARAMETERS
from infinipot_ros.params_doc import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_holds_the_generated_parameter_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "regenerate with: python -m infinipot_ros.params_doc"


def test_robot_yaml_sets_every_declared_parameter() -> None:
    params = yaml.safe_load((ROOT / "config" / "robot.yaml").read_text())["infinipot"]["ros__parameters"]
    declared = {spec.name for spec in PARAMETERS}
    assert declared == set(params), f"missing: {declared - set(params)}, unknown: {set(params) - declared}"
