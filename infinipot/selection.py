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
6. Frame text (timestamps, frame wrappers: frame_id >= 0, patch_index -1) is never scored and never counted
   as a frame's token by rules 2-4; it stays exactly as long as its frame keeps a visual token in that head,
   and it counts against the budget (`_select_with_frame_text`).
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


def tar_share_tokens(budget: int | torch.Tensor, tar_share: float) -> int | torch.Tensor:
    """The primary (TaR) share of a budget b, recent tokens included: b − round((1 − α)·b), the authors'
    rounding (halves to even, as Python's round and torch.round both do); `budget` an int, or per head (H,)."""
    if isinstance(budget, torch.Tensor):
        return budget - torch.round((1.0 - tar_share) * budget.to(torch.float64)).to(budget.dtype)
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


def _scores(ctx: ScoringContext, scorer, memo: dict | None) -> torch.Tensor:
    """`scorer.score(ctx)`, computed once per `memo` (rule 6 runs rules 2-4 at several budgets, and
    `compress_store` asks for one layer's rule-6 choice more than once)."""
    if memo is None:
        return scorer.score(ctx)
    if id(scorer) not in memo:
        memo[id(scorer)] = scorer.score(ctx)
    return memo[id(scorer)]


def _keep_mask(
    ctx: ScoringContext,
    policy: CompressionPolicy,
    budget: int | torch.Tensor,
    excluded: torch.Tensor,
    memo: dict | None = None,
) -> torch.Tensor:
    """(H, n) bool: rules 2-4 with `budget` slots per head (an int, or (H,) per head) among the tokens not
    `excluded`."""
    heads = ctx.token_index.shape[0]
    device = ctx.token_index.device
    recent = ctx.recent_mask & ~excluded
    budget_per_head = torch.as_tensor(budget, dtype=torch.int64, device=device).expand(heads).clone()
    kept_recent = recent.sum(1)
    fits = bool((kept_recent <= budget_per_head).all())
    if fits:
        keep = recent.clone()  # all recent tokens fit
    else:  # the newest `budget` of them by token index
        keep = _top_k_mask(ctx.token_index, ~recent, budget_per_head)
        kept_recent = keep.sum(1)
    left = budget_per_head - kept_recent
    if policy.secondary is None:
        primary_k, secondary_k = left, torch.zeros_like(left)
    else:
        if bool(recent.any()):  # rule 3
            share = tar_share_tokens(budget_per_head, policy.tar_share)
        else:  # no reference frame: TaR's share goes to the secondary (VaN)
            share = torch.zeros_like(budget_per_head)
        primary_k = (share - kept_recent).clamp(min=0)
        secondary_k = left - primary_k
    # with every recent token kept, `keep | excluded` is the exclusion mask itself
    out = (lambda: keep | excluded) if fits else (lambda: recent | keep | excluded)
    if bool((primary_k > 0).any()):
        keep |= _top_k_mask(_scores(ctx, policy.primary, memo), out(), primary_k)
    if policy.secondary is not None and bool((secondary_k > 0).any()):
        keep |= _top_k_mask(_scores(ctx, policy.secondary, memo), out(), secondary_k)
    return keep


def select_keep_indices(
    ctx: ScoringContext, policy: CompressionPolicy, *, fill_to: int | None = None, memo: dict | None = None
) -> torch.Tensor:
    """Slots to keep, (H, prefix_length + min(budget, n)) int64, ascending per head (module doc rules).

    With frame text the kept count may fall short of the budget by up to one frame's text and differ between
    heads; `fill_to` then sets the evictable count every head keeps, so that all layers agree
    (`compress_store` passes the smallest count any layer's head reaches). `memo`: a dict kept for this `ctx`
    across calls, so scores and the rule-6 choice are computed once."""
    heads, n = ctx.token_index.shape
    device = ctx.token_index.device
    budget = int(ctx.budget)
    if budget < 0:
        raise BudgetError(f"budget must be >= 0, got {budget}")
    prefix = torch.arange(ctx.prefix_length, device=device).expand(heads, -1)
    if n <= budget:
        return torch.arange(ctx.prefix_length + n, device=device).expand(heads, -1).clone()
    frame_text = (ctx.frame_id >= 0) & (ctx.patch_index < 0)
    if bool(frame_text.any()):
        keep = _select_with_frame_text(ctx, policy, frame_text, fill_to, memo)
    else:
        keep = _keep_mask(ctx, policy, budget, torch.zeros_like(frame_text))
    kept = keep.nonzero()[:, 1].view(heads, -1) + ctx.prefix_length  # row-major: ascending per head
    return torch.cat([prefix, kept], dim=1)


