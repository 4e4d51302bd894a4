"""KV cache budgets: the threshold |M|, the target |C| and the headroom for a question.

Why a module of its own: the user gives a budget in tokens or in MiB, the store needs a capacity in tokens,
and the session needs to know when to compress and down to what. Converting and validating in one place
means an impossible budget fails at start-up with a clear `BudgetError`, never mid-stream.

Terms (InfiniPot-V, Kim et al. 2025, arXiv 2506.15745, Sec. 3): the cache is compressed when it would exceed
the threshold |M| and shrunk to the target |C| (the paper uses |C| = 0.75·|M|). Both count every cached token,
the protected text prefix included. `reserve_tokens` is extra room above |M| for the question and answer
tokens, which are appended and rolled back without compressing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from infinipot.errors import BudgetError

__all__ = ["CacheBudget", "kv_bytes_per_token", "resolve_budget", "MIB"]

#: bytes in one MiB; `budget_mb` is in MiB
MIB = 2**20


def _element_size(dtype: torch.dtype | str) -> int:
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise BudgetError(f"unknown dtype {dtype!r}")
        dtype = resolved
    return torch.empty((), dtype=dtype).element_size()


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype | str) -> int:
    """Bytes one cached token costs: keys + values over every layer and KV head (2·L·H·D·element size)."""
    for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
        if value <= 0:
            raise BudgetError(f"{name} must be positive, got {value}")
    return 2 * num_layers * num_kv_heads * head_dim * _element_size(dtype)


@dataclass(frozen=True)
class CacheBudget:
    """A resolved, validated budget, in tokens (all counts include the protected prefix)."""

    threshold_tokens: int  # |M|: compress when the cache would exceed this many tokens
    target_tokens: int  # |C|: what a compression pass shrinks the cache to
    reserve_tokens: int  # headroom above |M| for question + answer tokens (rolled back after an answer)

    @property
    def capacity_tokens(self) -> int:
        """Slots the KV store allocates once: |M| plus the question/answer reserve."""
        return self.threshold_tokens + self.reserve_tokens

    @property
    def step_tokens(self) -> int:
        """New tokens that fit after a compression before the next one: |M| − |C|."""
        return self.threshold_tokens - self.target_tokens


def resolve_budget(
    *,
    bytes_per_token: int,
    budget_tokens: int | None = None,
    budget_mb: float | None = None,
    target_ratio: float = 0.75,
    reserve_tokens: int = 0,
    prefix_tokens: int = 0,
    min_step_tokens: int = 1,
    target_tokens: int | None = None,
) -> CacheBudget | None:
    """Turn a user budget into a `CacheBudget`, or None for the uncapped full-cache baseline.

    `budget_tokens` is the threshold |M| directly. `budget_mb` is the hard cap of the WHOLE allocation
    (|M| + reserve) in MiB, so |M| = floor(budget_mb·2^20 / bytes_per_token) − reserve_tokens.
    The target is `target_tokens` if given, else floor(|M|·target_ratio).

    Raises BudgetError when the budget cannot work: both forms given, non-positive sizes, a ratio outside
    (0, 1), a target that would not keep the prefix plus `min_step_tokens`, or a gap |M| − |C| smaller than
    `min_step_tokens` (then a compression would not make room for the next block).
    """
    if budget_tokens is not None and budget_mb is not None:
        raise BudgetError("give either budget_tokens or budget_mb, not both")
    if bytes_per_token <= 0:
        raise BudgetError(f"bytes_per_token must be positive, got {bytes_per_token}")
    if reserve_tokens < 0:
        raise BudgetError(f"reserve_tokens must be >= 0, got {reserve_tokens}")
    if prefix_tokens < 0:
        raise BudgetError(f"prefix_tokens must be >= 0, got {prefix_tokens}")
    if min_step_tokens < 1:
        raise BudgetError(f"min_step_tokens must be >= 1, got {min_step_tokens}")
    if not (0.0 < target_ratio < 1.0):
        raise BudgetError(f"target_ratio must be in (0, 1), got {target_ratio}")
    if budget_tokens is None and budget_mb is None:
        return None

    if budget_mb is not None:
        if not (budget_mb > 0 and math.isfinite(budget_mb)):
            raise BudgetError(f"budget_mb must be a positive number, got {budget_mb}")
        total_tokens = int(budget_mb * MIB) // bytes_per_token
        threshold = total_tokens - reserve_tokens
        if threshold <= 0:
            raise BudgetError(
                f"budget_mb={budget_mb} MiB holds {total_tokens} tokens at {bytes_per_token} B/token, "
                f"not more than the reserve of {reserve_tokens} tokens"
            )
    else:
        threshold = int(budget_tokens)  # type: ignore[arg-type]
        if threshold != budget_tokens or threshold <= 0:
            raise BudgetError(f"budget_tokens must be a positive integer, got {budget_tokens}")

    target = int(math.floor(threshold * target_ratio)) if target_tokens is None else int(target_tokens)
    if target >= threshold:
        raise BudgetError(f"target |C|={target} must be smaller than the threshold |M|={threshold}")
    if target < prefix_tokens + min_step_tokens:
        raise BudgetError(
            f"target |C|={target} tokens cannot hold the protected prefix ({prefix_tokens} tokens) plus "
            f"{min_step_tokens} stream tokens; raise the budget (threshold |M|={threshold})"
        )
    if threshold - target < min_step_tokens:
        raise BudgetError(
            f"threshold |M|={threshold} minus target |C|={target} leaves {threshold - target} tokens, "
            f"fewer than one step of {min_step_tokens} tokens; raise the budget or lower target_ratio"
        )
    return CacheBudget(threshold_tokens=threshold, target_tokens=target, reserve_tokens=reserve_tokens)
