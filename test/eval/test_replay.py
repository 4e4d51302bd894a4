"""Offline replay end to end with the tiny model: report files, fields, on-time questions, the hard cap."""
from __future__ import annotations

import json

import pytest

from infinipot_eval import eval_cli
from infinipot_eval.questions import load_questions
from infinipot_eval.replay import RunSpec, replay, run_specs, summarise
from infinipot_eval.synth_cli import synthesize

REQUIRED = {"policy": str, "budget": (int, type(None)), "n_questions": int, "accuracy": (float, type(None)),
            "accuracy_by_tag": dict, "peak_kv_bytes": int, "cap_bytes": (int, type(None)),
            "kv_bytes_over_time": list, "ttft_ms_mean": (float, type(None)), "answer_ms_p95": (float, type(None))}


def test_run_specs_full_runs_once():
    specs = run_specs(["full", "infinipot", "uniform"], [64, 128])
    assert specs == [RunSpec("full", None), RunSpec("infinipot", 64), RunSpec("infinipot", 128),
                     RunSpec("uniform", 64), RunSpec("uniform", 128)]
    with pytest.raises(ValueError):
        run_specs(["infinipot"], [])


def test_eval_cli_writes_report(short_bag, tmp_path, monkeypatch, tiny_adapter):
    # the CLI loads the model itself; reuse the session's tiny model to keep the test fast
    import infinipot.adapters.loading as loading

    monkeypatch.setattr(loading, "load_adapter", lambda *a, **k: tiny_adapter)
    out = tmp_path / "report"
    rc = eval_cli.main(["--bag", str(short_bag), "--questions", str(short_bag / "questions.yaml"),
                        "--policy", "full,infinipot,sliding_window", "--budget", "24,48", "--report", str(out),
                        "--sample-hz", "2", "--max-new-tokens", "4", "--quiet"])
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    results = doc["results"]
    assert [(r["policy"], r["budget"]) for r in results] == [
        ("full", None), ("infinipot", 24), ("infinipot", 48), ("sliding_window", 24), ("sliding_window", 48)]
    qset = load_questions(short_bag / "questions.yaml")
    tags = {t for q in qset for t in q.tags}
    for r in results:
        for key, typ in REQUIRED.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert r["n_questions"] == len(qset) > 0
        assert set(r["accuracy_by_tag"]) == tags
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["peak_kv_bytes"] == max(b for _t, b in r["kv_bytes_over_time"])
        assert r["frames_sampled"] == 80 and r["messages"] == 160  # 40 s at 4 fps, sampled at 2 Hz
        for ans in r["answers"]:
            assert ans["error"] is None and ans["asked_at_s"] <= ans["time"] < ans["asked_at_s"] + 0.5
            assert ans["ttft_ms"] <= ans["answer_ms"]
        _check_evidence(r, {q.id: q for q in qset}, len(tiny_adapter.prefix_token_ids()))
    full, capped = results[0], results[1]
    assert full["cap_bytes"] is None and full["compressions"] == 0
    assert capped["cap_bytes"] and capped["compressions"] > 0
    assert capped["peak_kv_bytes"] < full["peak_kv_bytes"]
    md = (out / "report.md").read_text()
    assert "| infinipot | 24 |" in md and "long_range" in md
    assert "| evidence hit |" in md
    for png in ("kv_memory.png", "accuracy_vs_budget.png", "memory_timeline.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_evidence(r: dict, questions: dict, prefix: int) -> None:
    """evidence_hit of every answer recomputed from its evidence and its question's spans (± 0.5 s at 2 Hz);
    evidence_hit_rate(_by_tag) the share of those hits; `when` questions scored on that hit."""
    judged, by_tag = [], {}
    for ans in r["answers"]:
        q = questions[ans["id"]]
        weights = [w for _s, _e, w in ans["evidence"]]
        assert 1 <= len(weights) <= 5 and weights == sorted(weights, reverse=True) and sum(weights) <= 1 + 1e-6
        start, end = ans["evidence"][0][:2]
        expected = any(start <= hi + 0.5 and end >= lo - 0.5 for lo, hi in q.evidence) if q.evidence else None
        assert ans["evidence_hit"] == expected
        if q.kind == "when":
            assert ans["correct"] == bool(expected)
        if expected is not None:
            judged.append(expected)
            for tag in q.tags:
                by_tag.setdefault(tag, []).append(expected)
    assert r["evidence_hit_rate"] == pytest.approx(sum(judged) / len(judged))
    assert r["evidence_hit_rate_by_tag"] == pytest.approx({t: sum(v) / len(v) for t, v in by_tag.items()})
    timeline = r["memory_timeline"]
    tokens = sum(t for _s, _e, t in timeline["frames"])
    assert tokens == pytest.approx(r["tokens_held_over_time"][-1][1] - prefix)
    assert timeline["frames"] and timeline["at_s"] == r["stream_seconds"]
    assert all(len(span) == 2 for span in timeline["evidence_spans"])


def test_cli_reports_bad_input(short_bag, tmp_path, capsys):
    assert eval_cli.main(["--bag", str(short_bag), "--report", str(tmp_path), "--topic", "/other",
                          "--policy", "full", "--quiet"]) == 2
    assert "no image topic '/other'" in capsys.readouterr().err


def test_capped_kv_never_exceeds_cap_while_full_grows(tmp_path, tiny_adapter):
    bag = tmp_path / "long"
    _, qset = synthesize(bag, seconds=150, seed=21, fps=2, size=32, max_questions=4)
    runs = {}
    for spec in (RunSpec("full", None), RunSpec("infinipot", 32), RunSpec("uniform", 32)):
        runs[spec.policy] = replay(bag, qset.bag.topic, qset.questions, tiny_adapter, spec, sample_hz=2.0,
                                   max_new_tokens=2)
    full = [s.kv_bytes for s in runs["full"].steps]
    assert len(full) == 300
    assert all(b >= a for a, b in zip(full, full[1:])) and full[-1] > 10 * full[0]
    for policy in ("infinipot", "uniform"):
        run = runs[policy]
        assert run.cap_bytes and run.cap_bytes < full[-1]
        assert len(run.steps) == 300
        assert all(s.kv_bytes <= run.cap_bytes for s in run.steps)
        assert run.steps[-1].compressions >= 30
        summary = summarise(run)
        assert summary["peak_kv_bytes"] <= summary["cap_bytes"]
