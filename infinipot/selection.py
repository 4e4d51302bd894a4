"""The one selection routine: from scores to the kept slots, and the compression pass over a store.

Why one routine: every policy (InfiniPot-V and the baselines) must apply budgets, protected tokens and the
per-head gather in exactly the same way, so that comparisons measure the scores and nothing else.

Rules, per layer and per KV head (InfiniPot-V, arXiv 2506.15745, Sec. 3; facts in shared/notes):
1. The prefix slots [0, prefix_length) are always kept and never move.
2. Recent frames: R = max(1, floor(recent_ratio·f)) for recent_ratio > 0, else 0, where f = `memory_frames`,
   the frames of the model that fit in the visual part of |M| ((|M| − prefix) // tokens per frame). R is
   fixed by the budget (the paper's r·f, App. A.2; the authors' `int(current_frames·query_ratio)`), the same
   at every compression. It is NOT the number of distinct frame ids still held: older frames keep a few
   tokens each after every pass, so that count grows and the recent block would swallow the budget. (At
   least one frame when recent_ratio > 0, so TaR always has a reference.) The newest R frame ids held in the
   layer (over all its heads) are protected: their tokens are kept; if they alone exceed the budget, the
   newest of them by token_index are kept.
3. Primary scorer: with a secondary scorer it gets the authors' share b − round((1 − tar_share)·b) of the
   budget b, recent tokens included, so max(0, that − recent) of its top-scored older tokens are forced in;
   without one it fills the rest. With no recent frames (recent_ratio 0) a primary that has a secondary
   has no reference frame (TaR): its share goes to the secondary (VaN).
4. Secondary scorer: fills the rest of the budget with its top scores among the tokens still out.
5. Ties rank the older slot first. Kept slots are returned in ascending slot (= temporal) order.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from infinipot.errors import BudgetError, PolicyError
from infinipot.kv_store import FixedKVStore
from infinipot.policies import CompressionPolicy
from infinipot.scorers.base import ScoringContext

__all__ = [
    "CompressionReport",
    "recent_frame_count",
    "recent_frame_mask",
    "tar_share_tokens",
    "build_context",
    "select_keep_indices",
    "compress_store",
]


@dataclass(frozen=True)
class CompressionReport:
    """What one compression pass did (token counts are per layer and head, prefix included)."""

    tokens_before: int
    tokens_after: int
    tokens_evicted: int
    duration_s: float


def recent_frame_count(memory_frames: int, recent_ratio: float) -> int:
    """R = max(1, floor(f·r)) for r > 0 and f > 0, else 0; f = frames that fit in |M| (rule 2)."""
    if recent_ratio <= 0.0 or memory_frames <= 0:
        return 0
    return max(1, math.floor(memory_frames * recent_ratio))


def tar_share_tokens(budget: int, tar_share: float) -> int:
    """The primary (TaR) share of a budget b, recent tokens included: b − round((1 − α)·b), the authors'
    rounding (Python's round, halves to even)."""
    return int(budget) - round((1.0 - tar_share) * int(budget))


def recent_frame_mask(frame_id: torch.Tensor, count: int) -> torch.Tensor:
    """(H, n) bool: tokens of the newest `count` frame ids held, frames counted over all heads (rule 2)."""
    if count <= 0:
        return torch.zeros_like(frame_id, dtype=torch.bool)
    frames = torch.unique(frame_id[frame_id >= 0])  # sorted ascending
    return torch.isin(frame_id, frames[-count:])


def build_context(
    store: FixedKVStore,
    layer_idx: int,
    *,
    recent_ratio: float,
    frame_grid: tuple[int, int],
    budget: int,
    memory_frames: int | None = None,
) -> ScoringContext:
    """The scoring context of one store layer: its evictable slots [prefix_length, length).

    memory_frames: f of rule 2. None = the evictable tokens held now in frames' worth (length − prefix) //
    tokens per frame: the authors' `current_frames`, which is f when called at the trigger (store full)."""
    prefix = store.prefix_length
    keys, values = store.view(layer_idx)
    token_index, frame_id, patch_index = (m[:, prefix:].long() for m in store.metadata(layer_idx))
    per_frame = int(frame_grid[0]) * int(frame_grid[1])
    if memory_frames is None:
        memory_frames = int(frame_id.shape[1]) // max(1, per_frame)
    return ScoringContext(
        keys=keys[0, :, prefix:],
        values=values[0, :, prefix:],
        token_index=token_index,
        frame_id=frame_id,
        patch_index=patch_index,
        recent_mask=recent_frame_mask(frame_id, recent_frame_count(memory_frames, recent_ratio)),
        frame_grid=(int(frame_grid[0]), int(frame_grid[1])),
        layer_idx=layer_idx,
        num_layers=store.num_layers,
        budget=int(budget),
        prefix_length=prefix,
        memory_frames=int(memory_frames),
    )


def _top_k_mask(scores: torch.Tensor, excluded: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(H, n) bool: per head the k[h] best-scored tokens that are not excluded (ties: lower slot first).

    Fast path (every head the same k, no tie across the boundary: the usual case for continuous scores): one
    unsorted `topk` gives each head's k-th best key v, and when exactly k keys are >= v that set is the answer,
    whatever order topk returned. Otherwise (ties at the boundary, fewer candidates than k, per-head k) the
    exact stable sort decides. Both give the same set, never dependent on topk's tie order: deterministic."""
    heads, n = scores.shape
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.to(torch.float64)
    k_max, k_min = int(k.max()), int(k.min())
    if k_max <= 0:
        return torch.zeros_like(excluded)
    if k_min == k_max <= n:
        # A NaN or infinite candidate makes the boundary non-finite (topk ranks NaN first): then the exact path.
        key = scores.masked_fill(excluded, -math.inf)
        boundary = key.topk(k_max, dim=1, sorted=False).values.min(dim=1, keepdim=True).values  # (H, 1)
        chosen = key >= boundary
        if bool(((chosen.sum(1) == k_max) & torch.isfinite(boundary[:, 0])).all()):
            return chosen
    largest = torch.finfo(scores.dtype).max
    # Candidates get finite keys (NaN = worst), excluded tokens -inf, so candidates outrank every excluded one.
    key = torch.nan_to_num(scores, nan=-largest, posinf=largest, neginf=-largest).masked_fill_(excluded, -math.inf)
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=order.device).expand(heads, n))
    return ~excluded & (rank < k.unsqueeze(1))