def _frame_held(ctx: ScoringContext, keep: torch.Tensor, frame_text: torch.Tensor) -> torch.Tensor:
    """(H, n) bool: the token's frame keeps at least one visual token in that head under `keep`."""
    frames = torch.unique(ctx.frame_id[ctx.frame_id >= 0])  # sorted
    dense = torch.searchsorted(frames, ctx.frame_id.clamp(min=0).contiguous()).clamp(max=frames.numel() - 1)
    counts = torch.zeros((keep.shape[0], frames.numel()), dtype=torch.int64, device=keep.device)
    counts.scatter_add_(1, dense, (keep & ~frame_text & (ctx.frame_id >= 0)).to(torch.int64))
    return (counts.gather(1, dense) > 0) & (ctx.frame_id >= 0)


def frame_text_kept_count(ctx: ScoringContext, policy: CompressionPolicy, memo: dict | None = None) -> int:
    """The smallest per-head evictable count rule 6 keeps in this layer before its heads are evened out."""
    frame_text = (ctx.frame_id >= 0) & (ctx.patch_index < 0)
    if ctx.num_tokens <= ctx.budget or not bool(frame_text.any()):
        return min(ctx.num_tokens, int(ctx.budget))
    return int(_choose_with_frame_text(ctx, policy, frame_text, memo).sum(1).min())


