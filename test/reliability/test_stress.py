"""`infinipot-stress` at small scale (the 10-minute run is done by hand; see its module docs)."""
from __future__ import annotations

import json
import subprocess
import sys

from infinipot_eval.stress import REPO, percentile, rss_growth


def test_percentile_and_rss_growth_windows() -> None:
    assert percentile([], 50) is None and percentile([1.0, 2.0, 3.0], 50) == 2.0
    flat = [(float(t), 100.0) for t in range(0, 300)]
    ratio, window = rss_growth(flat, 300)
    assert ratio == 1.0 and window.startswith("last minute")
    growing = [(float(t), 100.0 + t) for t in range(0, 30)]
    ratio, window = rss_growth(growing, 30)
    assert ratio > 1.0 and "third" in window and "shorter than 3 min" in window


def test_small_stress_run_keeps_every_invariant(tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "stress.json"
    done = subprocess.run(
        [sys.executable, "-m", "infinipot_eval.stress", "--cameras", "2", "--hz", "10", "--seconds", "20",
         "--clients", "2", "--malformed-share", "0.2", "--json", str(out), "--domain", "231"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    s = json.loads(out.read_text())
    assert s["crashes"] == 0 and s["node_exit_code"] == 0 and s["node_shutdown_s"] < 5.0
    assert s["requests"] == s["answered"] + s["refused"] and s["requests"] > 10 and s["answered"] > 0
    assert s["no_response"] == 0
    assert 0 < s["max_queue_depth"] <= s["queue_bound"]
    assert 0 < s["kv_bytes_max"] <= s["kv_cap_bytes"]
    assert s["malformed_sent"] > 20
    if s["transport_lost"] == 0:
        assert s["malformed_rejected"] == s["malformed_sent"], s["malformed_accounting"]
    else:  # best-effort transport lost some messages: the explanation and the bound must hold
        assert s["malformed_sent"] - s["transport_lost"] <= s["malformed_rejected"] <= s["malformed_sent"]
    assert s["rss_growth_ratio"] is not None and 0.5 < s["rss_growth_ratio"] < 1.5
    assert "third" in s["rss_window"]
    assert s["latency_p50_s"] <= s["latency_p95_s"]
    assert (tmp_path / "stress.png").stat().st_size > 10_000
