"""The shared selection routine: prefix, recent frames, budget split, ordering, and the compression pass."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from infinipot.errors import BudgetError, PolicyError
from infinipot.policies import CompressionPolicy, make_policy
from infinipot.scorers import RecencyScorer, Scorer, ScoringContext
from infinipot.selection import build_context, compress_store, recent_frame_count, select_keep_indices

GRID = (3, 4)
P = 12


@dataclass(frozen=True)
class OldestScorer(Scorer):
    """A second, opposite baseline (oldest first) so the two shares of a policy are told apart."""

    def score(self, ctx: ScoringContext) -> torch.Tensor:
        return -ctx.token_index.double()


@pytest.mark.parametrize(
    "frames, ratio, expected",
    [(8, 0.25, 2), (16, 0.125, 2), (3, 0.25, 1), (1, 0.5, 1), (5, 0.0, 0), (0, 0.3, 0)],
)
def test_recent_frame_count(frames: int, ratio: float, expected: int) -> None:
    assert recent_frame_count(frames, ratio) == expected


def test_prefix_and_recent_frames_are_kept(stream_store) -> None:
    store = stream_store(frames=8, prefix=3, heads=2)
    policy = make_policy("infinipot")
    ctx = build_context(store, 0, recent_ratio=policy.recent_ratio, frame_grid=GRID, budget=40)
    keep = select_keep_indices(ctx, policy)
    assert keep.shape == (2, 43)
    assert torch.equal(keep[:, :3], torch.arange(3).expand(2, -1))
    recent_slots = torch.arange(3 + 6 * P, 3 + 8 * P)  # frames 6 and 7
    for h in range(2):
        assert set(recent_slots.tolist()) <= set(keep[h].tolist())
    assert (keep[:, 1:] > keep[:, :-1]).all()


def test_recent_tokens_beyond_budget_keep_the_newest(stream_store) -> None:
    store = stream_store(frames=4, prefix=2, heads=2)
    policy = CompressionPolicy("r", RecencyScorer(), OldestScorer(), recent_ratio=0.75)
    ctx = build_context(store, 0, recent_ratio=0.75, frame_grid=GRID, budget=5)
    assert int(ctx.recent_mask[0].sum()) == 3 * P
    keep = select_keep_indices(ctx, policy)
    newest = torch.arange(2 + 4 * P - 5, 2 + 4 * P)
    assert torch.equal(keep, torch.cat([torch.arange(2), newest]).expand(2, -1))


def test_primary_share_then_secondary_fill(stream_store) -> None:
    store = stream_store(frames=4, prefix=0, heads=1)  # 48 tokens
    # recent_ratio 0.25 of f = 4 frames: 1 recent frame (36..47). Primary share 20 - round(0.5·20) = 10:
    # the 12 recent tokens already exceed it, so the secondary (oldest) fills the other 8.
    policy = CompressionPolicy("split", RecencyScorer(), OldestScorer(), recent_ratio=0.25, tar_share=0.5)
    ctx = build_context(store, 0, recent_ratio=0.25, frame_grid=GRID, budget=20)
    assert select_keep_indices(ctx, policy)[0].tolist() == list(range(8)) + list(range(36, 48))
    # Budget 32, tar_share 0.6: primary share 32 - round(0.4·32 = 12.8) = 19 = 12 recent + 7 newest older
    # (29..35); the secondary fills 13 with the oldest (0..12).
    policy = CompressionPolicy("split", RecencyScorer(), OldestScorer(), recent_ratio=0.25, tar_share=0.6)
    ctx = build_context(store, 0, recent_ratio=0.25, frame_grid=GRID, budget=32)
    assert select_keep_indices(ctx, policy)[0].tolist() == list(range(13)) + list(range(29, 48))
    # recent_ratio 0: no reference frame, so the primary's share goes to the secondary (all oldest).
    store = stream_store(frames=2, prefix=0, heads=1)  # 24 tokens, no recent frames
    policy = CompressionPolicy("split", RecencyScorer(), OldestScorer(), recent_ratio=0.0, tar_share=0.5)
    ctx = build_context(store, 0, recent_ratio=0.0, frame_grid=GRID, budget=8)
    assert select_keep_indices(ctx, policy)[0].tolist() == list(range(8))
    # Recent tokens count towards the primary's share: 1 recent frame (12) > 16 - round(0.5·16) = 8.
    policy = CompressionPolicy("split", RecencyScorer(), OldestScorer(), recent_ratio=0.5, tar_share=0.5)
    ctx = build_context(store, 0, recent_ratio=0.5, frame_grid=GRID, budget=16)
    keep = select_keep_indices(ctx, policy)[0].tolist()
    assert keep == list(range(4)) + list(range(12, 24))


def test_small_region_keeps_everything(stream_store) -> None:
    store = stream_store(frames=2, prefix=3, heads=2)
    ctx = build_context(store, 1, recent_ratio=0.25, frame_grid=GRID, budget=100)
    assert torch.equal(select_keep_indices(ctx, make_policy("infinipot")), torch.arange(27).expand(2, -1))


@pytest.mark.parametrize("name", ["infinipot", "tar", "van", "uniform", "sliding_window"])
def test_compress_store_reaches_target_for_every_policy(stream_store, name: str) -> None:
    store = stream_store(layers=4, heads=2, frames=8, prefix=3, seed=7)
    ptr = store.layers[0].keys.data_ptr()
    report = compress_store(store, make_policy(name), target_tokens=60, frame_grid=GRID)
    assert (report.tokens_before, report.tokens_after, report.tokens_evicted) == (99, 60, 39)
    assert report.duration_s >= 0 and store.length == 60 and store.layers[0].keys.data_ptr() == ptr
    again = compress_store(store, make_policy(name), target_tokens=60, frame_grid=GRID)
    assert again.tokens_evicted == 0


def test_repeated_compression_keeps_newest_frames_whole(stream_store, stream_filler) -> None:
    """Streaming: compress, add a block, compress again; incomplete older frames are handled."""
    store = stream_store(layers=2, heads=2, frames=8, prefix=3, capacity=3 + 8 * P, seed=8)
    policy = make_policy("infinipot")
    for block in range(3):
        compress_store(store, policy, target_tokens=3 + 6 * P, frame_grid=GRID)
        stream_filler(store, frames=2, frame_grid=GRID, first_frame=8 + 2 * block,
                    generator=torch.Generator().manual_seed(block))
        assert store.length == 3 + 8 * P
    newest = store.metadata(0)[1][:, -2 * P:]
    assert torch.equal(newest, torch.tensor([12] * P + [13] * P).expand(2, -1))


def test_compress_store_errors(stream_store) -> None:
    store = stream_store(prefix=3)
    with pytest.raises(BudgetError):
        compress_store(store, make_policy("infinipot"), target_tokens=2, frame_grid=GRID)
    with pytest.raises(PolicyError):
        compress_store(store, None, target_tokens=50, frame_grid=GRID)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- frame text
def _store_with_frame_text(frames: int, text_per_frame: int, seed: int = 0):
    """A store: 3 prefix tokens, then per frame `text_per_frame` frame-text tokens (patch -1) + P visual ones."""
    from infinipot.kv_store import FixedKVStore

    store = FixedKVStore(2, 2, 8, 3 + frames * (P + text_per_frame))
    gen = torch.Generator().manual_seed(seed)
    frame_id = [-1] * 3
    patch = [-1] * 3
    for f in range(frames):
        frame_id += [f] * (text_per_frame + P)
        patch += [-1] * text_per_frame + list(range(P))
    n = len(frame_id)
    store.stage_tokens(torch.arange(n), torch.tensor(frame_id), torch.tensor(patch))
    for layer in range(2):
        store.update(torch.randn(1, 2, n, 8, generator=gen), torch.randn(1, 2, n, 8, generator=gen), layer)
    store.set_prefix_length(3)
    return store


@dataclass(frozen=True)
class TextFirstScorer(Scorer):
    """Rates frame-text tokens best of all: if selection let scores decide about them, they would all stay."""

    def score(self, ctx: ScoringContext) -> torch.Tensor:
        return torch.where(ctx.patch_index < 0, 1e9, -ctx.token_index.double())


@pytest.mark.parametrize("policy_name", ["infinipot", "tar", "van", "uniform", "sliding_window", "text_first"])
def test_frame_text_leaves_with_its_frames_last_visual_token(policy_name) -> None:
    """Rule 6: frame text is kept iff its frame keeps a visual token in that layer and head; it counts
    against the budget; its scores never matter (a scorer that loves text changes nothing about text)."""
    store = _store_with_frame_text(frames=8, text_per_frame=3)
    if policy_name == "text_first":
        policy = CompressionPolicy(name="text_first", primary=TextFirstScorer(), secondary=OldestScorer(), recent_ratio=0.25)
    else:
        policy = make_policy(policy_name)
    target = 3 + 40
    compress_store(store, policy, target, GRID)
    assert store.length <= target
    evicted_some_frame = False
    for layer in range(store.num_layers):
        _, frame_id, patch = store.metadata(layer)
        for head in range(store.num_kv_heads):
            fid, pid = frame_id[head, 3:], patch[head, 3:]
            visual_frames = set(fid[pid >= 0].tolist())
            text_frames = fid[pid < 0].tolist()
            assert set(text_frames) == visual_frames  # text exactly for the frames that keep a visual token
            assert all(text_frames.count(f) == 3 for f in visual_frames)  # a frame's text is kept whole
            evicted_some_frame |= len(visual_frames) < 8
    assert evicted_some_frame, "the budget must evict whole frames for this test to mean something"


def test_frame_text_counts_against_the_budget() -> None:
    """With frame text every head still keeps exactly the same number of slots, at most the budget."""
    store = _store_with_frame_text(frames=10, text_per_frame=2, seed=3)
    policy = make_policy("infinipot")
    ctx = build_context(store, 0, recent_ratio=policy.recent_ratio, frame_grid=GRID, budget=50)
    keep = select_keep_indices(ctx, policy)
    assert keep.shape[1] <= 3 + 50 and keep.shape[1] >= 3 + 50 - 2
    assert torch.equal(keep[:, :3], torch.arange(3).expand(2, -1))
