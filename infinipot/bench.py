"""`infinipot-bench`: memory and speed of streaming under each policy, as a table and a JSON file.

Why: the claims worth checking on a given machine are that a capped cache stays flat as the stream grows
(peak KV bytes at 640 frames == at 64 frames), that compression is a small share of ingest time, and how
much faster the vectorised selection is than the plain reference. Everything runs through the same
`StreamingSession` the ROS node uses.

    infinipot-bench --frames 64,640 --policy full,infinipot,uniform,sliding_window --json bench.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import psutil
import torch

from .adapters.base import VLMAdapter
from .adapters.loading import load_adapter
from .policies import POLICY_NAMES, make_policy
from .reference import reference_select
from .selection import build_context, select_keep_indices
from .session import SessionConfig, StreamingSession

__all__ = ["main", "run_benchmark", "bench_stream", "scorer_speed_ratio", "default_budget_tokens", "evidence_cost"]

QUESTION = "what colour was the first cube?"
#: default threshold |M| in temporal frames' worth of tokens (the paper's Qwen2-VL scripts use 16)
DEFAULT_BUDGET_FRAMES = 16


def default_budget_tokens(adapter: VLMAdapter, frames: int = DEFAULT_BUDGET_FRAMES) -> int:
    """Prefix + `frames` temporal frames (16: 64 raw frames already compress, 640 compress many times)."""
    return len(adapter.prefix_token_ids()) + frames * adapter.tokens_per_frame


def _frame_pool(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Distinct synthetic frames: a bright square moving over noise, so consecutive frames differ a little."""
    rng = np.random.default_rng(seed)
    height, width = size
    frames = []
    for i in range(count):
        frame = rng.integers(0, 64, (height, width, 3), dtype=np.uint8)
        y, x = (i * 3) % max(1, height - 8), (i * 5) % max(1, width - 8)
        frame[y : y + 8, x : x + 8] = (255, 32 * (i % 8), 0)
        frames.append(frame)
    return frames


def bench_stream(
    adapter: VLMAdapter, policy: str, frames: int, budget_tokens: int | None, frame_pool: Sequence[np.ndarray]
) -> dict[str, object]:
    """Stream `frames` frames under `policy`, ask one question, return one JSON run record."""
    session = StreamingSession(adapter, SessionConfig(policy=policy, budget_tokens=budget_tokens, max_new_tokens=4))
    durations: list[float] = []
    session.add_compression_listener(lambda _s, report: durations.append(report.duration_s))
    cuda = adapter.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(adapter.device)
        torch.cuda.reset_peak_memory_stats(adapter.device)
    process = psutil.Process()
    peak_kv = session.store.nbytes_used
    peak_rss = process.memory_info().rss
    started = time.perf_counter()
    for i in range(frames):
        session.add_frame(frame_pool[i % len(frame_pool)], stamp=i * 0.5)
        peak_kv = max(peak_kv, session.store.nbytes_used)
        if i % 16 == 0:
            peak_rss = max(peak_rss, process.memory_info().rss)
    if cuda:
        torch.cuda.synchronize(adapter.device)
    elapsed = time.perf_counter() - started
    answer = session.ask(QUESTION, max_new_tokens=1)
    peak_rss = max(peak_rss, process.memory_info().rss)
    stats = session.stats()
    return {
        "policy": policy,
        "frames": frames,
        "peak_kv_bytes": int(peak_kv),
        "cap_bytes": int(stats.kv_cap_bytes) if stats.kv_cap_bytes else None,
        "ingest_ms_per_frame": 1e3 * elapsed / max(1, frames),
        "compress_ms_mean": 1e3 * (sum(durations) / len(durations)) if durations else 0.0,
        "compress_ms_max": 1e3 * max(durations) if durations else 0.0,
        "compress_share": stats.total_compression_s / stats.total_ingest_s if stats.total_ingest_s else 0.0,
        "ttft_ms": 1e3 * answer.ttft_s,
        "peak_rss_bytes": int(peak_rss),
        "cuda_max_memory_allocated": int(torch.cuda.max_memory_allocated(adapter.device)) if cuda else None,
        "compressions": stats.compressions,
    }


def scorer_speed_ratio(adapter: VLMAdapter, frame_pool: Sequence[np.ndarray], temporal_frames: int = 24) -> float:
    """Reference selection time / fast selection time on the same real context (one layer, InfiniPot policy).

    The context is a real cache: `temporal_frames` frames streamed uncapped through the model.
    """
    session = StreamingSession(adapter, SessionConfig(policy="full"))
    for i in range(temporal_frames * adapter.frames_per_step):
        session.add_frame(frame_pool[i % len(frame_pool)], stamp=float(i))
    policy = make_policy("infinipot")
    evictable = session.store.length - session.store.prefix_length
    ctx = build_context(
        session.store, 0, recent_ratio=policy.recent_ratio, frame_grid=adapter.frame_grid, budget=int(0.75 * evictable)
    )

    def best_time(fn, repeats: int) -> float:
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            fn(ctx, policy)
            best = min(best, time.perf_counter() - start)
        return best

    fast = best_time(select_keep_indices, 5)
    slow = best_time(reference_select, 2)
    return slow / fast


