"""What a scorer sees and what it returns.

Why this split (the kvpress style): a scorer's only job is to rate tokens, higher = more worth keeping.
Budgets, protected tokens, per-head bookkeeping and the in-place gather live in one shared routine
(`infinipot.selection`), so every method, baselines included, runs through the same code and differs only in
its scores.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

__all__ = ["ScoringContext", "Scorer"]


@dataclass(frozen=True)
class ScoringContext:
    """One layer's evictable region (slots `prefix_length` .. length of the store), per KV head.

    Tensors are (H, n, ...) with n the number of evictable slots; every head holds the same count, but after
    earlier compactions the heads may hold different tokens, so all metadata is per head.
    """

    keys: torch.Tensor  # (H, n, D) cached keys (after RoPE, as the model stored them)
    values: torch.Tensor  # (H, n, D)
    token_index: torch.Tensor  # (H, n) int64, global id in the stream; increases with time
    frame_id: torch.Tensor  # (H, n) int64, temporal frame id, -1 for text
    patch_index: torch.Tensor  # (H, n) int64, row-major spatial index in the frame, -1 for text
    recent_mask: torch.Tensor  # (H, n) bool, tokens of the protected recent frames
    frame_grid: tuple[int, int]  # (rows, cols) of tokens per frame
    layer_idx: int
    num_layers: int
    budget: int  # evictable tokens to keep per head
    prefix_length: int = 0  # slots before the evictable region (never evicted); offsets the returned indices
    memory_frames: int = 0  # f: frames of the model that fit in |M|'s visual part (fixes the recent window)

    @property
    def num_heads(self) -> int:
        return int(self.keys.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.keys.shape[1])

    @property
    def tokens_per_frame(self) -> int:
        return int(self.frame_grid[0] * self.frame_grid[1])


class Scorer(ABC):
    """Rates the evictable tokens of one layer: `score(ctx)` -> (H, n) float, higher = keep."""

    @abstractmethod
    def score(self, ctx: ScoringContext) -> torch.Tensor:
        """Scores (H, n) for the tokens in `ctx`; must not modify `ctx`'s tensors."""
