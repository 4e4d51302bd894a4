"""A deliberately plain reference of the InfiniPot-V selection: Python loops, float64, no vector tricks.

Why: it is the test oracle for the fast vectorised path (`infinipot.selection` + `infinipot.scorers`), and a
baseline for the benchmark. It follows the formulas of the paper (Kim et al. 2025, arXiv 2506.15745, Sec. 3)
and the rules written in `infinipot.selection`'s module doc, recomputing everything itself (recent frames,
TaR, VaN with masked pooling) from the context's raw tensors; `ctx.recent_mask` is ignored. Scorers other than
TaR and VaN (uniform, recency) are taken as given from their `score()`: their selection still runs here.
It is slow on purpose: never use it on the hot path.
"""
from __future__ import annotations

import math

import torch

from infinipot.policies import CompressionPolicy
from infinipot.scorers.base import Scorer, ScoringContext
from infinipot.scorers.tar import TaRScorer
from infinipot.scorers.van import VaNScorer

__all__ = ["reference_recent_frames", "reference_tar_scores", "reference_van_scores", "reference_select"]


def reference_recent_frames(ctx: ScoringContext, recent_ratio: float) -> set[int]:
    """Ids of the newest R frames held over all heads. R = r·f rounded down, at least 1 (0 if r <= 0), with f =
    `ctx.memory_frames`, the frames that fit in |M|: fixed by the budget, not by how many frames are held."""
    if recent_ratio <= 0 or ctx.memory_frames <= 0:
        return set()
    count = 1
    while (count + 1) <= recent_ratio * ctx.memory_frames:
        count += 1
    held = sorted({f for row in ctx.frame_id.tolist() for f in row if f >= 0})
    newest: set[int] = set()
    for frame in reversed(held):
        if len(newest) == count:
            break
        newest.add(frame)
    return newest


def _unit(vector: list[float]) -> list[float]:
    length = math.sqrt(sum(x * x for x in vector))
    return [x / max(length, 1e-12) for x in vector]


def reference_tar_scores(ctx: ScoringContext, recent: set[int]) -> list[list[float]]:
    """TaR per head and token: −mean over recent frames of cos(key, key at the same patch in that frame)."""
    scores: list[list[float]] = []
    keys = ctx.keys.double().tolist()
    frame_id, patch_index = ctx.frame_id.tolist(), ctx.patch_index.tolist()
    for h in range(ctx.num_heads):
        reference: dict[tuple[int, int], list[float]] = {}
        for i in range(ctx.num_tokens):
            if frame_id[h][i] in recent and patch_index[h][i] >= 0:
                reference[(frame_id[h][i], patch_index[h][i])] = _unit(keys[h][i])
        row = []
        for i in range(ctx.num_tokens):
            frame, patch = frame_id[h][i], patch_index[h][i]
            if frame in recent:
                row.append(math.inf)
                continue
            if frame < 0 or patch < 0:
                row.append(0.0)
                continue
            key = _unit(keys[h][i])
            sims = []
            for f in sorted(recent):
                if (f, patch) in reference:
                    sims.append(sum(a * b for a, b in zip(key, reference[(f, patch)])))
            row.append(-sum(sims) / len(sims) if sims else 0.0)
        scores.append(row)
    return scores


