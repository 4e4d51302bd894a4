"""The same parameters give the same hard cap offline (`infinipot-eval`) and in the node.

Both size the store the same way (|M| plus a reserve for the longest question and answer), from one set of
defaults: the node's parameters. Measured through the CLI's report.json and a real node's ~/cache_stats.
"""
from __future__ import annotations

import json
import os

from infinipot_eval.eval_cli import main as eval_main
from infinipot_eval.stress import NodeProcess

MODEL = "builtin:tiny-qwen2-vl"
BUDGET = 64


def _node_cap(topic: str) -> int:
    import importlib.util
    from pathlib import Path

    from infinipot_ros.msg import CacheStats

    spec = importlib.util.spec_from_file_location("ros_client", Path(__file__).parents[1] / "ros_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    domain = 150 + os.getpid() % 50
    node = NodeProcess(["-p", f"model:={MODEL}", "-p", f"cameras:=['{topic}']", "-p", f"budget_tokens:={BUDGET}",
                        "-p", "stats_period_s:=0.2"], domain)
    ros = module.RosClient(domain, name="cap_probe")
    try:
        stats = ros.subscribe(CacheStats, "/infinipot/cache_stats")
        assert ros.spin_until(lambda: any(s.kv_cap_bytes for s in stats), 120.0), node.output()[-3000:]
        return next(s.kv_cap_bytes for s in stats if s.kv_cap_bytes)
    finally:
        ros.close()
        node.stop()


def test_same_budget_same_cap_offline_and_in_the_node(short_bag, tmp_path):
    report = tmp_path / "report"
    assert eval_main(["--bag", str(short_bag), "--policy", "infinipot", "--budget", str(BUDGET),
                      "--model", MODEL, "--report", str(report), "--quiet"]) == 0
    offline_caps = set(_caps(json.loads((report / "report.json").read_text())))
    live_cap = _node_cap("/camera/image_raw")  # the synthetic bag's topic
    assert offline_caps == {live_cap}, f"offline {offline_caps} B, node {live_cap} B"


def _caps(doc: object) -> list[int]:
    """Every run's cap_bytes in a report document (wherever the report nests its runs)."""
    if isinstance(doc, dict):
        found = [doc["cap_bytes"]] if isinstance(doc.get("cap_bytes"), int) else []
        return found + [c for key, v in doc.items() if key != "cap_bytes" for c in _caps(v)]
    if isinstance(doc, list):
        return [c for v in doc for c in _caps(v)]
    return []
