"""What the memory holds: each temporal frame still in the store, its stream-time span and tokens kept.

Why a view of its own: users cannot otherwise see whether the compression kept the moment they care about,
nor how policies differ (InfiniPot-V keeps scattered traces of old events, a sliding window only the recent
past). After compression each KV head (and layer) may keep different tokens of a frame, so a frame's token
count is the mean over layers and KV heads of the slots it fills. All (layer, head) rows hold the same
number of slots, so the counts of all frames add up to the held tokens minus the text prefix exactly (up to
float rounding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

__all__ = ["HeldFrame", "held_frames"]


@dataclass(frozen=True)
class HeldFrame:
    """One temporal frame with at least one token left in the store."""

    frame_id: int
    start: float  # stream seconds of its first raw frame
    end: float  # ... of its last raw frame
    tokens: float  # slots it fills (visual tokens and its per-frame text), mean over layers and KV heads


def held_frames(store: object, stamps: Mapping[int, tuple[float, float]]) -> tuple[HeldFrame, ...]:
    """The frames `store` (a FixedKVStore) holds tokens of, oldest first, with `stamps` giving their spans."""
    length = int(store.length)  # type: ignore[attr-defined]
    frame_id = store.frame_id[:, :, :length]  # type: ignore[attr-defined]  (layers, kv heads, length)
    rows = int(frame_id.shape[0] * frame_id.shape[1])
    visual = frame_id[frame_id >= 0]
    if visual.numel() == 0 or rows == 0:
        return ()
    ids, counts = torch.unique(visual.cpu(), return_counts=True)
    out = []
    for fid, count in zip(ids.tolist(), counts.tolist()):
        start, end = stamps.get(int(fid), (float("nan"), float("nan")))
        out.append(HeldFrame(int(fid), float(start), float(end), count / rows))
    return tuple(out)
