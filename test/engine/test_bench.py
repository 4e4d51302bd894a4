"""`infinipot-bench` end to end with tiny settings: JSON schema and flat memory for capped policies."""
from __future__ import annotations

import json

import pytest

from infinipot.bench import main

RUN_FIELDS = {
    "policy": str,
    "frames": int,
    "peak_kv_bytes": int,
    "ingest_ms_per_frame": float,
    "compress_ms_mean": float,
    "compress_ms_max": float,
    "compress_share": float,
    "ttft_ms": float,
    "peak_rss_bytes": int,
}


def test_bench_writes_json_and_capped_memory_is_flat(tmp_path, tiny_cache, capsys):
    out = tmp_path / "bench.json"
    code = main(
        ["--frames", "16,160", "--policy", "full,infinipot,sliding_window", "--json", str(out),
         "--model", "builtin:tiny-qwen2-vl", "--budget-tokens", "36", "--threads", "1"]
    )
    assert code == 0
    assert "infinipot" in capsys.readouterr().out
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert len(runs) == 6
    for run in runs:
        for name, kind in RUN_FIELDS.items():
            assert isinstance(run[name], kind), name
        assert "cap_bytes" in run and "cuda_max_memory_allocated" in run
        assert run["cuda_max_memory_allocated"] is None  # CPU run
        assert 0.0 <= run["compress_share"] <= 1.0 and run["compress_ms_max"] >= run["compress_ms_mean"]
    cost = result["evidence_cost"]
    assert cost["tokens_held"] > 160 and cost["answer_ms_off"] > 0 and cost["answer_ms_on"] > 0
    assert cost["extra_ms"] == pytest.approx(cost["answer_ms_on"] - cost["answer_ms_off"])
    ratio = result["scorer_speed_ratio_fast_over_reference"]
    assert isinstance(ratio, float) and ratio > 0
    by_key = {(r["policy"], r["frames"]): r for r in runs}
    for policy in ("infinipot", "sliding_window"):
        short, long = by_key[(policy, 16)], by_key[(policy, 160)]
        assert long["peak_kv_bytes"] / short["peak_kv_bytes"] <= 1.01
        assert long["peak_kv_bytes"] <= long["cap_bytes"]
        assert long["compress_ms_max"] > 0
    full_short, full_long = by_key[("full", 16)], by_key[("full", 160)]
    assert full_long["cap_bytes"] is None and full_long["peak_kv_bytes"] > 5 * full_short["peak_kv_bytes"]


def test_bench_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--frames", "0", "--json", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        main(["--policy", "magic", "--json", str(tmp_path / "x.json")])


def test_random_qwen2_vl_2b_has_the_published_size() -> None:
    """`--model random:qwen2-vl-2b` is built from the published config: on the meta device (no memory) the
    parameter count must be Qwen2-VL-2B's 2.21 B (vision tower 0.67 B), and loading routes the name."""
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from infinipot.random_models import RANDOM_MODELS
    from infinipot.tiny_models import _qwen_special_ids
    from infinipot.tiny_tokenizer import build_tokenizer

    config = RANDOM_MODELS["qwen2-vl-2b"](_qwen_special_ids(build_tokenizer()))
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.visual.parameters())
    assert 2.20e9 < total < 2.22e9, total
    assert 0.66e9 < vision < 0.68e9, vision
    assert config.text_config.num_key_value_heads == 2 and config.text_config.max_position_embeddings == 32768
