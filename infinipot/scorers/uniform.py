"""Uniform baseline: keep `budget` evenly spaced tokens (the paper's "uniform" comparison).

Why a scorer: so the baseline runs through the same selection code as TaR/VaN. Per head, the tokens at
evenly spaced positions in slot (= temporal) order get score 1, the others 0; the selection's tie-break
(older slot first) only matters when the budget covers them all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from infinipot.scorers.base import Scorer, ScoringContext

__all__ = ["UniformScorer"]


@dataclass(frozen=True)
class UniformScorer(Scorer):
    """Score 1 for `ctx.budget` evenly spaced tokens (floor(j·n/budget), j < budget), 0 for the rest."""

    def score(self, ctx: ScoringContext) -> torch.Tensor:
        heads, n = ctx.token_index.shape
        scores = torch.zeros((heads, n), dtype=torch.float32, device=ctx.keys.device)
        picks = min(ctx.budget, n)
        if picks > 0:
            chosen = (torch.arange(picks, device=scores.device) * n) // picks
            scores[:, chosen] = 1.0
        return scores