def select_keep_indices(ctx: ScoringContext, policy: CompressionPolicy) -> torch.Tensor:
    """Slots to keep, (H, prefix_length + min(budget, n)) int64, ascending per head (module doc rules)."""
    heads, n = ctx.token_index.shape
    device = ctx.token_index.device
    budget = int(ctx.budget)
    if budget < 0:
        raise BudgetError(f"budget must be >= 0, got {budget}")
    prefix = torch.arange(ctx.prefix_length, device=device).expand(heads, -1)
    if n <= budget:
        return torch.arange(ctx.prefix_length + n, device=device).expand(heads, -1).clone()

    recent = ctx.recent_mask
    kept_recent = recent.sum(1)
    fits = bool((kept_recent <= budget).all())
    if fits:
        keep = recent.clone()  # all recent tokens fit
    else:  # the newest `budget` of them by token index
        budget_per_head = torch.full((heads,), budget, dtype=torch.int64, device=device)
        keep = _top_k_mask(ctx.token_index, ~recent, budget_per_head)
        kept_recent = keep.sum(1)
    left = budget - kept_recent
    if policy.secondary is None:
        primary_k, secondary_k = left, torch.zeros_like(left)
    else:
        share = tar_share_tokens(budget, policy.tar_share) if bool(recent.any()) else 0  # rule 3
        primary_k = (share - kept_recent).clamp(min=0)
        secondary_k = left - primary_k
    # keep already holds every recent token when they fit, so it is the exclusion mask itself.
    excluded = (lambda: keep) if fits else (lambda: recent | keep)
    if bool((primary_k > 0).any()):
        keep |= _top_k_mask(policy.primary.score(ctx), excluded(), primary_k)
    if policy.secondary is not None and bool((secondary_k > 0).any()):
        keep |= _top_k_mask(policy.secondary.score(ctx), excluded(), secondary_k)

    kept = keep.nonzero()[:, 1].view(heads, budget) + ctx.prefix_length  # row-major: ascending per head
    return torch.cat([prefix, kept], dim=1)


def compress_store(
    store: FixedKVStore,
    policy: CompressionPolicy,
    target_tokens: int,
    frame_grid: tuple[int, int],
    memory_frames: int | None = None,
) -> CompressionReport:
    """Shrink every layer of `store` in place to `target_tokens` (|C|, prefix included) with `policy`.

    memory_frames: f, the frames that fit in |M| (rule 2); the session passes the value its budget fixes.
    None = the tokens held at this call in frames' worth (the authors' rule at the trigger)."""
    if policy is None:
        raise PolicyError("the full-cache policy has no compression; do not call compress_store for it")
    if target_tokens < store.prefix_length:
        raise BudgetError(
            f"target {target_tokens} tokens is smaller than the protected prefix of {store.prefix_length}"
        )
    before = store.length
    if len(set(store.layer_length(i) for i in range(store.num_layers))) != 1:
        raise ValueError("store layers hold different lengths; compress only between forwards")
    start = time.perf_counter()
    if before > target_tokens:
        budget = target_tokens - store.prefix_length
        if memory_frames is None:
            memory_frames = (before - store.prefix_length) // max(1, int(frame_grid[0]) * int(frame_grid[1]))
        for layer_idx in range(store.num_layers):
            ctx = build_context(
                store, layer_idx, recent_ratio=policy.recent_ratio, frame_grid=frame_grid, budget=budget,
                memory_frames=memory_frames,
            )
            store.compact(layer_idx, select_keep_indices(ctx, policy), check=False)
    if store.device.type == "cuda":
        torch.cuda.synchronize(store.device)
    duration = time.perf_counter() - start
    after = store.length
    return CompressionReport(before, after, before - after, duration)
