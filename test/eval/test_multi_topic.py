"""Multi-topic evaluation: every topic of a question file is replayed and scored, or the question is named.

A bag with two cameras (two synthetic worlds) and one question file about both; plus a question about a
topic the bag does not have. Through the `infinipot-eval` command to report.json, offline and live.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Writer

from infinipot_eval.bagio import IMAGE_TYPE, make_image_msg, typestore
from infinipot_eval.question_gen import make_question_set
from infinipot_eval.questions import BagInfo, Question, QuestionSet, save_questions
from infinipot_eval.replay import RunSpec, replay, summarise
from infinipot_eval.synth_cli import BAG_START_NS
from infinipot_eval.world import World

MODEL = "builtin:tiny-qwen2-vl"
EVAL = str(Path(sys.prefix) / "bin" / "infinipot-eval")
LEFT, RIGHT, GONE = "/cam/left", "/cam/right", "/cam/gone"


@pytest.fixture(scope="module")
def two_camera_bag(tmp_path_factory) -> tuple[Path, QuestionSet]:
    out = tmp_path_factory.mktemp("multi") / "bag"
    fps, seconds = 4, 16
    worlds = {LEFT: World(seed=21, seconds=seconds, fps=fps, size=48),
              RIGHT: World(seed=22, seconds=seconds, fps=fps, size=48)}
    store = typestore()
    with Writer(out, version=9) as writer:
        conns = {t: writer.add_connection(t, IMAGE_TYPE, typestore=store) for t in worlds}
        for i in range(worlds[LEFT].num_frames):  # interleaved, as a recorder writes two cameras
            for topic, world in worlds.items():
                stamp = BAG_START_NS + round(i * 1e9 / fps) + (0 if topic == LEFT else 1_000_000)
                writer.write(conns[topic], stamp, store.serialize_cdr(make_image_msg(world.frame(i), stamp),
                                                                        IMAGE_TYPE))
    questions = []
    for topic, world in worlds.items():
        qs = make_question_set(world, topic=topic, max_questions=3).questions
        questions += [dataclasses.replace(q, id=f"{topic.rsplit('/', 1)[1]}-{q.id}") for q in qs]
    questions.append(Question(id="gone-1", topic=GONE, time=5.0, question="Did you see a ball?", answers=["no"]))
    qset = QuestionSet(BagInfo(topic=LEFT, fps=fps, seconds=seconds), tuple(sorted(questions, key=lambda q: q.time)))
    save_questions(qset, out / "questions.yaml")
    return out, qset


def _eval(*args: str, timeout: float = 280) -> subprocess.CompletedProcess:
    return subprocess.run([EVAL, "--model", MODEL, "--policy", "infinipot", "--budget", "32",
                           "--max-new-tokens", "4", "--quiet", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS="1"))


def _by_topic(qset: QuestionSet, topic: str) -> list[str]:
    return sorted(q.id for q in qset.questions if q.topic == topic)


def _check(doc: dict, qset: QuestionSet, stderr: str) -> dict:
    (entry,) = doc["results"]
    assert entry["topics"] == [LEFT, RIGHT]
    assert entry["n_questions"] == len(qset) - 1 and entry["errors"] == 0, entry["answers"]
    for topic in (LEFT, RIGHT):
        ids = sorted(a["id"] for a in entry["answers"] if a["topic"] == topic)
        assert ids == _by_topic(qset, topic) and len(ids) >= 2
        per = entry["per_topic"][topic]
        assert per["n_questions"] == len(ids) and per["messages"] == 64
        assert per["peak_kv_bytes"] <= per["cap_bytes"]
    # the node's total memory: two cameras, two caps
    assert entry["cap_bytes"] == sum(entry["per_topic"][t]["cap_bytes"] for t in (LEFT, RIGHT))
    assert entry["messages"] == 128
    assert doc["skipped_questions"] == [{"id": "gone-1", "topic": GONE, "reason": "not an image topic of the bag"}]
    assert "gone-1 (/cam/gone)" in stderr and "warning" in stderr
    return entry


@pytest.mark.timeout(300)
def test_offline_scores_every_topic_into_one_report(two_camera_bag, tmp_path, tiny_adapter):
    bag, qset = two_camera_bag
    done = _eval("--bag", str(bag), "--report", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    entry = _check(doc, qset, done.stderr)
    assert doc["meta"]["topics"] == [LEFT, RIGHT]
    # each topic's numbers are that camera's own replay, the combined accuracy covers both
    right = summarise(replay(bag, RIGHT, qset.questions, tiny_adapter, RunSpec("infinipot", 32),
                             max_new_tokens=4), include_answers=False)
    assert entry["per_topic"][RIGHT]["peak_kv_bytes"] == right["peak_kv_bytes"]
    assert entry["per_topic"][RIGHT]["frames_sampled"] == right["frames_sampled"] == 32
    correct = sum(a["correct"] for a in entry["answers"])
    assert entry["accuracy"] == pytest.approx(correct / entry["n_questions"])


@pytest.mark.timeout(120)
def test_topic_option_names_the_questions_it_skips(two_camera_bag, tmp_path):
    bag, qset = two_camera_bag
    done = _eval("--bag", str(bag), "--topic", RIGHT, "--report", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    (entry,) = doc["results"]
    assert entry["topics"] == [RIGHT] and "per_topic" not in entry
    assert sorted(a["id"] for a in entry["answers"]) == _by_topic(qset, RIGHT)
    skipped = {s["id"]: s["reason"] for s in doc["skipped_questions"]}
    assert sorted(skipped) == sorted(_by_topic(qset, LEFT) + ["gone-1"])
    assert skipped["gone-1"] == "not an image topic of the bag"
    assert all(skipped[i] == f"--topic {RIGHT} was asked for" for i in _by_topic(qset, LEFT))
    for qid in skipped:
        assert qid in done.stderr


@pytest.mark.timeout(300)
def test_live_lockstep_scores_every_topic_into_one_report(two_camera_bag, tmp_path):
    bag, qset = two_camera_bag
    done = _eval("--live", "--lockstep", "--bag", str(bag), "--report", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    _check(doc, qset, done.stderr)
