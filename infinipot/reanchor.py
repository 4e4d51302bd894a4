"""Bounded positions over an endless stream: move the held frames down so position ids never reach a limit.

Why: a streaming session continues positions from a logical counter, so after hours the ids leave the range
the model was trained on (Qwen2-VL-2B: 32,768), and past 2^24 float32 rotary angles cannot tell
neighbouring positions apart. Keys are cached after RoPE, and moving a key is an exact rotation
(`infinipot.rope_shift`), so the held tokens can be re-anchored in place, with no re-prefill.

The rule (applied by `StreamingSession` when the next block plus the question reserve would reach
`position_limit`):
1. The prefix never moves. The held frames keep their order.
2. The oldest held frame moves to the first position after the prefix (`start`).
3. Between consecutive held frames, the gap is compacted to one frame stride (the position distance of two
   consecutive frames when nothing is evicted): evicted frames leave no hole, as in the paper's 1-D
   streaming runs, which re-assign positions so they never exceed |M| (arXiv 2506.15745, Sec. 4). Within a
   frame, tokens keep their relative positions.
4. If the held frames still span more than `room` positions (only when very many frames keep a few tokens
   each, or an uncapped cache), their anchors are squeezed linearly into `room` (frames may then share a
   temporal id; order is kept).
Afterwards the stream counter moves by the newest frame's shift (and never below the largest id held + 1).
Which position rows move with a frame's anchor is the adapter's rule (`VLMAdapter.position_shift`), so this
module never sees a layout: in a per-frame-base layout (SmolVLM2's 1-D ids, Qwen3-VL's per-patch vision
groups, the built-in model's per-chunk M-RoPE) every row of a frame and of its frame text moves with the
frame; in Qwen2-VL's video layout only t moves with the frame and h/w move with the video base, which goes
to `start`, so the held frames stay one video that begins with the oldest of them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from infinipot.adapters.base import VLMAdapter
from infinipot.kv_store import FixedKVStore
from infinipot.rope_shift import RotaryConfig, rotate_keys

__all__ = ["plan_anchors", "held_frame_anchors", "reanchor_store", "ReanchorResult"]


class ReanchorResult(NamedTuple):
    """What one re-anchoring did, for the session's counters (all -1 / 0 when no frame is held)."""

    newest_frame: int  # id of the newest frame still held
    newest_shift: int  # how far its anchor moved
    newest_anchor: int  # its anchor afterwards
    largest: int  # the largest position id held afterwards (any row)


def plan_anchors(anchors: torch.Tensor, start: int, stride: int, room: int) -> torch.Tensor:
    """New anchors (F,) int64 for the held frames' sorted old anchors (F,) (rules 2-4 of the module doc)."""
    if anchors.numel() == 0:
        return anchors.clone()
    gaps = torch.diff(anchors).clamp(max=int(stride))
    offsets = torch.cat([anchors.new_zeros(1), torch.cumsum(gaps, 0)])
    span = int(offsets[-1])
    if span > room:
        offsets = (offsets * max(0, int(room))) // span
    return int(start) + offsets


def held_frame_anchors(store: FixedKVStore, adapter: VLMAdapter) -> tuple[torch.Tensor, torch.Tensor]:
    """(frame ids, anchors), both (F,) int64 sorted by frame id: every frame with a token in any layer/head."""
    prefix = store.prefix_length
    ids, anchors = [], []
    for layer in range(store.num_layers):
        _, frame_id, patch_index = store.metadata(layer)
        positions = store.position_ids(layer)[..., prefix:].long()
        frame_id, patch_index = frame_id[:, prefix:].long(), patch_index[:, prefix:].long()
        on_frame = frame_id >= 0
        ids.append(frame_id[on_frame])
        anchors.append(adapter.position_frame_anchor(positions, patch_index)[on_frame])
    all_ids, all_anchors = torch.cat(ids), torch.cat(anchors)
    frames, inverse = torch.unique(all_ids, return_inverse=True)
    anchor = torch.full_like(frames, torch.iinfo(torch.int64).max).scatter_reduce(
        0, inverse, all_anchors, reduce="amin"
    )
    return frames, anchor


def reanchor_store(
    store: FixedKVStore, adapter: VLMAdapter, rotary: RotaryConfig, *, start: int, room: int, base_shift: int = 0
) -> ReanchorResult:
    """Re-anchor every held frame of `store` (module doc). `base_shift`: how far the stream's video base
    moves (passed to `VLMAdapter.position_shift`)."""
    frames, old = held_frame_anchors(store, adapter)
    if frames.numel() == 0:
        return ReanchorResult(-1, 0, -1, -1)
    if bool((torch.diff(old) < 0).any()):
        raise RuntimeError("frame anchors are not in stream order; the position rule and the store disagree")
    new = plan_anchors(old, start, adapter.position_frame_stride, room)
    shift_of_frame = new - old
    prefix = store.prefix_length
    largest = -1
    for layer in range(store.num_layers):
        keys, _ = store.view(layer)
        _, frame_id, patch_index = store.metadata(layer)
        frame_id, patch_index = frame_id[:, prefix:].long(), patch_index[:, prefix:].long()
        positions = store.position_ids(layer).long()
        stream = positions[..., prefix:]
        index = torch.searchsorted(frames, frame_id.clamp(min=0).contiguous()).clamp(max=frames.numel() - 1)
        frame_shift = torch.where(frame_id >= 0, shift_of_frame[index], torch.zeros_like(frame_id))
        moved = stream + adapter.position_shift(stream, patch_index, frame_shift, base_shift)
        new_positions = torch.cat([positions[..., :prefix], moved], dim=-1)
        new_keys = keys.clone()
        new_keys[0, :, prefix:] = rotate_keys(keys[0, :, prefix:], stream, moved, rotary)
        store.reanchor(layer, new_keys, new_positions.to(torch.int32))
        largest = max(largest, int(moved.max()) if moved.numel() else -1)
    return ReanchorResult(int(frames[-1]), int(shift_of_frame[-1]), int(new[-1]), largest)
