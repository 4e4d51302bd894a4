"""Budgets: bytes per token, tokens vs MiB, the paper's |C| = 0.75·|M|, and every BudgetError case."""
from __future__ import annotations

import pytest
import torch

from infinipot.budget import MIB, CacheBudget, kv_bytes_per_token, resolve_budget
from infinipot.errors import BudgetError, InfiniPotError


def test_bytes_per_token_formula() -> None:
    assert kv_bytes_per_token(28, 4, 128, torch.bfloat16) == 2 * 28 * 4 * 128 * 2
    assert kv_bytes_per_token(2, 2, 16, torch.float32) == 512
    assert kv_bytes_per_token(2, 2, 16, "float16") == 256


def test_no_budget_means_uncapped() -> None:
    assert resolve_budget(bytes_per_token=512) is None


def test_tokens_budget_uses_paper_ratio() -> None:
    budget = resolve_budget(bytes_per_token=512, budget_tokens=1000, reserve_tokens=64, prefix_tokens=20)
    assert budget == CacheBudget(threshold_tokens=1000, target_tokens=750, reserve_tokens=64)
    assert budget.capacity_tokens == 1064 and budget.step_tokens == 250


def test_mb_budget_caps_the_whole_allocation() -> None:
    bpt = kv_bytes_per_token(2, 2, 16, torch.float32)  # 512 B
    budget = resolve_budget(bytes_per_token=bpt, budget_mb=1.0, reserve_tokens=48)
    assert budget is not None
    assert budget.capacity_tokens == MIB // bpt == 2048
    assert budget.threshold_tokens == 2000 and budget.target_tokens == 1500
    assert budget.capacity_tokens * bpt <= MIB
    odd = resolve_budget(bytes_per_token=3000, budget_mb=1.0)
    assert odd is not None and odd.capacity_tokens * 3000 <= MIB < (odd.capacity_tokens + 1) * 3000


def test_explicit_target() -> None:
    budget = resolve_budget(bytes_per_token=1, budget_tokens=100, target_tokens=60)
    assert budget is not None and budget.target_tokens == 60


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(budget_tokens=100, budget_mb=1.0), "not both"),
        (dict(budget_tokens=0), "positive"),
        (dict(budget_tokens=100, target_ratio=1.0), "target_ratio"),
        (dict(budget_tokens=100, target_ratio=0.0), "target_ratio"),
        (dict(budget_tokens=100, target_tokens=100), "smaller than the threshold"),
        (dict(budget_tokens=100, prefix_tokens=75), "prefix"),
        (dict(budget_tokens=100, prefix_tokens=70, min_step_tokens=10), "prefix"),
        (dict(budget_tokens=100, min_step_tokens=30), "fewer than"),
        (dict(budget_mb=0.001, reserve_tokens=10), "reserve"),
        (dict(budget_mb=-1.0), "positive"),
        (dict(budget_tokens=100, reserve_tokens=-1), "reserve_tokens"),
    ],
)
def test_impossible_budgets_raise(kwargs: dict, fragment: str) -> None:
    with pytest.raises(BudgetError, match=fragment) as info:
        resolve_budget(bytes_per_token=512, **kwargs)
    assert isinstance(info.value, InfiniPotError) and isinstance(info.value, ValueError)
