"""`infinipot-synth`: write a synthetic camera rosbag2 and the questions about it.

    infinipot-synth --seconds 120 --seed 7 --out bags/synth7 [--storage mcap|sqlite3] [--fps 10]
                    [--size 112] [--compressed] [--topic /camera/image_raw] [--window-seconds 8]
                    [--max-questions 40] [--per-checkpoint 2]

Writes DIR/ (a rosbag2 directory: metadata.yaml + one .mcap or .db3 file) and DIR/questions.yaml. The bag
starts at the fixed stamp `BAG_START_NS`, so the same arguments give byte-identical messages; question
times are stream seconds since the first message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from .bagio import BagError, write_bag
from .question_gen import DEFAULT_WINDOW_SECONDS, make_question_set
from .questions import QuestionSet, save_questions
from .world import World

__all__ = ["BAG_START_NS", "synthesize", "main"]

#: header stamp of the first frame (2023-11-14T22:13:20Z): fixed so bags are reproducible
BAG_START_NS = 1_700_000_000 * 1_000_000_000


def _stamped_frames(world: World, progress: bool) -> Iterator[tuple[int, np.ndarray]]:
    indices = range(world.num_frames)
    if progress:
        indices = tqdm(indices, desc="rendering", unit="frame", file=sys.stderr)
    for i in indices:
        yield BAG_START_NS + round(i * 1_000_000_000 / world.fps), world.frame(i)


def synthesize(out_dir: str | Path, *, seconds: float, seed: int, fps: float = 10.0, size: int = 112,
               storage: str = "mcap", compressed: bool = False, topic: str = "/camera/image_raw",
               window_seconds: float = DEFAULT_WINDOW_SECONDS, max_questions: int | None = 40,
               per_checkpoint: int = 2, progress: bool = False) -> tuple[Path, QuestionSet]:
    """Write the bag into `out_dir` (a new directory) and `out_dir/questions.yaml`; return both."""
    world = World(seed=seed, seconds=seconds, fps=fps, size=size)
    qset = make_question_set(world, topic=topic, window_seconds=window_seconds, max_questions=max_questions,
                             per_checkpoint=per_checkpoint)
    out_dir = Path(out_dir)
    write_bag(out_dir, _stamped_frames(world, progress), topic=topic, storage=storage, compressed=compressed)
    path = save_questions(qset, out_dir / "questions.yaml")
    return path, qset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infinipot-synth", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seconds", type=float, required=True, help="stream length")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0); same seed, same bag")
    p.add_argument("--out", type=Path, required=True, help="new rosbag2 directory")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--size", type=int, default=112, help="frame width and height in pixels")
    p.add_argument("--compressed", action="store_true", help="sensor_msgs/CompressedImage (JPEG) instead of rgb8")
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--window-seconds", type=float, default=DEFAULT_WINDOW_SECONDS,
                   help="sliding window that separates 'recent' from 'long_range' questions "
                        "(default: 256 tokens / (16 tokens per frame x 2 Hz))")
    p.add_argument("--max-questions", type=int, default=40, help="0 = no limit")
    p.add_argument("--per-checkpoint", type=int, default=2, help="questions asked at each quiet moment")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        path, qset = synthesize(
            args.out, seconds=args.seconds, seed=args.seed, fps=args.fps, size=args.size, storage=args.storage,
            compressed=args.compressed, topic=args.topic, window_seconds=args.window_seconds,
            max_questions=args.max_questions or None, per_checkpoint=args.per_checkpoint, progress=not args.quiet,
        )
    except (BagError, ValueError) as exc:
        print(f"infinipot-synth: error: {exc}", file=sys.stderr)
        return 2
    kinds = sorted({q.kind for q in qset})
    print(f"wrote {args.out} ({args.storage}) and {path}: {len(qset)} questions ({', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
