"""Shared fixtures of the evaluation tests: small real bags and one tiny model for the whole session."""
from __future__ import annotations

from pathlib import Path

import pytest

from infinipot_eval.synth_cli import synthesize


@pytest.fixture(scope="session")
def short_bag(tmp_path_factory) -> Path:
    """A 40 s synthetic mcap bag (4 fps, 56 px) with its questions.yaml."""
    out = tmp_path_factory.mktemp("bags") / "short"
    synthesize(out, seconds=40, seed=11, fps=4, size=56, storage="mcap", max_questions=12)
    return out


@pytest.fixture(scope="session")
def tiny_adapter():
    """The builtin tiny Qwen2-VL (random weights, real architecture), loaded once."""
    from infinipot.adapters.loading import load_adapter

    return load_adapter("builtin:tiny-qwen2-vl")
