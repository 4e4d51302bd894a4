"""The issue's literal commands: `infinipot-synth --seconds N --out DIR` (seed defaults to 0) and
`infinipot-eval --bag DIR --questions FILE --policy ... --budget B` (report defaults to DIR/report)."""
from __future__ import annotations

import json
from pathlib import Path

from infinipot_eval import eval_cli, synth_cli


def test_synth_and_eval_run_with_only_the_required_options(tmp_path: Path) -> None:
    bag = tmp_path / "s"
    assert synth_cli.main(["--seconds", "20", "--out", str(bag), "--quiet"]) == 0
    assert (bag / "questions.yaml").is_file()
    code = eval_cli.main(["--bag", str(bag), "--questions", str(bag / "questions.yaml"),
                          "--policy", "full,infinipot", "--budget", "64", "--model", "builtin:tiny-qwen2-vl"])
    assert code == 0
    report = json.loads((bag / "report" / "report.json").read_text())
    assert {(r["policy"], r["budget"]) for r in report["results"]} == {("full", None), ("infinipot", 64)}
    assert (bag / "report" / "report.md").is_file() and (bag / "report" / "kv_memory.png").is_file()
