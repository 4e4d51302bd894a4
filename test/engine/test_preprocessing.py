"""Frame validation and the Qwen2-VL patch layout, checked against transformers' own image processor."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from infinipot.adapters.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    normalize_frame_size,
    preprocess_qwen2_vl_video,
    qwen2_vl_patchify,
    resize_frames,
    validate_frame,
)
from infinipot.errors import FrameError


@pytest.mark.parametrize("source_hw", [(56, 84), (100, 90), (37, 200), (131, 61)])
def test_frames_match_official_processor(source_hw):
    """A still frame repeated twice is what the official processor makes of an image: rows must be equal.

    The official processor picks the size (smart_resize); ours is told that size, so the resampling,
    normalisation and patch order are compared, with a real resize for the odd source sizes.
    """
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*source_hw, 3), dtype=np.uint8)
    official = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 84)
    out = official(images=[Image.fromarray(image)], return_tensors="np")
    _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
    rows, grid = preprocess_qwen2_vl_video([image, image], (gh * 14, gw * 14))
    assert grid == (1, gh, gw)
    np.testing.assert_allclose(rows, out["pixel_values"], atol=1e-6)


def test_patch_layout_matches_index_formula():
    """Moving video (frames differ): each row/column holds the pixel the official layout says it does."""
    rng = np.random.default_rng(2)
    t, c, h, w, p, m, tp = 4, 3, 56, 84, 14, 2, 2
    video = rng.standard_normal((t, c, h, w)).astype(np.float32)
    rows, (gt, gh, gw) = qwen2_vl_patchify(video, p, tp, m)
    assert (gt, gh, gw) == (2, 4, 6) and rows.shape == (gt * gh * gw, c * tp * p * p)
    for _ in range(200):
        ti, bh, bw, ih, iw = (rng.integers(n) for n in (gt, gh // m, gw // m, m, m))
        ci, tj, py, px = (rng.integers(n) for n in (c, tp, p, p))
        row = ((ti * (gh // m) + bh) * (gw // m) + bw) * m * m + ih * m + iw
        col = ((ci * tp + tj) * p + py) * p + px
        expected = video[ti * tp + tj, ci, (bh * m + ih) * p + py, (bw * m + iw) * p + px]
        assert rows[row, col] == expected


def test_normalisation_uses_clip_statistics():
    frame = np.full((28, 28, 3), 255, dtype=np.uint8)
    rows, _ = preprocess_qwen2_vl_video([frame, frame], (28, 28))
    per_channel = rows.reshape(-1, 3, 2 * 14 * 14)
    np.testing.assert_allclose(per_channel[0, :, 0], (1.0 - CLIP_MEAN) / CLIP_STD, rtol=1e-6)


def test_resize_keeps_exact_size_frames_untouched():
    frame = np.random.default_rng(3).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_frames([frame], (56, 56))[0], frame.astype(np.float32) / 255.0)
    assert resize_frames([frame], (28, 84)).shape == (1, 28, 84, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((2, 10, 10, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_validate_frame_rejects_bad_frames(bad):
    with pytest.raises(FrameError):
        validate_frame(bad)


def test_validate_frame_accepts_views():
    frame = np.zeros((20, 30, 3), np.uint8)[:, ::2]
    out = validate_frame(frame)
    assert out.flags["C_CONTIGUOUS"] and out.shape == (20, 15, 3)


def test_patchify_needs_whole_temporal_patches_and_merge_blocks():
    with pytest.raises(FrameError):
        qwen2_vl_patchify(np.zeros((3, 3, 28, 28), np.float32))
    with pytest.raises(FrameError):
        qwen2_vl_patchify(np.zeros((2, 3, 42, 28), np.float32))
    with pytest.raises(FrameError):
        preprocess_qwen2_vl_video([], (28, 28))


def test_frame_size_forms():
    assert normalize_frame_size(56) == (56, 56)
    assert normalize_frame_size((28, 84)) == (28, 84)
    for bad in (50, (28, 30), (28,), 0):
        with pytest.raises(ValueError):
            normalize_frame_size(bad)
