"""Selection speed against a plain `topk` implementation of the same rule, on the same tensors.

Why: the shared selection (`infinipot.selection.select_keep_indices`) must cost no more than the obvious
implementation, a `torch.topk` per budget share, while also being deterministic (ties to the older slot).
Both run the same scorers (TaR + VaN, InfiniPot-V) on the same context: H = 4 KV heads, 32 frames of
130 tokens (a 10 x 13 grid), head_dim 128, one layer, on the CPU; the best of many repeats is compared.

    python -m infinipot.bench_selection [--repeats 200] [--threads 1]

Prints both times and the ratio plain / ours (>= 1 means ours is at least as fast). No timed assertions
live in the tests; this is the measurement.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import torch

from infinipot.kv_store import FixedKVStore
from infinipot.policies import CompressionPolicy, make_policy
from infinipot.scorers.base import ScoringContext
from infinipot.selection import build_context, select_keep_indices, tar_share_tokens

__all__ = ["benchmark_context", "topk_select", "measure", "main"]


def benchmark_context(
    heads: int = 4, frames: int = 32, grid: tuple[int, int] = (10, 13), head_dim: int = 128, seed: int = 0
) -> ScoringContext:
    """One layer of a full store (prefix 16 + frames x grid tokens) with random K/V, budget 0.75 of it."""
    per_frame = grid[0] * grid[1]
    prefix = 16
    n = prefix + frames * per_frame
    g = torch.Generator().manual_seed(seed)
    store = FixedKVStore(1, heads, head_dim, capacity=n)
    frame_id = torch.cat([torch.full((prefix,), -1), torch.arange(frames).repeat_interleave(per_frame)])
    patch = torch.cat([torch.full((prefix,), -1), torch.arange(per_frame).repeat(frames)])
    store.stage_tokens(torch.arange(n), frame_id, patch)
    store.update(torch.randn(1, heads, n, head_dim, generator=g), torch.randn(1, heads, n, head_dim, generator=g), 0)
    store.set_prefix_length(prefix)
    budget = int(0.75 * frames) * per_frame
    return build_context(store, 0, recent_ratio=0.25, frame_grid=grid, budget=budget, memory_frames=frames)


def topk_select(ctx: ScoringContext, policy: CompressionPolicy, sorted_topk: bool = True) -> torch.Tensor:
    """The same rule written plainly with `torch.topk` (assumes the recent frames fit in the budget and a
    secondary scorer; ties are left to topk, so it is not guaranteed to break them like the shared path)."""
    heads, n = ctx.token_index.shape
    budget = ctx.budget
    keep = ctx.recent_mask.clone()
    kept_recent = keep.sum(1)
    primary_k = (tar_share_tokens(budget, policy.tar_share) - kept_recent).clamp(min=0)
    secondary_k = budget - kept_recent - primary_k
    for scorer, counts in ((policy.primary, primary_k), (policy.secondary, secondary_k)):
        scores = scorer.score(ctx).float().masked_fill(keep, -math.inf)
        top = scores.topk(int(counts.max()), dim=1, sorted=sorted_topk).indices
        chosen = torch.arange(top.shape[1]).unsqueeze(0) < counts.unsqueeze(1)
        keep.scatter_(1, top, chosen | keep.gather(1, top))
    kept = keep.nonzero()[:, 1].view(heads, budget) + ctx.prefix_length
    prefix = torch.arange(ctx.prefix_length).expand(heads, -1)
    return torch.cat([prefix, kept], dim=1)


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(repeats: int = 200) -> dict[str, float]:
    """Best-of-`repeats` seconds of both implementations (interleaved in rounds) and whether they agree."""
    ctx = benchmark_context()
    policy = make_policy("infinipot")
    ours_fn = lambda: select_keep_indices(ctx, policy)  # noqa: E731
    plain_fn = lambda: topk_select(ctx, policy)  # noqa: E731  (topk's default: sorted)
    unsorted_fn = lambda: topk_select(ctx, policy, sorted_topk=False)  # noqa: E731
    for fn in (ours_fn, plain_fn, unsorted_fn):  # warm-up
        fn()
    ours, plain, unsorted = math.inf, math.inf, math.inf
    for _ in range(5):  # interleave so a noisy neighbour on a shared CPU hits all alike
        ours = min(ours, _best(ours_fn, repeats // 5))
        plain = min(plain, _best(plain_fn, repeats // 5))
        unsorted = min(unsorted, _best(unsorted_fn, repeats // 5))
    same = bool(torch.equal(ours_fn(), plain_fn())) and bool(torch.equal(ours_fn(), unsorted_fn()))
    deterministic = all(torch.equal(ours_fn(), ours_fn()) for _ in range(3))
    return {"ours_s": ours, "topk_s": plain, "topk_unsorted_s": unsorted, "ratio_topk_over_ours": plain / ours,
            "ratio_topk_unsorted_over_ours": unsorted / ours, "same_tokens": same, "deterministic": deterministic}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infinipot.bench_selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.repeats)
    print(f"H=4, 32 frames x 130 tokens, d=128, one layer, {args.threads} thread(s), best of {args.repeats}")
    print(f"shared selection: {1e3 * result['ours_s']:.3f} ms; plain topk: {1e3 * result['topk_s']:.3f} ms "
          f"(unsorted topk: {1e3 * result['topk_unsorted_s']:.3f} ms)")
    print(f"topk / ours = {result['ratio_topk_over_ours']:.2f}, unsorted topk / ours = "
          f"{result['ratio_topk_unsorted_over_ours']:.2f} (same tokens: {result['same_tokens']}, "
          f"deterministic: {result['deterministic']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
