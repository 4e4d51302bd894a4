"""Malformed camera messages from a seeded generator: wrong sizes, steps, encodings, truncated or corrupt
JPEG/PNG.

Why here: the stress tool (`infinipot-stress`) and the DDS fuzz tests send them to a running node from
outside, and both must send the same kinds; the node must reject every one without losing its memory.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RAW_FAULTS", "COMPRESSED_FAULTS", "malformed_image_fields", "malformed_compressed_fields"]

#: Kinds of raw-image corruption `malformed_image_fields` picks from.
RAW_FAULTS = ("short_step", "short_data", "bad_encoding", "zero_size", "huge", "odd_yuv_width",
              "empty_data", "step_overflow")
#: Kinds of compressed-image corruption.
COMPRESSED_FAULTS = ("truncated", "garbage", "empty", "wrong_format", "depth_format", "corrupt_header",
                     "bitflip_header")


def malformed_image_fields(rng: np.random.Generator, height: int, width: int) -> dict[str, Any]:
    """Fields of a `sensor_msgs/Image` the node must reject (never a convertible image)."""
    kind = RAW_FAULTS[int(rng.integers(len(RAW_FAULTS)))]
    step = width * 3
    good = dict(height=height, width=width, encoding="rgb8", is_bigendian=0, step=step,
                data=bytes(step * height))
    if kind == "short_step":
        good["step"] = int(rng.integers(0, step))
    elif kind == "short_data":
        good["data"] = bytes(int(rng.integers(0, step * height)))
    elif kind == "bad_encoding":
        good["encoding"] = str(rng.choice(["", "rgb9", "jpeg", "32FC1", "RGB8", "bayer_xyz8"]))
    elif kind == "zero_size":
        good.update(height=0, width=int(rng.integers(0, 5)), step=0, data=b"")
    elif kind == "huge":
        good.update(height=100_000, width=100_000, step=300_000)
    elif kind == "odd_yuv_width":
        w = width | 1
        good.update(encoding="yuv422", width=w, step=2 * w, data=bytes(2 * w * height))
    elif kind == "empty_data":
        good["data"] = b""
    else:  # step_overflow: step * height far beyond the payload
        good["step"] = 2**31
    return {"fault": kind, **good}


def malformed_compressed_fields(rng: np.random.Generator, valid_jpeg: bytes, valid_png: bytes) -> dict[str, Any]:
    """Fields of a `sensor_msgs/CompressedImage` the node must reject."""
    kind = COMPRESSED_FAULTS[int(rng.integers(len(COMPRESSED_FAULTS)))]
    fmt, data = "jpeg", valid_jpeg
    if kind == "truncated":
        src = valid_jpeg if rng.random() < 0.5 else valid_png
        fmt = "jpeg" if src is valid_jpeg else "png"
        data = src[: int(rng.integers(1, len(src) - 16))]
    elif kind == "garbage":
        data = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    elif kind == "empty":
        data = b""
    elif kind == "wrong_format":
        fmt = "png"  # but the data is JPEG
    elif kind == "depth_format":
        fmt, data = "16UC1; compressedDepth png", valid_png
    elif kind == "corrupt_header":
        data = valid_jpeg[:3] + b"\x00" * 64 + valid_jpeg[-2:]
    else:  # bitflip_header: a PNG whose signature is damaged
        data = b"\x89PNX" + valid_png[4:]
        fmt = "png"
    return {"fault": kind, "format": fmt, "data": data}
