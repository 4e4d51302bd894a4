"""Recency baseline (sliding window): the newest tokens score highest.

Why a scorer: the sliding-window baseline then shares the selection code with every other method.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from infinipot.scorers.base import Scorer, ScoringContext

__all__ = ["RecencyScorer"]


@dataclass(frozen=True)
class RecencyScorer(Scorer):
    """Score = the token's global stream index (newer = higher)."""

    def score(self, ctx: ScoringContext) -> torch.Tensor:
        return ctx.token_index.to(torch.float64)
