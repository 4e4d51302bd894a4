"""`infinipot-eval-suite`: bags per seed, pooled accuracy per policy × budget, per-bag entries kept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from infinipot_eval import suite


def _run(policy: str, budget: int | None, answers: list[tuple[tuple[str, ...], bool]], peak: int) -> dict:
    return {"policy": policy, "budget": budget, "n_questions": len(answers), "peak_kv_bytes": peak,
            "cap_bytes": 100, "ttft_ms_mean": 10.0 if peak > 1 else 20.0,
            "answers": [{"tags": list(tags), "correct": ok} for tags, ok in answers]}


def test_pooling_counts_every_answer_once() -> None:
    bag1 = [_run("full", None, [(("colour", "recent"), True), (("order", "long_range"), False)], 5),
            _run("infinipot", 64, [(("colour", "recent"), True), (("order", "long_range"), True)], 2)]
    bag2 = [_run("full", None, [(("colour", "long_range"), True)], 9),
            _run("infinipot", 64, [(("colour", "long_range"), False)], 1)]
    pooled = {(p["policy"], p["budget"]): p for p in suite.pool_results([bag1, bag2])}
    full, inf = pooled[("full", None)], pooled[("infinipot", 64)]
    assert full["n_questions"] == 3 and full["accuracy"] == pytest.approx(2 / 3)
    assert full["accuracy_by_tag"]["long_range"] == pytest.approx(0.5)
    assert full["n_by_tag"] == {"colour": 2, "long_range": 2, "order": 1, "recent": 1}
    assert inf["accuracy"] == pytest.approx(2 / 3) and inf["accuracy_by_tag"]["colour"] == pytest.approx(0.5)
    assert full["peak_kv_bytes"] == 9 and inf["peak_kv_bytes"] == 2 and full["bags"] == 2
    assert inf["ttft_ms_mean"] == pytest.approx(15.0)


def test_pooled_evidence_hit_rate_counts_judged_answers_only() -> None:
    def run(hits: list[tuple[tuple[str, ...], bool | None]]) -> dict:
        entry = _run("infinipot", 64, [(tags, True) for tags, _ in hits], 1)
        for answer, (_tags, hit) in zip(entry["answers"], hits):
            answer["evidence_hit"] = hit
        return entry

    bag1 = [run([(("when", "long_range"), True), (("colour", "recent"), None)])]
    bag2 = [run([(("when", "long_range"), False), (("colour", "long_range"), True)])]
    (pooled,) = suite.pool_results([bag1, bag2])
    assert pooled["evidence_hit_rate"] == pytest.approx(2 / 3)
    assert pooled["evidence_hit_rate_by_tag"] == pytest.approx({"colour": 1.0, "long_range": 2 / 3, "when": 0.5})
    (none,) = suite.pool_results([[run([(("colour", "recent"), None)])]])
    assert none["evidence_hit_rate"] is None and none["evidence_hit_rate_by_tag"] == {}


def test_seed_specs() -> None:
    assert suite.parse_seeds("3-5,9,4") == [3, 4, 5, 9]
    with pytest.raises(ValueError):
        suite.parse_seeds("5-3")
    with pytest.raises(ValueError):
        suite.parse_seeds(" , ")


def test_suite_writes_pooled_report_over_real_bags(tmp_path: Path) -> None:
    out = tmp_path / "suite"
    args = ["--seeds", "300-301", "--seconds", "20", "--policy", "full,infinipot", "--budget", "24",
            "--out", str(out), "--quiet"]
    assert suite.main(args) == 0
    doc = json.loads((out / "report.json").read_text())
    per_bag = doc["per_bag"]
    assert [Path(b["bag"]).name for b in per_bag] == ["seed300_20s", "seed301_20s"]
    pooled = {(r["policy"], r["budget"]): r for r in doc["results"]}
    assert set(pooled) == {("full", None), ("infinipot", 24)}
    for key, entry in pooled.items():
        runs = [r for b in per_bag for r in b["results"] if (r["policy"], r["budget"]) == key]
        assert entry["n_questions"] == sum(r["n_questions"] for r in runs) > 0
        right = sum(r["accuracy"] * r["n_questions"] for r in runs)
        assert entry["accuracy"] == pytest.approx(right / entry["n_questions"])
    assert pooled[("infinipot", 24)]["peak_kv_bytes"] <= pooled[("infinipot", 24)]["cap_bytes"]
    for entry in pooled.values():
        assert isinstance(entry["evidence_hit_rate"], float) and 0.0 <= entry["evidence_hit_rate"] <= 1.0
        assert isinstance(entry["evidence_hit_rate_by_tag"], dict) and entry["evidence_hit_rate_by_tag"]
        assert entry["memory_timeline"]["frames"]  # the first bag's memory at the end of its stream
    assert all("evidence_hit_rate" in r for b in per_bag for r in b["results"])
    assert (out / "report.md").is_file() and (out / "accuracy_vs_budget.png").is_file()
    assert (out / "memory_timeline.png").read_bytes()[:4] == b"\x89PNG"
    # a second run reuses the bags (same questions) instead of writing them again
    before = (out / "bags" / "seed300_20s" / "questions.yaml").stat().st_mtime_ns
    assert suite.main(args) == 0
    assert (out / "bags" / "seed300_20s" / "questions.yaml").stat().st_mtime_ns == before