def evidence_cost(adapter: VLMAdapter, frame_pool: Sequence[np.ndarray], frames: int = 64,
                  answer_tokens: int = 8, repeats: int = 15) -> dict[str, float]:
    """Answer latency with and without evidence on the same full-cache session (best of `repeats`).

    Both arms run the same answer on the same cache, interleaved so that load from other processes hits
    both alike; "off" asks with max_evidence=0, which records nothing (the probe then only calls the
    wrapped attention). The extra is the per-answer cost of the evidence."""
    session = StreamingSession(adapter, SessionConfig(policy="full", max_new_tokens=answer_tokens))
    for i in range(frames):
        session.add_frame(frame_pool[i % len(frame_pool)], stamp=i * 0.5)
    best = {0: math.inf, None: math.inf}
    session.ask(QUESTION)  # warm-up
    for _ in range(repeats):
        for max_evidence in best:
            best[max_evidence] = min(best[max_evidence], session.ask(QUESTION, max_evidence=max_evidence).latency_s)
    off, on = best[0] * 1e3, best[None] * 1e3
    return {"tokens_held": session.store.length, "answer_ms_off": off, "answer_ms_on": on,
            "extra_ms": on - off, "extra_share": (on - off) / off if off else 0.0}


def run_benchmark(
    model: str,
    frames: Sequence[int],
    policies: Sequence[str],
    budget_tokens: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    budget_frames: int = DEFAULT_BUDGET_FRAMES,
    speed_ratio: bool = True,
) -> dict[str, object]:
    """All (policy, frames) runs plus the selection speed ratio, as the JSON document `main` writes."""
    started = time.perf_counter()
    adapter = load_adapter(model, dtype=dtype, device=device)
    load_s = time.perf_counter() - started
    budget = budget_tokens if budget_tokens is not None else default_budget_tokens(adapter, budget_frames)
    pool = _frame_pool(32, (96, 128))
    runs = [bench_stream(adapter, policy, count, budget, pool) for policy in policies for count in frames]
    return {
        "model": model,
        "device": device,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in adapter.model.parameters()),
        "load_s": load_s,
        "tokens_per_frame": adapter.tokens_per_frame,
        "budget_tokens": budget,
        "runs": runs,
        "scorer_speed_ratio_fast_over_reference": scorer_speed_ratio(adapter, pool) if speed_ratio else None,
        "evidence_cost": evidence_cost(adapter, pool, frames=max(frames)) if speed_ratio else None,
    }


def _table(result: dict[str, object]) -> str:
    header = f"{'policy':<15}{'frames':>7}{'peak KV KiB':>13}{'cap KiB':>10}{'ms/frame':>10}{'compr ms':>10}" \
             f"{'share':>8}{'TTFT ms':>9}{'RSS MiB':>9}"
    lines = [header, "-" * len(header)]
    for run in result["runs"]:  # type: ignore[union-attr]
        cap = f"{run['cap_bytes'] / 1024:.1f}" if run["cap_bytes"] else "-"
        lines.append(
            f"{run['policy']:<15}{run['frames']:>7}{run['peak_kv_bytes'] / 1024:>13.1f}{cap:>10}"
            f"{run['ingest_ms_per_frame']:>10.2f}{run['compress_ms_mean']:>10.2f}{run['compress_share']:>8.1%}"
            f"{run['ttft_ms']:>9.2f}{run['peak_rss_bytes'] / 2**20:>9.0f}"
        )
    if result["scorer_speed_ratio_fast_over_reference"] is not None:
        lines.append(f"selection speed: fast is {result['scorer_speed_ratio_fast_over_reference']:.1f}x the reference")
    cost = result["evidence_cost"]
    if cost is not None:
        lines.append(f"answer evidence: +{cost['extra_ms']:.2f} ms per answer ({cost['extra_share']:+.1%} of "  # type: ignore[index]
                     f"{cost['answer_ms_off']:.2f} ms) at {cost['tokens_held']} held tokens")  # type: ignore[index]
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"need positive integers, got {text!r}")
    return values


def _policy_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in POLICY_NAMES]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"unknown policies {unknown}; choose from {', '.join(POLICY_NAMES)}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infinipot-bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=_int_list, default=[64, 640], help="stream lengths, e.g. 64,640")
    parser.add_argument("--policy", type=_policy_list, default=["full", "infinipot", "uniform", "sliding_window"])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--model", default="builtin:tiny-qwen2-vl",
                        help="model id, path, builtin:<tiny> or random:qwen2-vl-2b (published size, random weights)")
    parser.add_argument("--budget-tokens", type=int, default=None,
                        help="threshold |M| (default: prefix + --budget-frames temporal frames)")
    parser.add_argument("--budget-frames", type=int, default=DEFAULT_BUDGET_FRAMES,
                        help="default |M| in temporal frames of the model, after the prefix")
    parser.add_argument("--no-speed-ratio", action="store_true",
                        help="skip the reference-vs-fast selection timing (slow with big models)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_benchmark(args.model, args.frames, args.policy, args.budget_tokens, args.device, args.dtype,
                           args.budget_frames, speed_ratio=not args.no_speed_ratio)
    print(_table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
