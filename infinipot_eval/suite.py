"""`infinipot-eval-suite`: the policy comparison over many synthetic bags, pooled into one report.

    infinipot-eval-suite --seeds 200-219 --seconds 90 --policy full,infinipot,uniform,sliding_window \
                         --budget 40,64 --out out/suite [--model infinipot-tiny-qwen2vl] [--window-seconds 8]

Why a suite: one bag gives a few dozen questions, too few to tell policies apart (one question is 2-3
points of accuracy). The suite writes (or reuses) one bag per held-out seed with `infinipot-synth`'s
`synthesize`, replays each through every policy × budget with one loaded model, and pools the answers per
policy × budget: accuracy overall and per tag (kinds and long_range / recent) over all questions, peak KV
the maximum over bags, latencies the mean of the bags'. Writes OUT/report.json (pooled results and the
per-bag ones), OUT/report.md and the plots, like `infinipot-eval`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .eval_cli import DEFAULT_MODEL, evaluate_offline, parse_list
from .question_gen import DEFAULT_WINDOW_SECONDS
from .questions import load_questions
from .replay import DEFAULT_MAX_NEW_TOKENS, evidence_hit_rates
from .report import write_report
from .synth_cli import synthesize

__all__ = ["parse_seeds", "pool_results", "run_suite", "main"]

#: per-run fields averaged over bags (the rest are recomputed from the pooled answers or maxima)
_MEAN_FIELDS = ("ttft_ms_mean", "answer_ms_mean", "answer_ms_p95", "ttft_ms_p95", "ingest_ms_per_frame",
                "mean_compression_ms")
_SUM_FIELDS = ("n_questions", "compressions", "tokens_evicted", "messages", "frames_sampled", "frames_rejected",
               "errors", "wall_s", "total_compression_s", "stream_seconds")
_MAX_FIELDS = ("peak_kv_bytes", "cap_bytes", "peak_rss_bytes")


def parse_seeds(spec: str) -> list[int]:
    """'200-219' or '3,5,9' or '1-3,7' → sorted unique seeds."""
    seeds: set[int] = set()
    for part in parse_list(spec):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first:
            raise ValueError(f"bad seed range {part!r}")
        seeds.update(range(first, last + 1))
    if not seeds:
        raise ValueError("no seeds given")
    return sorted(seeds)


def pool_results(per_bag: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per policy × budget from the bags' report entries, in the first bag's run order."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for results in per_bag:
        for r in results:
            groups.setdefault((r["policy"], r["budget"]), []).append(r)
    pooled = []
    for (policy, budget), runs in groups.items():
        answers = [a for r in runs for a in r.get("answers", [])]
        by_tag: dict[str, list[bool]] = {}
        for a in answers:
            for tag in a["tags"]:
                by_tag.setdefault(tag, []).append(bool(a["correct"]))
        entry: dict[str, Any] = {"policy": policy, "budget": budget, "bags": len(runs)}
        for key in _SUM_FIELDS:
            entry[key] = sum(r.get(key) or 0 for r in runs)
        for key in _MAX_FIELDS:
            entry[key] = max((r.get(key) or 0 for r in runs), default=0)
        for key in _MEAN_FIELDS:
            values = [r[key] for r in runs if r.get(key) is not None]
            entry[key] = sum(values) / len(values) if values else None
        entry["accuracy"] = (sum(bool(a["correct"]) for a in answers) / len(answers)) if answers else None
        entry["accuracy_by_tag"] = {t: sum(v) / len(v) for t, v in sorted(by_tag.items())}
        entry["n_by_tag"] = {t: len(v) for t, v in sorted(by_tag.items())}
        entry["evidence_hit_rate"], entry["evidence_hit_rate_by_tag"] = evidence_hit_rates(answers)
        # the plots show memory over stream time: the first bag's curve stands for all
        for key in ("kv_bytes_over_time", "tokens_held_over_time", "rss_bytes_over_time"):
            entry[key] = runs[0].get(key, [])
        entry["memory_timeline"] = runs[0].get("memory_timeline", {})
        pooled.append(entry)
    return pooled


def run_suite(out: Path, seeds: Sequence[int], *, seconds: float, policies: list[str], budgets: list[int],
              model: str = DEFAULT_MODEL, window_seconds: float = DEFAULT_WINDOW_SECONDS,
              max_questions: int = 40, sample_hz: float = 2.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, dtype: str = "float32",
              device: str = "cpu", progress: bool = True) -> dict[str, Path]:
    """Write or reuse the bags under OUT/bags, replay them all, write the pooled report into OUT."""
    from infinipot.adapters.loading import load_adapter

    adapter = load_adapter(model, dtype=dtype, device=device)
    per_bag: list[list[dict[str, Any]]] = []
    bags = []
    for k, seed in enumerate(seeds):
        bag = out / "bags" / f"seed{seed}_{seconds:g}s"
        if not (bag / "questions.yaml").is_file():
            synthesize(bag, seconds=seconds, seed=seed, window_seconds=window_seconds, max_questions=max_questions)
        qset = load_questions(bag / "questions.yaml")
        results = evaluate_offline(bag, qset, policies=policies, budgets=budgets, model=model,
                                   sample_hz=sample_hz, max_new_tokens=max_new_tokens, progress=False,
                                   adapter=adapter)
        per_bag.append(results)
        bags.append(str(bag))
        if progress:
            line = ", ".join(f"{r['policy']}{'' if r['budget'] is None else '@' + str(r['budget'])} "
                             f"{r['accuracy'] or 0:.2f}" for r in results)
            print(f"[{k + 1}/{len(seeds)}] seed {seed}: {line}", file=sys.stderr, flush=True)
    pooled = pool_results(per_bag)
    meta = {"mode": "offline-suite", "model": model, "seeds": f"{seeds[0]}-{seeds[-1]} ({len(seeds)} bags)",
            "seconds": seconds, "window_seconds": window_seconds, "sample_hz": sample_hz,
            "max_new_tokens": max_new_tokens}
    # the per-bag entries without their answer lists (the pooled numbers already count them) and curves
    per_bag_doc = [{"bag": b, "results": [{k: v for k, v in r.items() if not k.endswith("_over_time")
                                           and k not in ("answers", "memory_timeline")} for r in rs]}
                   for b, rs in zip(bags, per_bag)]
    return write_report(pooled, out, meta, extra={"per_bag": per_bag_doc})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infinipot-eval-suite", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", default="200-219", help="held-out world seeds, e.g. 200-219 or 3,5,9")
    p.add_argument("--seconds", type=float, default=90.0, help="stream length of each bag")
    p.add_argument("--policy", default="full,infinipot,uniform,sliding_window", help="comma-separated policies (full = the uncapped baseline, on purpose; every other policy runs once per --budget, capped)")
    p.add_argument("--budget", default="40,64", help="comma-separated threshold budgets |M| in tokens")
    p.add_argument("--out", type=Path, required=True, help="output directory (bags are kept in OUT/bags)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id, local path or builtin:<tiny-name>")
    p.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS,
                   help="sliding window that separates 'recent' from 'long_range' questions")
    p.add_argument("--max-questions", type=int, default=40, help="questions per bag")
    p.add_argument("--sample-hz", type=float, default=2.0)
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                   help="answer length limit (the node's max_answer_tokens default)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        paths = run_suite(args.out, seeds, seconds=args.seconds, policies=parse_list(args.policy),
                          budgets=parse_list(args.budget, int), model=args.model, window_seconds=args.window_seconds,
                          max_questions=args.max_questions, sample_hz=args.sample_hz,
                          max_new_tokens=args.max_new_tokens, dtype=args.dtype, device=args.device,
                          progress=not args.quiet)
    except ValueError as exc:
        print(f"infinipot-eval-suite: error: {exc}", file=sys.stderr)
        return 2
    print(paths["md"].read_text(encoding="utf-8").split("![")[0].rstrip())
    print(f"wrote {paths['json']}, {paths['md']} and plots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
