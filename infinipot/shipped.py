"""Where the models that ship with this repository live, wherever it was installed.

Why: the node's default model is the small checkpoint trained on the synthetic world
(`models/infinipot-tiny-qwen2vl`, see its model card). Users name it by its bare name; it is found in the
source checkout, in `<prefix>/share/infinipot_ros/models` (pip's data files in a venv, or `colcon build`'s
install space, found through AMENT_PREFIX_PATH), or in `$INFINIPOT_MODELS_DIR`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "SHIPPED_MODELS", "shipped_model_path"]

DEFAULT_MODEL = "infinipot-tiny-qwen2vl"
SHIPPED_MODELS = (DEFAULT_MODEL,)


def _model_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("INFINIPOT_MODELS_DIR"):
        dirs.append(Path(os.environ["INFINIPOT_MODELS_DIR"]))
    dirs.append(Path(__file__).resolve().parents[1] / "models")  # source checkout
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [Path(prefix) / "share" / "infinipot_ros" / "models" for prefix in prefixes]
    return dirs


def shipped_model_path(name: str) -> Path | None:
    """The folder of the shipped model `name`, or None if `name` is not one (or it cannot be found)."""
    if name not in SHIPPED_MODELS:
        return None
    for folder in _model_dirs():
        if (folder / name / "config.json").is_file():
            return folder / name
    return None
