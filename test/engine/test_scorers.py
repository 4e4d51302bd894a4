"""Scorers and policies: TaR finds what moved, VaN finds large values, baselines, per-head choices, names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from infinipot.errors import PolicyError
from infinipot.kv_store import FixedKVStore
from infinipot.policies import POLICY_NAMES, CompressionPolicy, make_policy
from infinipot.scorers import RecencyScorer, TaRScorer, UniformScorer, VaNScorer, van_pooling_for_layer
from infinipot.selection import build_context, compress_store, select_keep_indices

GRID = (3, 4)
P = 12


def _moving_object_store(heads: int = 2, frames: int = 8, dim: int = 16, seed: int = 0) -> FixedKVStore:
    """Static background keys per patch; in frame f one 'object' patch (patch f) has a fresh key."""
    g = torch.Generator().manual_seed(seed)
    background = torch.randn(heads, P, dim, generator=g)
    keys = background.repeat(1, frames, 1) + 0.01 * torch.randn(heads, frames * P, dim, generator=g)
    for f in range(frames):
        keys[:, f * P + f] = torch.randn(heads, dim, generator=g) * 3
    values = torch.randn(heads, frames * P, dim, generator=g)
    store = FixedKVStore(1, heads, dim, capacity=frames * P)
    n = frames * P
    store.stage_tokens(
        torch.arange(n), torch.arange(frames).repeat_interleave(P), torch.arange(P).repeat(frames)
    )
    store.update(keys.unsqueeze(0), values.unsqueeze(0), 0)
    return store


def test_tar_keeps_the_moving_patch() -> None:
    store = _moving_object_store()
    policy = make_policy("tar")  # recent 0.25 of 8 frames = frames 6, 7
    recent_tokens, older_moving = 2 * P, 6
    ctx = build_context(store, 0, recent_ratio=policy.recent_ratio, frame_grid=GRID,
                        budget=recent_tokens + older_moving)
    assert int(ctx.recent_mask[0].sum()) == recent_tokens
    scores = TaRScorer().score(ctx)
    assert torch.isinf(scores[ctx.recent_mask]).all()
    moving = torch.tensor([f * P + f for f in range(6)])
    older_static = torch.ones(6 * P, dtype=torch.bool)
    older_static[moving] = False
    for h in range(2):
        assert scores[h, moving].min() > scores[h, :6 * P][older_static].max()
        # Background where no recent frame shows the object: cosine ≈ 1. (At patches 6 and 7 the recent
        # frames show the object, so older background there scores higher, yet below the moving tokens.)
        untouched = older_static & (torch.arange(6 * P) % P < 6)
        assert scores[h, :6 * P][untouched].max() < -0.99
    keep = select_keep_indices(ctx, policy)
    expected = torch.cat([moving, torch.arange(6 * P, 8 * P)])
    assert torch.equal(keep, expected.expand(2, -1))
    # InfiniPot (TaR share + VaN) forces the same moving patches in.
    budget = 2 * (recent_tokens + older_moving)
    ctx2 = build_context(store, 0, recent_ratio=0.25, frame_grid=GRID, budget=budget)
    kept = select_keep_indices(ctx2, make_policy("infinipot"))
    for h in range(2):
        assert set(expected.tolist()) <= set(kept[h].tolist())


def test_tar_averages_over_recent_frames_present_in_the_head() -> None:
    store = _moving_object_store(heads=1, frames=4)  # recent = newest 1 frame (floor(4·0.25))
    ctx = build_context(store, 0, recent_ratio=0.5, frame_grid=GRID, budget=10)  # recent = frames 2, 3
    k = F.normalize(ctx.keys[0], dim=-1)
    token = 1 * P + 5  # frame 1, patch 5
    expected = -0.5 * (k[token] @ k[2 * P + 5] + k[token] @ k[3 * P + 5])
    assert torch.isclose(TaRScorer().score(ctx)[0, token], expected, atol=1e-6)
    # Evict patch 5 of frame 3 in this head: the mean covers frame 2 alone.
    keep = torch.tensor([[i for i in range(4 * P) if i != 3 * P + 5]])
    store.compact(0, keep)
    # f stays 4 frames (fixed by the budget), so frames 2 and 3 stay the recent ones.
    ctx = build_context(store, 0, recent_ratio=0.5, frame_grid=GRID, budget=10, memory_frames=4)
    assert torch.isclose(TaRScorer().score(ctx)[0, token], -(k[token] @ k[2 * P + 5]), atol=1e-6)


def _store_with_values(values: torch.Tensor, frames: int) -> FixedKVStore:
    heads, n, dim = values.shape
    store = FixedKVStore(4, heads, dim, capacity=n)
    store.stage_tokens(
        torch.arange(n), torch.arange(frames).repeat_interleave(P), torch.arange(P).repeat(frames)
    )
    for layer in range(4):
        store.update(torch.randn(1, heads, n, dim), values.unsqueeze(0), layer)
    return store


def test_van_without_pooling_keeps_highest_norms_per_head() -> None:
    g = torch.Generator().manual_seed(3)
    values = torch.randn(3, 4 * P, 8, generator=g) * torch.rand(3, 4 * P, 1, generator=g) * 5
    store = _store_with_values(values, frames=4)
    policy = CompressionPolicy("van-raw", VaNScorer(pooling=False), None, recent_ratio=0.0)
    ctx = build_context(store, 0, recent_ratio=0.0, frame_grid=GRID, budget=10)
    keep = select_keep_indices(ctx, policy)
    norms = values.norm(dim=-1)
    for h in range(3):
        assert set(keep[h].tolist()) == set(norms[h].topk(10).indices.tolist())
    assert len({tuple(row) for row in keep.tolist()}) == 3  # heads keep different tokens


def test_van_pooling_matches_plain_pooling_on_complete_frames() -> None:
    g = torch.Generator().manual_seed(4)
    values = torch.randn(2, 3 * P, 8, generator=g)
    store = _store_with_values(values, frames=3)
    norms = values.norm(dim=-1).view(2, 3, *GRID)
    for layer, (dims, kernel) in enumerate([(2, 7), (2, 5), (1, 3), (0, 1)]):
        assert van_pooling_for_layer(layer, 4) == (dims, kernel)
        ctx = build_context(store, layer, recent_ratio=0.0, frame_grid=GRID, budget=5)
        got = VaNScorer(pooling=True).score(ctx).view(2, 3, *GRID)
        if dims == 2:
            want = F.avg_pool2d(norms.reshape(6, 1, *GRID), kernel, 1, kernel // 2, count_include_pad=False)
        elif dims == 1:
            want = F.avg_pool1d(norms.reshape(6, 1, P), kernel, 1, kernel // 2, count_include_pad=False)
        else:
            want = norms
        assert torch.allclose(got, want.reshape(2, 3, *GRID), atol=1e-5)


def test_van_pooling_on_an_incomplete_frame_averages_present_tokens_only() -> None:
    values = torch.zeros(1, P, 4)
    values[0, :, 0] = torch.arange(1.0, P + 1)  # norm of patch p = p + 1
    store = _store_with_values(values, frames=1)
    store.compact(2, torch.tensor([[i for i in range(P) if i != 5]]))  # layer 2: 1-D kernel 3
    ctx = build_context(store, 2, recent_ratio=0.0, frame_grid=GRID, budget=3)
    scores = VaNScorer().score(ctx)[0]
    patches = ctx.patch_index[0].tolist()
    assert scores[patches.index(4)] == pytest.approx((4 + 5) / 2)  # neighbours 3 and (absent) 5
    assert scores[patches.index(6)] == pytest.approx((7 + 8) / 2)
    assert scores[patches.index(0)] == pytest.approx((1 + 2) / 2)  # padding not counted


def test_uniform_and_recency_baselines() -> None:
    store = _store_with_values(torch.randn(2, 2 * P, 4), frames=2)
    ctx = build_context(store, 3, recent_ratio=0.0, frame_grid=GRID, budget=6)
    uniform = select_keep_indices(ctx, make_policy("uniform"))
    assert torch.equal(uniform, torch.tensor([0, 4, 8, 12, 16, 20]).expand(2, -1))
    assert torch.equal(UniformScorer().score(ctx).sum(1), torch.tensor([6.0, 6.0]))
    window = select_keep_indices(ctx, make_policy("sliding_window"))
    assert torch.equal(window, torch.arange(18, 24).expand(2, -1))
    assert torch.equal(RecencyScorer().score(ctx)[0], torch.arange(24, dtype=torch.float64))


def test_per_head_compression_keeps_equal_counts_and_different_tokens(stream_store) -> None:
    store = stream_store(layers=2, heads=4, frames=8, prefix=3, seed=5)
    report = compress_store(store, make_policy("infinipot"), target_tokens=3 + 40, frame_grid=GRID)
    assert report.tokens_after == store.length == 43 and report.tokens_evicted == 3 + 8 * P - 43
    for layer in range(2):
        token_index = store.metadata(layer)[0]
        assert torch.equal(token_index[:, :3], torch.arange(3).expand(4, -1))  # prefix untouched
        assert (token_index[:, 1:] > token_index[:, :-1]).all()  # temporal order kept
        assert len({tuple(row) for row in token_index.tolist()}) > 1


def test_policies_by_name() -> None:
    assert make_policy("full") is None
    built = {name: make_policy(name) for name in POLICY_NAMES if name != "full"}
    inf = built["infinipot"]
    assert isinstance(inf.primary, TaRScorer) and inf.secondary == VaNScorer(pooling=True)
    assert (inf.recent_ratio, inf.tar_share) == (0.25, 0.5)
    assert built["tar"].secondary is None and isinstance(built["tar"].primary, TaRScorer)
    assert isinstance(built["van"].primary, VaNScorer) and built["van"].recent_ratio == 0.25
    assert isinstance(built["uniform"].primary, UniformScorer) and built["uniform"].recent_ratio == 0
    assert isinstance(built["sliding_window"].primary, RecencyScorer)
    assert make_policy("infinipot", van_pooling=False).secondary == VaNScorer(pooling=False)
    assert make_policy("Sliding-Window") is not None
    with pytest.raises(PolicyError, match="infinipot, tar"):
        make_policy("h2o")
    with pytest.raises(PolicyError, match="recent_ratio"):
        make_policy("infinipot", recent_ratio=1.5)
    with pytest.raises(PolicyError, match="tar_share"):
        make_policy("infinipot", tar_share=-0.1)
