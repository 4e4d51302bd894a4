"""VaN: Value Norm (InfiniPot-V, Kim et al. 2025, arXiv 2506.15745, Sec. 3.3).

Why: tokens with large value vectors carry more of what attention writes into the residual stream, so the L2
norm of a token's cached value, per KV head, is a cheap, question-free importance estimate.

Layer-adaptive pooling (the paper's spatial smoothing, by layer quarter q = floor(4·layer/num_layers)):
q=0 2-D average pool, kernel 7, over each frame's (rows, cols) score map; q=1 2-D, kernel 5; q=2 1-D, kernel 3
along the row-major patch order; q=3 none. "Same" padding, padded cells not counted.

After earlier evictions a frame may be incomplete in a head. So the scores are scattered into a dense
(frames, rows, cols) grid with a presence mask, pooled as sum(score·mask)/sum(mask) over each window (the
masked average: absent tokens and padding count for nothing), and gathered back. Tokens off the grid (text)
keep their raw norm.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from infinipot.scorers.base import Scorer, ScoringContext

__all__ = ["VaNScorer", "van_pooling_for_layer"]


def van_pooling_for_layer(layer_idx: int, num_layers: int) -> tuple[int, int]:
    """(dimensions, kernel) of the pooling for a layer: (2, 7), (2, 5), (1, 3) or (0, 1) = none."""
    quarter = min(3, (4 * layer_idx) // max(1, num_layers))
    return ((2, 7), (2, 5), (1, 3), (0, 1))[quarter]


@dataclass(frozen=True)
class VaNScorer(Scorer):
    """Higher = larger value norm (optionally smoothed over space, by layer)."""

    pooling: bool = True

    def score(self, ctx: ScoringContext) -> torch.Tensor:
        norms = ctx.values.float().norm(dim=-1)  # (H, n)
        if not self.pooling:
            return norms
        dims, kernel = van_pooling_for_layer(ctx.layer_idx, ctx.num_layers)
        if dims == 0:
            return norms
        return _masked_pool(norms, ctx, dims, kernel)


def _masked_pool(norms: torch.Tensor, ctx: ScoringContext, dims: int, kernel: int) -> torch.Tensor:
    heads, n = norms.shape
    rows, cols = ctx.frame_grid
    positions = rows * cols
    on_grid = (ctx.frame_id >= 0) & (ctx.patch_index >= 0)
    if not bool(on_grid.any()):
        return norms
    frames = torch.unique(ctx.frame_id[on_grid])  # sorted
    dense_frame = torch.searchsorted(frames, ctx.frame_id.clamp(min=0).contiguous())
    dense_frame = dense_frame.clamp(max=frames.numel() - 1)
    cell = dense_frame * positions + ctx.patch_index.clamp(min=0)  # (H, n) index into (frames·positions)
    cells = frames.numel() * positions

    total = norms.new_zeros((heads, cells)).scatter_add_(1, cell, norms * on_grid)
    present = norms.new_zeros((heads, cells)).scatter_add_(1, cell, on_grid.to(norms.dtype))
    pad = kernel // 2
    if dims == 2:
        shape = (heads * frames.numel(), 1, rows, cols)
        pool = lambda x: F.avg_pool2d(x.view(shape), kernel, stride=1, padding=pad, count_include_pad=True)
    else:
        shape = (heads * frames.numel(), 1, positions)
        pool = lambda x: F.avg_pool1d(x.view(shape), kernel, stride=1, padding=pad, count_include_pad=True)
    # Both window sums share the factor 1/kernel^d, which cancels in the ratio.
    smoothed = pool(total).reshape(heads, cells) / pool(present).reshape(heads, cells).clamp(min=1e-12)
    pooled = smoothed.gather(1, cell)
    return torch.where(on_grid, pooled, norms)
