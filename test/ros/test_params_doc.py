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


def test_ask_video_camera_field_doc_matches_how_the_node_names_cameras() -> None:
    """The `camera` field takes a camera *name* (camera_names, or derived from the topic), not a topic."""
    import re

    from infinipot_ros.parameters import camera_name_for

    lines = (ROOT / "srv" / "AskVideo.srv").read_text().splitlines()
    field = next(i for i, line in enumerate(lines) if line.split() == ["string", "camera"])
    doc = []
    for line in reversed(lines[:field]):
        if not line.startswith("#"):
            break
        doc.insert(0, line.lstrip("# "))
    text = " ".join(doc)
    assert "camera_names" in text, text
    examples = re.findall(r"(/[\w/]+) -> (\w+)", text)
    assert examples, text
    for topic, name in examples:
        assert camera_name_for(topic) == name, (topic, name)
