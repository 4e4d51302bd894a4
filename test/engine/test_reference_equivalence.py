"""The fast selection (vectorised scorers + select_keep_indices) picks exactly the reference's tokens.

The reference (`infinipot.reference`) recomputes recent frames, TaR and VaN with plain loops in float64.
Inputs are random (continuous values, so no ties at the budget boundary) and structured: frames made
incomplete per head by an earlier random compaction, text tokens inside the evictable region, grids smaller
than the pooling kernels, and every layer quarter (pooling kind).
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinipot.kv_store import FixedKVStore
from infinipot.policies import make_policy
from infinipot.reference import (
    reference_recent_frames,
    reference_select,
    reference_tar_scores,
    reference_van_scores,
)
from infinipot.scorers import TaRScorer, VaNScorer
from infinipot.selection import build_context, select_keep_indices

POLICIES = [
    make_policy("infinipot"),
    make_policy("infinipot", van_pooling=False, recent_ratio=0.125, tar_share=0.7),
    make_policy("tar"),
    make_policy("van"),
    make_policy("van", van_pooling=False, recent_ratio=0.5),
    make_policy("uniform"),
    make_policy("sliding_window"),
]
LAYERS = 8  # two layers per quarter: every pooling kind is exercised


def _random_stream(
    seed: int, heads: int, frames: int, grid: tuple[int, int], prefix: int, text_every: int
) -> FixedKVStore:
    """Prefix text, then frames; a text token after every `text_every`-th frame (0 = none)."""
    g = torch.Generator().manual_seed(seed)
    per_frame = grid[0] * grid[1]
    frame_id, patch = [-1] * prefix, [-1] * prefix
    for f in range(frames):
        frame_id += [f] * per_frame
        patch += list(range(per_frame))
        if text_every and f % text_every == text_every - 1:
            frame_id.append(-1)
            patch.append(-1)
    n = len(frame_id)
    store = FixedKVStore(LAYERS, heads, 6, capacity=n)
    store.stage_tokens(torch.arange(n), torch.tensor(frame_id), torch.tensor(patch))
    for layer in range(LAYERS):
        scale = torch.rand(1, heads, n, 1, generator=g) * 3
        store.update(torch.randn(1, heads, n, 6, generator=g),
                     torch.randn(1, heads, n, 6, generator=g) * scale, layer)
    store.set_prefix_length(prefix)
    return store


def _punch_holes(store: FixedKVStore, seed: int, fraction: float) -> None:
    """An earlier per-head, per-layer compaction: random, different in every head."""
    g = torch.Generator().manual_seed(seed + 1000)
    prefix, length = store.prefix_length, store.length
    keep_count = prefix + int((length - prefix) * (1 - fraction))
    for layer in range(store.num_layers):
        rows = []
        for _ in range(store.num_kv_heads):
            chosen = torch.randperm(length - prefix, generator=g)[: keep_count - prefix] + prefix
            rows.append(torch.cat([torch.arange(prefix), chosen.sort().values]))
        store.compact(layer, torch.stack(rows))


def _assert_same_selection(store: FixedKVStore, grid: tuple[int, int], budget: int) -> None:
    # f = None: the tokens held in frames' worth; f = 8 and 16: fixed by a budget, more than the frames held
    # after holes, so the recent window is not the count of frames held.
    for memory_frames in (None, 8, 16):
        for policy in POLICIES:
            for layer in range(LAYERS):
                ctx = build_context(
                    store, layer, recent_ratio=policy.recent_ratio, frame_grid=grid, budget=budget,
                    memory_frames=memory_frames,
                )
                fast = select_keep_indices(ctx, policy)
                slow = reference_select(ctx, policy)
                assert torch.equal(fast, slow), f"{policy.name} f={memory_frames} layer {layer}: {fast} != {slow}"


def test_scores_match_reference_formulas() -> None:
    store = _random_stream(seed=1, heads=3, frames=6, grid=(3, 4), prefix=2, text_every=4)
    _punch_holes(store, seed=1, fraction=0.3)
    for layer in range(LAYERS):
        ctx = build_context(store, layer, recent_ratio=0.25, frame_grid=(3, 4), budget=10)
        recent = reference_recent_frames(ctx, 0.25)
        assert torch.equal(ctx.recent_mask, torch.isin(ctx.frame_id, torch.tensor(sorted(recent))))
        tar = torch.tensor(reference_tar_scores(ctx, recent), dtype=torch.float64)
        assert torch.allclose(TaRScorer().score(ctx).double(), tar, atol=1e-5)
        for pooling in (True, False):
            van = torch.tensor(reference_van_scores(ctx, pooling), dtype=torch.float64)
            assert torch.allclose(VaNScorer(pooling).score(ctx).double(), van, atol=1e-5)


def test_seeded_streams_select_the_same_tokens() -> None:
    cases = [
        dict(heads=2, frames=8, grid=(3, 4), prefix=3, text_every=0, holes=0.0, budget=40),
        dict(heads=3, frames=5, grid=(2, 3), prefix=0, text_every=2, holes=0.25, budget=11),
        dict(heads=4, frames=9, grid=(4, 4), prefix=5, text_every=3, holes=0.4, budget=30),
        dict(heads=1, frames=3, grid=(1, 7), prefix=1, text_every=0, holes=0.1, budget=2),
    ]
    for seed, case in enumerate(cases):
        store = _random_stream(
            seed, case["heads"], case["frames"], case["grid"], case["prefix"], case["text_every"]
        )
        if case["holes"]:
            _punch_holes(store, seed, case["holes"])
        _assert_same_selection(store, case["grid"], case["budget"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    heads=st.integers(1, 3),
    frames=st.integers(1, 8),
    rows=st.integers(1, 4),
    cols=st.integers(1, 4),
    prefix=st.integers(0, 3),
    text_every=st.integers(0, 3),
    holes=st.sampled_from([0.0, 0.2, 0.5]),
    budget_share=st.floats(0.05, 1.1),
)
def test_random_streams_select_the_same_tokens(
    seed: int, heads: int, frames: int, rows: int, cols: int, prefix: int, text_every: int, holes: float,
    budget_share: float,
) -> None:
    store = _random_stream(seed, heads, frames, (rows, cols), prefix, text_every)
    if holes:
        _punch_holes(store, seed, holes)
    budget = int((store.length - prefix) * budget_share)
    _assert_same_selection(store, (rows, cols), budget)
