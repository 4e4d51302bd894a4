"""Held-out evaluation of a checkpoint through the streaming engine, the way the node runs it.

    python -m infinipot_train.model_eval --model models/infinipot-tiny-qwen2vl --seeds 0-39 --seconds 60

Why not teacher forcing: the shipped model must answer in the node, i.e. from frames sampled at 2 Hz by
stamp (`FrameSampler`), prefilled block by block into a `StreamingSession`, with free greedy decoding and
answers scored by the evaluation's own rules (`infinipot_eval.scoring.is_correct`). So this loop mirrors
the offline replay (infinipot_eval/replay.py) on a `World` rendered in memory instead of a bag: a question
due at time T is asked after every frame with stamp <= T has been handled.

Held-out: seeds below `train_data.TRAIN_SEED_BASE` are never used for training. The default cache is FULL
(policy "full"); `--policy infinipot --budget-tokens N` measures the compressed cache instead.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

from infinipot_eval.question_gen import KINDS, make_questions
from infinipot_eval.questions import Question
from infinipot_eval.scoring import is_correct
from infinipot_eval.world import World, WorldConfig
from infinipot.sampling import FrameSampler

from infinipot.adapters.base import VLMAdapter
from infinipot.session import SessionConfig, StreamingSession
from .train_data import STAGES, TRAIN_SEED_BASE

__all__ = ["AnswerRecord", "KindScore", "stream_and_ask", "evaluate", "main"]

#: WorldConfig presets: "default" is what infinipot-synth bags use; the others are the training stages'
WORLD_PRESETS: dict[str, WorldConfig] = {"default": WorldConfig(), **{s.name: s.config for s in STAGES}}


@dataclass(frozen=True)
class AnswerRecord:
    seed: int
    question: Question
    prediction: str
    correct: bool
    #: colour questions only: "latest" when the asked shape is the most recent object's, else "older"
    colour_target: str = ""


@dataclass
class KindScore:
    right: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else float("nan")

    def count(self, correct: bool) -> None:
        self.total += 1
        self.right += int(correct)

    def as_dict(self) -> dict[str, float]:
        return {"right": self.right, "total": self.total, "accuracy": round(self.accuracy, 4)}


@dataclass
class EvalReport:
    per_kind: dict[str, KindScore] = field(default_factory=dict)
    records: list[AnswerRecord] = field(default_factory=list)
    wall_s: float = 0.0

    def add(self, record: AnswerRecord) -> None:
        self.records.append(record)
        self.per_kind.setdefault(record.question.tags[0], KindScore()).count(record.correct)

    def colour_by_target(self) -> dict[str, KindScore]:
        """Colour accuracy split by whether the asked object is the latest one (see `colour_target`)."""
        split: dict[str, KindScore] = {}
        for r in self.records:
            if r.colour_target:
                split.setdefault(r.colour_target, KindScore()).count(r.correct)
        return dict(sorted(split.items()))

    def as_dict(self) -> dict[str, object]:
        overall = KindScore(sum(s.right for s in self.per_kind.values()), sum(s.total for s in self.per_kind.values()))
        return {
            "per_kind": {k: s.as_dict() for k, s in sorted(self.per_kind.items())},
            "overall": overall.as_dict(),
            "colour_by_target": {k: s.as_dict() for k, s in self.colour_by_target().items()},
            "wall_s": round(self.wall_s, 1),
        }


def colour_target(world: World, question: Question) -> str:
    """"latest" if a colour question asks about the shape of the most recent object, "older" otherwise.

    Why: the two are different skills. The latest object's colour can be read off the newest visual tokens;
    an older one must be found by its shape among several objects, and that is where the built-in model's
    colour errors are (each miss names another seen object's colour).
    """
    if question.kind != "colour":
        return ""
    past = world.events_before(question.time)
    asked_shape = question.question.rstrip("?").split()[-1]
    return "latest" if past and past[-1].shape == asked_shape else "older"


def stream_and_ask(
    adapter: VLMAdapter,
    world: World,
    questions: Sequence[Question],
    *,
    sample_hz: float = 2.0,
    config: SessionConfig | None = None,
    max_new_tokens: int = 8,
) -> list[tuple[Question, str]]:
    """Stream `world` into a fresh session at `sample_hz` and ask each question when it is due.

    Only sampled frames are rendered (a world frame is a pure function of its index).
    """
    session = StreamingSession(adapter, config or SessionConfig(policy="full"))
    sampler = FrameSampler(sample_hz)
    pending = sorted(questions, key=lambda q: q.time)
    answers: list[tuple[Question, str]] = []
    for i in range(world.num_frames):
        stamp = world.time(i)
        while pending and pending[0].time < stamp:
            q = pending.pop(0)
            answers.append((q, session.ask(q.question, max_new_tokens).text))
        if sampler.decide(stamp).keep:
            session.add_frame(world.frame(i), stamp)
    for q in pending:
        answers.append((q, session.ask(q.question, max_new_tokens).text))
    return answers


def evaluate(
    adapter: VLMAdapter,
    seeds: Sequence[int],
    *,
    seconds: float = 60.0,
    size: int = 112,
    fps: float = 10.0,
    world_config: WorldConfig | None = None,
    kinds: Sequence[str] = KINDS,
    config: SessionConfig | None = None,
    sample_hz: float = 2.0,
    per_checkpoint: int = 2,
) -> EvalReport:
    """Accuracy per question kind over the held-out worlds `seeds` (each must be < TRAIN_SEED_BASE)."""
    leaked = [s for s in seeds if s >= TRAIN_SEED_BASE]
    if leaked:
        raise ValueError(f"seeds {leaked[:5]} are in the training range (>= {TRAIN_SEED_BASE})")
    report = EvalReport()
    started = time.perf_counter()
    for seed in seeds:
        world = World(seed=seed, seconds=seconds, fps=fps, size=size, config=world_config or WorldConfig())
        questions = make_questions(world, kinds=tuple(kinds), per_checkpoint=per_checkpoint)
        for q, text in stream_and_ask(adapter, world, questions, sample_hz=sample_hz, config=config):
            report.add(AnswerRecord(seed, q, text, is_correct(q, text), colour_target(world, q)))
    report.wall_s = time.perf_counter() - started
    return report


def main(argv: Sequence[str] | None = None) -> int:
    from infinipot_eval.suite import parse_seeds

    from infinipot.adapters.loading import load_adapter

    p = argparse.ArgumentParser(prog="infinipot-model-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="models/infinipot-tiny-qwen2vl")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", default="0-39", help=f"held-out world seeds (< {TRAIN_SEED_BASE}), e.g. 0-39 or 3,5")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", type=int, default=112, help="rendered frame size (the adapter resizes)")
    p.add_argument("--world", choices=sorted(WORLD_PRESETS), default="default")
    p.add_argument("--kinds", default=",".join(KINDS), help="question kinds to ask, e.g. colour")
    p.add_argument("--policy", default="full")
    p.add_argument("--budget-tokens", type=int, default=None)
    p.add_argument("--show", type=int, default=0, help="print this many wrong answers")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--probe", action="store_true",
                   help="also fit linear probes for shape and colour on the frozen visual tokens")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    adapter = load_adapter(args.model, device=args.device)
    probe = None
    if args.probe:
        from .vision_aux import probe_accuracy

        probe = probe_accuracy(adapter)
        print(f"linear probe on frozen visual tokens: shape {probe['shape']:.3f} (chance 0.2), "
              f"colour {probe['colour']:.3f} (chance 0.125)")
    config = SessionConfig(policy=args.policy, budget_tokens=args.budget_tokens)
    report = evaluate(adapter, parse_seeds(args.seeds), seconds=args.seconds, size=args.size,
                      world_config=WORLD_PRESETS[args.world], config=config,
                      kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()))
    summary = report.as_dict()
    summary["settings"] = {k: v for k, v in vars(args).items() if k not in ("show", "json")}
    if probe is not None:
        summary["probe"] = probe
    for kind, score in summary["per_kind"].items():
        print(f"{kind:9s} {score['right']:4d}/{score['total']:<4d} {score['accuracy']:.3f}")
    print(f"{'overall':9s} {summary['overall']['right']:4d}/{summary['overall']['total']:<4d} "
          f"{summary['overall']['accuracy']:.3f}  ({summary['wall_s']} s)")
    for target, score in summary["colour_by_target"].items():
        print(f"  colour, {target} object: {score['right']}/{score['total']} {score['accuracy']:.3f}")
    wrong = [r for r in report.records if not r.correct][: args.show]
    for r in wrong:
        print(f"  seed {r.seed} t={r.question.time:6.2f} {r.question.question!r} -> {r.prediction!r} "
              f"(want {list(r.question.answers)})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
