"""Live replay through the real node process and /ask_video (one short run: it costs real time)."""
from __future__ import annotations

import pytest

from infinipot_eval.live import node_command, run_live
from infinipot_eval.questions import load_questions
from infinipot_eval.replay import RunSpec, summarise
from infinipot_eval.synth_cli import synthesize


def test_node_command_sets_the_run_parameters():
    cmd = node_command(RunSpec("full", None), topic="/cam", model="builtin:tiny-qwen2-vl", sample_hz=2.0,
                       max_new_tokens=4)
    assert cmd[1:4] == ["-m", "infinipot_ros.node", "--ros-args"]
    assert "policy:=full" in cmd and "budget_tokens:=0" in cmd and "cameras:=['/cam']" in cmd
    assert "dtype:=float32" in cmd and "device:=cpu" in cmd
    gpu = node_command(RunSpec("infinipot", 64), topic="/cam", model="m", sample_hz=2.0, max_new_tokens=4,
                       dtype="bfloat16", device="cuda:1")
    assert "dtype:=bfloat16" in gpu and "device:=cuda:1" in gpu and "budget_tokens:=64" in gpu


@pytest.mark.timeout(180)
def test_live_run_answers_every_question_within_the_cap(tmp_path):
    bag = tmp_path / "live"
    synthesize(bag, seconds=16, seed=4, fps=4, size=48, max_questions=4)
    qset = load_questions(bag / "questions.yaml")
    assert len(qset) >= 2
    run = run_live(bag, qset.bag.topic, list(qset.questions), RunSpec("infinipot", 32),
                   model="builtin:tiny-qwen2-vl", sample_hz=2.0, max_new_tokens=4, rate=4.0)
    summary = summarise(run)
    assert run.messages == 64
    assert summary["n_questions"] == len(qset) and summary["errors"] == 0, summary["answers"]
    assert all(a["prediction"] and a["answer_ms"] >= a["ttft_ms"] for a in summary["answers"])
    for a in summary["answers"]:  # memory span in stream seconds, ending before the question was sent
        assert 0 <= a["memory_start"] <= a["memory_end"] <= a["asked_at_s"]
    assert summary["cap_bytes"] and summary["kv_bytes_over_time"]
    assert summary["peak_kv_bytes"] <= summary["cap_bytes"]
