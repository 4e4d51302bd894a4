"""`infinipot-eval --live` end to end: the console command, the real node process, the written report.json.

Why through the command: the live replay's result must survive `write_report` (strict JSON, no inf/NaN),
which the run_live tests never reached. The lockstep case uses raw 640x480 frames at 10 Hz, the size where a
best-effort link lost whole bursts of frames and lockstep waited for them forever.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from infinipot_eval.bagio import list_image_topics, write_bag
from infinipot_eval.synth_cli import BAG_START_NS, synthesize
from infinipot_eval.world import World

MODEL = "builtin:tiny-qwen2-vl"
EVAL = str(Path(sys.prefix) / "bin" / "infinipot-eval")


def _eval(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([EVAL, "--model", MODEL, "--policy", "infinipot", "--budget", "32",
                           "--max-new-tokens", "4", "--quiet", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _check_report(report: Path, n_questions: int) -> dict:
    text = (report / "report.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in report.json"))
    (entry,) = doc["results"]
    assert entry["n_questions"] == n_questions and entry["errors"] == 0, entry["answers"]
    assert all(a["prediction"] for a in entry["answers"])
    times = [t for t, _ in entry["kv_bytes_over_time"]]
    assert times and all(math.isfinite(t) for t in times)
    assert max(times) <= entry["stream_seconds"] + 1e-6
    assert entry["cap_bytes"] and entry["peak_kv_bytes"] <= entry["cap_bytes"]
    return doc


@pytest.mark.timeout(240)
def test_live_real_time_writes_a_full_report(tmp_path):
    bag = tmp_path / "rt"
    _, qset = synthesize(bag, seconds=16, seed=4, fps=4, size=48, max_questions=4)
    done = _eval("--live", "--rate", "4", "--bag", str(bag), "--report", str(tmp_path / "out"), timeout=220)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    doc = _check_report(tmp_path / "out", len(qset))
    assert doc["meta"]["mode"] == "live" and doc["meta"]["image_qos"] == "sensor_data"
    assert doc["results"][0]["messages"] == 64
    assert 0 < doc["results"][0]["frames_received"] <= 64  # best effort: what reached the node


def _vga_bag(tmp_path: Path, seconds: float, fps: float) -> tuple[Path, int]:
    """A raw rgb8 640x480 bag at `fps` (the synthetic world's frames, resized) with its questions."""
    small = tmp_path / "small"
    _, qset = synthesize(small, seconds=seconds, seed=9, fps=fps, size=48, max_questions=3)
    world = World(seed=9, seconds=seconds, fps=fps, size=48)
    frames = ((BAG_START_NS + round(i * 1e9 / fps),
               cv2.resize(world.frame(i), (640, 480), interpolation=cv2.INTER_NEAREST))
              for i in range(world.num_frames))
    bag = tmp_path / "vga"
    write_bag(bag, frames)
    shutil.copy(small / "questions.yaml", bag / "questions.yaml")
    return bag, len(qset)


@pytest.mark.timeout(300)
def test_live_lockstep_on_raw_640x480_at_10hz_writes_a_full_report(tmp_path):
    bag, n_questions = _vga_bag(tmp_path, seconds=8, fps=10)
    assert list_image_topics(bag)[0].count == 80
    done = _eval("--live", "--lockstep", "--image-qos", "reliable", "--bag", str(bag),
                 "--report", str(tmp_path / "out"), timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    doc = _check_report(tmp_path / "out", n_questions)
    entry = doc["results"][0]
    assert doc["meta"]["mode"] == "live-lockstep" and doc["meta"]["image_qos"] == "reliable"
    assert entry["messages"] == entry["frames_received"] == 80
    assert entry["frames_sampled"] == 16  # 8 s at 2 Hz: lockstep lost nothing
