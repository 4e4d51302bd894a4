"""`infinipot-eval`: replay a rosbag through each policy × budget, ask the questions, write a report.

    infinipot-eval --bag DIR --questions DIR/questions.yaml --policy full,infinipot,sliding_window \
                   --budget 64,128,256 --report out/eval [--model infinipot-tiny-qwen2vl] [--sample-hz 2] \
                   [--max-new-tokens 16] [--topic /camera/image_raw] [--record-every 1]
    infinipot-eval --live ... [--rate 1.0]   # same, but through the ROS node and /ask_video (live.py)
    infinipot-eval --live --lockstep ...     # live, paced by the node: the offline answers, exactly
    infinipot-eval --live --image-qos reliable ...   # the node's camera QoS (and the player's)

"full" runs once, uncapped (budget null); every other policy runs once per budget. Writes OUT/report.json,
OUT/report.md, OUT/kv_memory.png and OUT/accuracy_vs_budget.png (see docs/evaluation.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from infinipot.shipped import DEFAULT_MODEL  # the node's default: the shipped trained model
from infinipot_ros.parameters import default_of

from .bagio import BagError
from .questions import QuestionFileError, QuestionSet, load_questions
from .report import write_report
from .topics import combined_entry, plan_topics

__all__ = ["main", "evaluate_offline", "parse_list"]

# As in the node (infinipot_ros/node.py), before torch is imported: busy-waiting OpenMP threads starve
# everything else on a small shared CPU, which made offline ingest times ~10x the node's on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_list(text: str, convert=str) -> list:
    """'a,b, c' → ['a', 'b', 'c'] (converted); empty items dropped."""
    return [convert(item.strip()) for item in text.split(",") if item.strip()]


def evaluate_offline(bag: str | Path, qset: QuestionSet, *, policies: list[str], budgets: list[int],
                     model: str = DEFAULT_MODEL, topic: str | None = None, sample_hz: float = 2.0,
                     max_new_tokens: int | None = None, record_every: int = 1, dtype: str = "float32", device: str = "cpu",
                     progress: bool = True, adapter: Any = None) -> list[dict[str, Any]]:
    """Run every policy × budget offline and return the report entries (one adapter, a fresh session each).

    Every topic of the question file is replayed into a memory of its own (as the node keeps one per
    camera) and scored into the same entry (`topics.combined_entry`); `topic` replays only that one."""
    from infinipot.adapters.loading import load_adapter

    from .replay import DEFAULT_MAX_NEW_TOKENS, replay, run_specs

    if max_new_tokens is None:  # the node's max_answer_tokens default (see replay.session_config)
        max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    bag = Path(bag)
    plan = plan_topics(qset, bag, topic)
    specs = run_specs(policies, budgets)
    if adapter is None:
        adapter = load_adapter(model, dtype=dtype, device=device)
    results = []
    for spec in specs:
        runs = {}
        for topic_name, count in plan.topics.items():
            desc = spec.label if len(plan.topics) == 1 else f"{spec.label} {topic_name}"
            bar = tqdm(total=count, desc=desc, unit="msg", file=sys.stderr, disable=not progress, leave=False)
            try:
                runs[topic_name] = replay(bag, topic_name, qset.questions, adapter, spec, sample_hz=sample_hz,
                                          max_new_tokens=max_new_tokens, record_every=record_every,
                                          on_message=bar.update)
            finally:
                bar.close()
        summary = combined_entry(runs, qset.questions)
        results.append(summary)
        if progress:
            acc = summary["accuracy"]
            print(f"{spec.label}: accuracy {'–' if acc is None else f'{acc:.2f}'} over {summary['n_questions']} "
                  f"questions, peak KV {summary['peak_kv_bytes']} B, {summary['wall_s']:.1f} s", file=sys.stderr)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infinipot-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bag", type=Path, required=True, help="rosbag2 directory")
    p.add_argument("--questions", type=Path, help="question file (default: BAG/questions.yaml)")
    p.add_argument("--policy", default="full,infinipot,sliding_window", help="comma-separated policies (full = the uncapped baseline, on purpose; every other policy runs once per --budget, capped)")
    p.add_argument("--budget", default="128,256", help="comma-separated threshold budgets |M| in tokens")
    p.add_argument("--report", type=Path, default=None,
                   help="output directory (default: report/ inside the bag directory)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model id, local path or builtin:<tiny-name>")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sample-hz", type=float, default=2.0, help="frames per second of stream time given to the model")
    p.add_argument("--max-new-tokens", type=int, default=default_of("max_answer_tokens"),
                   help="answer length limit; the node's max_answer_tokens, which also sizes the KV reserve")
    p.add_argument("--topic", help="replay only this camera topic (default: every topic the questions name; "
                                   "questions for other topics are skipped, named in a warning and the report)")
    p.add_argument("--record-every", type=int, default=1, help="record memory every k-th sampled frame")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--live", action="store_true", help="replay through the ROS node and /ask_video instead")
    p.add_argument("--rate", type=float, default=1.0, help="--live: playback speed factor (real time only)")
    p.add_argument("--lockstep", action="store_true",
                   help="--live: pace playback by the node and pause it for each question (no frame lost; "
                        "answers equal the offline replay's with a deterministic model)")
    p.add_argument("--image-qos", choices=("sensor_data", "reliable"), default=None,
                   help="--live: the node's image_qos parameter, also the bag player's publisher QoS "
                        "(default: reliable with --lockstep, which must not lose a frame; sensor_data, the "
                        "robot's best-effort default, in real time)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.lockstep and not args.live:
        parser.error("--lockstep needs --live")
    if args.image_qos and not args.live:
        parser.error("--image-qos needs --live")
    try:
        qset = load_questions(args.questions or args.bag / "questions.yaml")
        plan = plan_topics(qset, args.bag, args.topic)
        if plan.warning():
            print(f"infinipot-eval: warning: {plan.warning()}", file=sys.stderr)
        policies = parse_list(args.policy)
        budgets = parse_list(args.budget, int)
        common = dict(policies=policies, budgets=budgets, model=args.model, topic=args.topic,
                      sample_hz=args.sample_hz, max_new_tokens=args.max_new_tokens, progress=not args.quiet)
        if args.live:
            from .live import LiveError, LockstepError, evaluate_live

            try:
                results = evaluate_live(args.bag, qset, rate=args.rate, lockstep=args.lockstep, dtype=args.dtype,
                                        device=args.device, image_qos=args.image_qos, **common)
            except (LiveError, LockstepError) as exc:
                print(f"infinipot-eval: live replay failed: {exc}", file=sys.stderr)
                return 1
        else:
            results = evaluate_offline(args.bag, qset, record_every=args.record_every, dtype=args.dtype,
                                       device=args.device, **common)
    except (QuestionFileError, BagError, ValueError) as exc:
        print(f"infinipot-eval: error: {exc}", file=sys.stderr)
        return 2
    mode = ("live-lockstep" if args.lockstep else "live") if args.live else "offline"
    meta = {"mode": mode, "bag": str(args.bag), "model": args.model,
            "sample_hz": args.sample_hz, "max_new_tokens": args.max_new_tokens, "topics": list(plan.topics)}
    if args.live:
        from .live import default_image_qos

        meta["image_qos"] = args.image_qos or default_image_qos(args.lockstep)
    if args.report is None:
        args.report = Path(args.bag) / "report"
    paths = write_report(results, args.report, meta, extra={"skipped_questions": plan.skipped})
    print(f"wrote {paths['json']}, {paths['md']} and plots in {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
