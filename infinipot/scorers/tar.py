"""TaR: Temporal-axis Redundancy (InfiniPot-V, Kim et al. 2025, arXiv 2506.15745, Sec. 3.2).

Why: a patch whose key barely changed since the recent frames says nothing new, so it can go; a patch that
changed (a moving object, a new scene) should stay. For every token of an older frame the score is
    TaR(i) = − mean_{f in recent frames} cos(k̂_i, k̂_{f, p(i)})
with k̂ the L2-normalised cached key and p(i) the token's spatial position, per KV head.

Vectorisation: the mean of dot products with the recent keys at one position equals the dot product with
their sum, divided by their count. So one index-add builds per head a (positions, D) sum of the recent
frames' normalised keys, and each token needs one row lookup and one dot product: O(H·n·D), no loop over
tokens or frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from infinipot.scorers.base import Scorer, ScoringContext

__all__ = ["TaRScorer"]


@dataclass(frozen=True)
class TaRScorer(Scorer):
    """Higher = less redundant with the recent frames. Recent-frame tokens score +inf (always kept); tokens
    whose position no recent frame holds in that head (or text tokens) score 0."""

    def score(self, ctx: ScoringContext) -> torch.Tensor:
        heads, n, dim = ctx.keys.shape
        positions = ctx.tokens_per_frame
        keys = ctx.keys.float()
        inv_norm = 1.0 / keys.norm(dim=-1).clamp(min=1e-12)  # (H, n): F.normalize's eps
        on_grid = (ctx.patch_index >= 0) & (ctx.frame_id >= 0)
        head = torch.arange(heads, device=keys.device).unsqueeze(1)
        cell = (head * positions + ctx.patch_index.clamp(min=0)).reshape(-1)  # (H·n,) into (H·P)

        # Sum and count of the recent frames' normalised keys at each (head, position).
        reference = (ctx.recent_mask & on_grid).reshape(-1).nonzero().squeeze(1)
        flat_keys = keys.reshape(heads * n, dim)
        unit_reference = flat_keys.index_select(0, reference) * inv_norm.reshape(-1)[reference].unsqueeze(1)
        ref_sum = keys.new_zeros((heads * positions, dim)).index_add_(0, cell[reference], unit_reference)
        ref_count = torch.bincount(cell[reference], minlength=heads * positions).to(keys.dtype)

        # mean cos = (k / |k|) · sum / count, for every token at once.
        dots = (flat_keys * ref_sum.index_select(0, cell)).sum(-1).view(heads, n)
        count = ref_count.index_select(0, cell).view(heads, n)
        mean_cos = dots * inv_norm / count.clamp(min=1.0)
        scores = torch.where(on_grid & (count > 0), -mean_cos, torch.zeros_like(mean_cos))
        return scores.masked_fill(ctx.recent_mask, float("inf"))
