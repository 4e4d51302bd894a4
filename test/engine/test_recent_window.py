"""The recent window stays the paper's size over an endless stream (issue 14, item 1).

InfiniPot-V (arXiv 2506.15745, App. A.2) protects R = floor(r * f) recent frames, f = the frames of the model
that fit in the visual part of |M|: a size fixed by the budget. Counting the distinct frame ids still held
instead makes R grow with every compression (old frames keep a few tokens each), until the newest block of
fully kept frames takes most of the budget and the memory turns into a sliding window.

Measured here through the real session and the tiny Qwen2-VL at 112 px (16 tokens per temporal frame), |M| =
prefix + 32 frames, |C| = 0.75 |M|: after every one of 20 compressions, the newest block of frames that are
held completely (every patch, every head, every layer) must stay near R*P/b of the kept visual budget b
(R = 8, P = 16: 1/3 here) and TaR + VaN must still hold tokens of many older frames.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from infinipot.adapters.loading import builtin_checkpoint
from infinipot.adapters.qwen2_vl import Qwen2VLAdapter
from infinipot.session import SessionConfig, StreamingSession

MEMORY_FRAMES = 32
COMPRESSIONS = 20


def _newest_full_block(session: StreamingSession, per_frame: int) -> tuple[int, int]:
    """(frames, tokens) of the newest run of consecutive frame ids held completely in every layer and head."""
    store = session.store
    prefix = store.prefix_length
    complete: set[int] | None = None
    for layer in range(store.num_layers):
        _, frame_id, _ = store.metadata(layer)
        for head in range(frame_id.shape[0]):
            ids, counts = np.unique(frame_id[head, prefix:].numpy(), return_counts=True)
            full = {int(i) for i, c in zip(ids, counts) if i >= 0 and c == per_frame}
            complete = full if complete is None else complete & full
    newest = int(store.metadata(0)[1][:, prefix:].max())
    frames = 0
    while complete and newest - frames in complete:
        frames += 1
    return frames, frames * per_frame


@pytest.fixture(scope="module")
def adapter_112(tiny_cache: str) -> Qwen2VLAdapter:
    return Qwen2VLAdapter.from_pretrained(builtin_checkpoint("tiny-qwen2-vl"), frame_size=112)


def test_recent_share_stays_at_the_papers_window_over_20_compressions(adapter_112: Qwen2VLAdapter) -> None:
    adapter = adapter_112
    per_frame = adapter.tokens_per_frame
    assert per_frame == 16
    prefix = len(adapter.prefix_token_ids())
    session = StreamingSession(
        adapter, SessionConfig(policy="infinipot", budget_tokens=prefix + MEMORY_FRAMES * per_frame)
    )
    assert session.budget is not None
    visual_budget = session.budget.target_tokens - prefix
    recent = math.floor(0.25 * MEMORY_FRAMES)  # the paper's R with the default recent_ratio
    expected_share = recent * per_frame / visual_budget
    shares: list[float] = []
    older_frames: list[int] = []

    def measure(s: StreamingSession, _report: object) -> None:
        frames, tokens = _newest_full_block(s, per_frame)
        shares.append(tokens / visual_budget)
        _, frame_id, _ = s.store.metadata(0)
        newest = int(frame_id.max())
        older_frames.append(len({int(f) for f in frame_id[0].tolist() if 0 <= f <= newest - frames}))

    session.add_compression_listener(measure)
    rng = np.random.default_rng(14)
    i = 0
    while len(shares) < COMPRESSIONS:
        session.add_frame(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), stamp=0.5 * i)
        i += 1
    print("newest-full-block share per compression:", [round(s, 3) for s in shares])
    print("older frames with tokens held (layer 0, head 0):", older_frames)
    # Fixed window: R frames, plus at most one older frame that TaR/VaN happened to keep whole.
    assert max(shares) <= expected_share + per_frame / visual_budget + 1e-9, (shares, expected_share)
    assert min(shares) >= expected_share - 1e-9, (shares, expected_share)
    # The rest of the budget goes to older tokens spread over many frames, not to a sliding window.
    assert min(older_frames[5:]) >= MEMORY_FRAMES - recent, older_frames
