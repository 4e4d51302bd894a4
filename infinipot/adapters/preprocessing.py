"""Frame validation and Qwen2-VL video preprocessing in numpy/PIL (no torchvision).

Why our own: transformers' `*VideoProcessor` classes need torchvision, which has no working CPU build for
the pinned torch (docs: /work/shared/notes/models.md). A stream also differs from a clip: every frame is
resized to ONE fixed size, so every temporal frame yields the same token grid, which the KV store and the
per-position TaR score rely on.

The patch layout reproduces the official Qwen2-VL video processor (`patchify` in
`transformers/models/qwen2_vl/video_processing_qwen2_vl.py`): rows are ordered by temporal patch, then by
2x2 merge block (row-major), then by the patch inside the block (row-major); each row holds
channel x temporal x patch_h x patch_w values. The merged tokens the vision tower produces are therefore in
row-major order over the merged grid, one grid per temporal patch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import FrameError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "validate_frame",
    "normalize_frame_size",
    "resize_frames",
    "qwen2_vl_patchify",
    "preprocess_qwen2_vl_video",
]

#: OpenAI CLIP normalisation constants, as used by every Qwen2-VL / Qwen2.5-VL processor.
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def validate_frame(frame: object) -> np.ndarray:
    """Check one RGB frame and return it as a C-contiguous uint8 (H, W, 3) array.

    Raises `FrameError` for anything else (wrong type, ndim, channel count, dtype or an empty image) so a
    bad camera message is rejected before it can touch the session.
    """
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.ndim != 3:
        raise FrameError(f"frame must have shape (H, W, 3), got ndim={frame.ndim} shape={frame.shape}")
    if frame.shape[2] != 3:
        raise FrameError(f"frame must have 3 (RGB) channels, got {frame.shape[2]}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame is empty: shape={frame.shape}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame dtype must be uint8, got {frame.dtype}")
    return np.ascontiguousarray(frame)


def normalize_frame_size(frame_size: int | Sequence[int], factor: int = 28) -> tuple[int, int]:
    """Turn `frame_size` (int for square, or (h, w)) into (h, w), each a positive multiple of `factor`.

    `factor` = patch size x merge size (28 for Qwen2-VL), so the frame splits into whole merge blocks.
    """
    if isinstance(frame_size, (int, np.integer)):
        size = (int(frame_size), int(frame_size))
    else:
        values = tuple(int(v) for v in frame_size)
        if len(values) != 2:
            raise ValueError(f"frame_size must be an int or (height, width), got {frame_size!r}")
        size = values
    for side in size:
        if side <= 0 or side % factor:
            raise ValueError(f"frame_size sides must be positive multiples of {factor}, got {size}")
    return size


def resize_frames(frames: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Validate and resize frames to `size` = (h, w) with bicubic filtering -> float32 (T, h, w, 3) in [0, 1].

    Bicubic is what the official processor uses; frames already at `size` are not resampled.
    """
    height, width = size
    out = np.empty((len(frames), height, width, 3), dtype=np.float32)
    for i, frame in enumerate(frames):
        rgb = validate_frame(frame)
        if rgb.shape[:2] != (height, width):
            rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC))
        out[i] = rgb.astype(np.float32) / 255.0
    return out


def qwen2_vl_patchify(
    video: np.ndarray, patch_size: int = 14, temporal_patch_size: int = 2, merge_size: int = 2
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(T, C, H, W) normalised video -> (rows, C*tp*p*p) patches and grid_thw = (T/tp, H/p, W/p).

    T must be a multiple of `temporal_patch_size` (the session buffers frames for that). The axis order
    follows the official processor so the pretrained patch embedding sees the layout it was trained on.
    """
    frames, channels, height, width = video.shape
    if frames == 0 or frames % temporal_patch_size:
        raise FrameError(f"need a positive multiple of {temporal_patch_size} frames, got {frames}")
    grid_t, grid_h, grid_w = frames // temporal_patch_size, height // patch_size, width // patch_size
    if grid_h % merge_size or grid_w % merge_size or grid_h * patch_size != height or grid_w * patch_size != width:
        raise FrameError(f"frame size {(height, width)} is not a multiple of {patch_size * merge_size}")
    patches = video.reshape(
        grid_t, temporal_patch_size, channels,
        grid_h // merge_size, merge_size, patch_size,
        grid_w // merge_size, merge_size, patch_size,
    )
    # -> t, block row, block col, row in block, col in block, channel, temporal, pixel row, pixel col
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    rows = patches.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return np.ascontiguousarray(rows), (grid_t, grid_h, grid_w)


def preprocess_qwen2_vl_video(
    frames: Sequence[np.ndarray],
    frame_size: tuple[int, int],
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    *,
    mean: np.ndarray | Sequence[float] | None = None,
    std: np.ndarray | Sequence[float] | None = None,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """RGB uint8 frames -> (patch rows float32, grid_thw): resize, scale to [0, 1], normalise (CLIP statistics
    unless `mean`/`std` say otherwise: Qwen3-VL's processor uses 0.5/0.5), patchify."""
    if len(frames) == 0:
        raise FrameError("no frames to preprocess")
    video = resize_frames(frames, frame_size)
    mean = CLIP_MEAN if mean is None else np.asarray(mean, dtype=np.float32)
    std = CLIP_STD if std is None else np.asarray(std, dtype=np.float32)
    video = (video - mean) / std
    return qwen2_vl_patchify(video.transpose(0, 3, 1, 2), patch_size, temporal_patch_size, merge_size)