def reference_van_scores(ctx: ScoringContext, pooling: bool) -> list[list[float]]:
    """VaN per head and token: value L2 norm, optionally window-averaged over the tokens present in the frame
    (2-D kernel 7 / 2-D kernel 5 / 1-D kernel 3 / none by layer quarter)."""
    values = ctx.values.double().tolist()
    frame_id, patch_index = ctx.frame_id.tolist(), ctx.patch_index.tolist()
    rows, cols = ctx.frame_grid
    quarter = min(3, (4 * ctx.layer_idx) // max(1, ctx.num_layers))
    dims, kernel = ((2, 7), (2, 5), (1, 3), (0, 1))[quarter] if pooling else (0, 1)
    half = kernel // 2
    scores: list[list[float]] = []
    for h in range(ctx.num_heads):
        norms = [math.sqrt(sum(x * x for x in values[h][i])) for i in range(ctx.num_tokens)]
        present = {
            (frame_id[h][i], patch_index[h][i]): norms[i]
            for i in range(ctx.num_tokens)
            if frame_id[h][i] >= 0 and patch_index[h][i] >= 0
        }
        row = []
        for i in range(ctx.num_tokens):
            frame, patch = frame_id[h][i], patch_index[h][i]
            if dims == 0 or frame < 0 or patch < 0:
                row.append(norms[i])
                continue
            window = []
            if dims == 2:
                r, c = divmod(patch, cols)
                for rr in range(r - half, r + half + 1):
                    for cc in range(c - half, c + half + 1):
                        if 0 <= rr < rows and 0 <= cc < cols and (frame, rr * cols + cc) in present:
                            window.append(present[(frame, rr * cols + cc)])
            else:
                for pp in range(patch - half, patch + half + 1):
                    if 0 <= pp < rows * cols and (frame, pp) in present:
                        window.append(present[(frame, pp)])
            row.append(sum(window) / len(window))
        scores.append(row)
    return scores


def _reference_scores(scorer: Scorer, ctx: ScoringContext, recent: set[int]) -> list[list[float]]:
    if isinstance(scorer, TaRScorer):
        return reference_tar_scores(ctx, recent)
    if isinstance(scorer, VaNScorer):
        return reference_van_scores(ctx, scorer.pooling)
    return scorer.score(ctx).double().tolist()


def _best(candidates: list[int], scores: list[float], count: int) -> list[int]:
    """The `count` best candidates by score, ties to the lower slot."""
    ranked = sorted(candidates, key=lambda i: (-scores[i], i))
    return ranked[: max(0, count)]


def reference_select(ctx: ScoringContext, policy: CompressionPolicy) -> torch.Tensor:
    """Kept slot indices per head, (H, prefix_length + min(budget, n)), ascending: same contract as
    `infinipot.selection.select_keep_indices`."""
    n, budget, prefix = ctx.num_tokens, ctx.budget, ctx.prefix_length
    if n <= budget:
        return torch.arange(prefix + n).expand(ctx.num_heads, -1).clone()
    recent = reference_recent_frames(ctx, policy.recent_ratio)
    primary = _reference_scores(policy.primary, ctx, recent)
    secondary = _reference_scores(policy.secondary, ctx, recent) if policy.secondary is not None else None
    token_index, frame_id = ctx.token_index.tolist(), ctx.frame_id.tolist()
    result = []
    for h in range(ctx.num_heads):
        recent_slots = [i for i in range(n) if frame_id[h][i] in recent]
        kept = sorted(recent_slots, key=lambda i: -token_index[h][i])[:budget]
        if secondary is None:
            primary_count = budget - len(kept)
        elif not recent:
            primary_count = 0  # no reference frame: the primary's (TaR's) share goes to the secondary
        else:
            secondary_share = int(math.floor((1.0 - policy.tar_share) * budget + 0.5))
            if (1.0 - policy.tar_share) * budget + 0.5 == secondary_share and secondary_share % 2:
                secondary_share -= 1  # an exact half rounds to even, as the authors' Python round() does
            primary_count = max(0, (budget - secondary_share) - len(kept))
        older = [i for i in range(n) if frame_id[h][i] not in recent]
        kept += _best(older, primary[h], primary_count)
        if secondary is not None:
            rest = [i for i in older if i not in kept]
            kept += _best(rest, secondary[h], budget - len(kept))
        result.append([prefix + i for i in sorted(kept)])
    prefix_slots = list(range(prefix))
    return torch.tensor([prefix_slots + row for row in result], dtype=torch.int64).view(ctx.num_heads, -1)