def _choose_with_frame_text(
    ctx: ScoringContext, policy: CompressionPolicy, frame_text: torch.Tensor, memo: dict | None = None
) -> torch.Tensor:
    """Rule 6 before evening out: per head, rules 2-4 at the largest visual budget b[h] whose tokens plus the
    text of their frames fit the budget. Kept in `memo` (do not modify the returned mask)."""
    memo = {} if memo is None else memo
    if "frame_text_choice" in memo:
        return memo["frame_text_choice"]
    budget = int(ctx.budget)

    def choose(visual_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = _keep_mask(ctx, policy, visual_b, frame_text, memo)
        keep |= frame_text & _frame_held(ctx, keep, frame_text)
        return keep, keep.sum(1)

    visual_b = torch.full((ctx.num_heads,), budget, dtype=torch.int64, device=ctx.token_index.device)
    keep, totals = choose(visual_b)
    while bool((totals > budget).any()):  # each step drops at least the overshoot; b = 0 keeps nothing
        visual_b = (visual_b - (totals - budget).clamp(min=0)).clamp(min=0)
        keep, totals = choose(visual_b)
    growing = visual_b < budget
    while bool(growing.any()):  # the overshoot step may have dropped a frame too many: take back what fits
        more, more_totals = choose(visual_b + growing.to(torch.int64))
        fits = growing & (more_totals <= budget)
        keep = torch.where(fits.unsqueeze(1), more, keep)
        totals = torch.where(fits, more_totals, totals)
        visual_b = visual_b + fits.to(torch.int64)
        growing = fits & (visual_b < budget)
    memo["frame_text_choice"] = keep
    return keep


def _select_with_frame_text(
    ctx: ScoringContext,
    policy: CompressionPolicy,
    frame_text: torch.Tensor,
    fill_to: int | None = None,
    memo: dict | None = None,
) -> torch.Tensor:
    """Rule 6: `_choose_with_frame_text`, then heads (and, through `fill_to`, layers) are evened out to the
    smallest count: a head above it gives up its lowest-rated slots (by the policy's last scorer; protected
    recent tokens last) with `_shrink_head`, so a frame's text still goes exactly with its last visual token."""
    keep = _choose_with_frame_text(ctx, policy, frame_text, memo)
    totals = keep.sum(1)
    target = int(totals.min()) if fill_to is None else int(fill_to)
    if not 0 <= target <= int(totals.min()):
        raise BudgetError(f"fill_to={fill_to} must lie in [0, {int(totals.min())}]")
    excess = (totals - target).tolist()
    if not any(excess):
        return keep
    scorer = policy.secondary if policy.secondary is not None else policy.primary
    scores = _scores(ctx, scorer, memo).double().nan_to_num(nan=-math.inf)
    keep = keep.clone()
    for head, extra in enumerate(excess):
        if extra:
            # lowest-rated first; the protected recent tokens only after every other one
            order = torch.argsort(scores[head].masked_fill(ctx.recent_mask[head], math.inf), stable=True).tolist()
            _shrink_head(keep[head], frame_text[head], ctx.frame_id[head].tolist(), order, extra)
    return keep


def _shrink_head(keep: torch.Tensor, frame_text: torch.Tensor, frame_id: list[int], order: list[int], extra: int) -> None:
    """Drop exactly `extra` slots of one head (in place), keeping rule 6 (a frame's text iff a visual token):
    1. its lowest-rated visual tokens from frames that keep another one (1 slot each);
    2. if that is not enough, whole frames, lowest-rated first (their last visual token and their text);
    3. if step 2 dropped too much, the best-rated visual tokens of frames still held come back (1 slot each).
    Raises BudgetError if no exact fit exists (a budget far too small for frames with text)."""
    visual_kept: dict[int, list[int]] = {}
    text_slots: dict[int, list[int]] = {}
    for slot in order:
        frame = frame_id[slot]
        if frame < 0 or not bool(keep[slot]):
            continue
        (text_slots if bool(frame_text[slot]) else visual_kept).setdefault(frame, []).append(slot)
    for slot in order:  # step 1
        if extra <= 0:
            break
        frame = frame_id[slot]
        if frame >= 0 and bool(keep[slot]) and not bool(frame_text[slot]) and len(visual_kept[frame]) > 1:
            keep[slot] = False
            visual_kept[frame].remove(slot)
            extra -= 1
    for slot in order:  # step 2
        if extra <= 0:
            break
        frame = frame_id[slot]
        if frame >= 0 and bool(keep[slot]) and not bool(frame_text[slot]):
            dropped = visual_kept.pop(frame) + text_slots.pop(frame, [])
            keep[dropped] = False
            extra -= len(dropped)
    for slot in reversed(order):  # step 3
        if extra >= 0:
            break
        frame = frame_id[slot]
        if frame in visual_kept and not bool(keep[slot]) and not bool(frame_text[slot]):
            keep[slot] = True
            extra += 1
    if extra != 0:
        raise BudgetError(
            "frame text: a KV head cannot reach the common kept length; raise the budget (it must hold "
            "several frames with their text)"
        )


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
        contexts = [
            build_context(store, layer_idx, recent_ratio=policy.recent_ratio, frame_grid=frame_grid, budget=budget,
                          memory_frames=memory_frames)
            for layer_idx in range(store.num_layers)
        ]
        # Frame text (rule 6) lets heads and layers differ in count; all must keep one length. A head that
        # cannot shrink to exactly that count (its frames' text comes in lumps) lowers it for everyone.
        memos: list[dict] = [{} for _ in contexts]  # one layer's scores and rule-6 choice, computed once
        fill = min(frame_text_kept_count(ctx, policy, memo) for ctx, memo in zip(contexts, memos))
        while True:
            try:
                keeps = [select_keep_indices(ctx, policy, fill_to=fill, memo=memo) for ctx, memo in zip(contexts, memos)]
                break
            except BudgetError:
                if fill == 0:
                    raise
                fill -= 1
        for layer_idx, keep in enumerate(keeps):
            store.compact(layer_idx, keep, check=False)
    if store.device.type == "cuda":
        torch.cuda.synchronize(store.device)
    duration = time.perf_counter() - start
    after = store.length
    return CompressionReport(before, after, before - after, duration)
