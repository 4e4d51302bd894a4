"""Image conversion against the reference `rosbags.image.message_to_cvimage(msg, "rgb8")`.

Messages are built with the rosbags typestore types (what the offline evaluation reads from bags) and, for
one round trip, with the real rclpy message classes (what the node receives).
"""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image as PILImage
from rosbags.image import message_to_cvimage
from rosbags.typesys import Stores, get_typestore

from infinipot_ros.conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    message_to_rgb,
)

TS = get_typestore(Stores.ROS2_JAZZY)
Image = TS.types["sensor_msgs/msg/Image"]
CompressedImage = TS.types["sensor_msgs/msg/CompressedImage"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]

# encoding -> (channels, numpy dtype)
RAW = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "mono16": (1, np.uint16),
    "rgb16": (3, np.uint16),
    "bgr16": (3, np.uint16),
    "rgba16": (4, np.uint16),
    "bgra16": (4, np.uint16),
    "yuv422": (2, np.uint8),
    "uyvy": (2, np.uint8),
    "yuyv": (2, np.uint8),
    "yuv422_yuy2": (2, np.uint8),
    "bayer_rggb8": (1, np.uint8),
    "bayer_bggr8": (1, np.uint8),
    "bayer_gbrg8": (1, np.uint8),
    "bayer_grbg8": (1, np.uint8),
    "8UC3": (3, np.uint8),
}


def _header() -> object:
    return Header(stamp=Time(sec=1, nanosec=5), frame_id="cam")


def make_image(
    pixels: np.ndarray, encoding: str, *, bigendian: bool = False, pad: int = 0
) -> object:
    """A rosbags Image with `pad` extra bytes at the end of every row, in the requested byte order."""
    height, width = pixels.shape[:2]
    order = ">" if bigendian else "<"
    raw = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    row = len(raw) // height
    rows = [raw[i * row : (i + 1) * row] + b"\xee" * pad for i in range(height)]
    data = np.frombuffer(b"".join(rows), dtype=np.uint8).copy()
    return Image(
        header=_header(), height=height, width=width, encoding=encoding,
        is_bigendian=int(bigendian), step=row + pad, data=data,
    )


def random_pixels(encoding: str, height: int = 6, width: int = 8, seed: int = 0) -> np.ndarray:
    channels, dtype = RAW[encoding]
    rng = np.random.default_rng(seed)
    hi = 65536 if dtype == np.uint16 else 256
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, hi, size=shape).astype(dtype)


def oracle(msg: object) -> np.ndarray:
    return np.asarray(message_to_cvimage(msg, "rgb8"))


@pytest.mark.parametrize("encoding", sorted(RAW))
@pytest.mark.parametrize("bigendian", [False, True])
def test_raw_encodings_match_reference(encoding: str, bigendian: bool) -> None:
    pixels = random_pixels(encoding)
    msg = make_image(pixels, encoding, bigendian=bigendian)
    got = image_msg_to_rgb(msg)
    assert got.dtype == np.uint8 and got.shape == (6, 8, 3) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, oracle(msg))


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8", "mono16", "rgb16", "yuv422", "yuyv"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_padded_step_matches_reference_on_unpadded(encoding: str, bigendian: bool) -> None:
    # The reference ignores `step`, so it is given the same image without padding.
    pixels = random_pixels(encoding, height=5, width=6, seed=3)
    padded = make_image(pixels, encoding, bigendian=bigendian, pad=7)
    plain = make_image(pixels, encoding, bigendian=bigendian)
    np.testing.assert_array_equal(image_msg_to_rgb(padded), oracle(plain))


def test_mono16_both_endiannesses_agree_and_scale_like_reference() -> None:
    pixels = np.array([[0, 1, 256, 257], [32767, 32768, 65534, 65535]], dtype=np.uint16)
    little = image_msg_to_rgb(make_image(pixels, "mono16"))
    big = image_msg_to_rgb(make_image(pixels, "mono16", bigendian=True))
    np.testing.assert_array_equal(little, big)
    np.testing.assert_array_equal(little[..., 0], np.multiply(pixels, 255.0 / 65535.0).astype(np.uint8))
    assert little[1, 3, 0] == 255 and little[0, 2, 0] == 0


def test_8uc1_is_gray() -> None:
    pixels = random_pixels("mono8")
    np.testing.assert_array_equal(
        image_msg_to_rgb(make_image(pixels, "8UC1")), oracle(make_image(pixels, "mono8"))
    )


def test_result_does_not_alias_message_buffer() -> None:
    pixels = random_pixels("rgb8")
    msg = make_image(pixels, "rgb8")
    got = image_msg_to_rgb(msg)
    before = got.copy()
    msg.data[:] = 0
    np.testing.assert_array_equal(got, before)
    assert got.base is None or not np.shares_memory(got, msg.data)


def test_rclpy_message_round_trip() -> None:
    from sensor_msgs.msg import Image as RosImage

    pixels = random_pixels("bgr8", seed=4)
    ref = make_image(pixels, "bgr8", pad=2)
    msg = RosImage(height=ref.height, width=ref.width, encoding="bgr8", is_bigendian=0, step=ref.step)
    msg.data = ref.data.tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(msg), image_msg_to_rgb(ref))
    np.testing.assert_array_equal(message_to_rgb(msg), pixels[..., ::-1])


# ----- compressed ---------------------------------------------------------------------------------------

def smooth_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256], axis=2).astype(np.uint8)


def encode(rgb: np.ndarray, codec: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG" if codec == "jpeg" else "PNG", quality=90)
    return buf.getvalue()


def make_compressed(payload: bytes, fmt: str) -> object:
    return CompressedImage(header=_header(), format=fmt, data=np.frombuffer(payload, np.uint8).copy())


@pytest.mark.parametrize(
    ("codec", "fmt"),
    [("jpeg", "jpeg"), ("png", "png"), ("jpeg", "rgb8; jpeg compressed bgr8"),
     ("png", "bgr8; png compressed bgr8"), ("jpeg", "")],
)
def test_compressed_matches_reference(codec: str, fmt: str) -> None:
    rgb = smooth_rgb()
    msg = make_compressed(encode(rgb, codec), fmt)
    got = compressed_msg_to_rgb(msg)
    assert got.shape == (32, 48, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, oracle(msg))
    if codec == "png":
        np.testing.assert_array_equal(got, rgb)  # lossless
    assert message_to_rgb(msg).shape == got.shape


# ----- malformed ----------------------------------------------------------------------------------------

def _raw(**fields: object) -> object:
    base = dict(header=_header(), height=4, width=4, encoding="rgb8", is_bigendian=0, step=12,
                data=np.zeros(48, np.uint8))
    base.update(fields)
    return Image(**base)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (dict(encoding="weird42"), "unsupported encoding"),
        (dict(encoding=""), "unsupported encoding"),
        (dict(step=11), "step"),
        (dict(data=np.zeros(47, np.uint8)), "too short"),
        (dict(height=0, step=12, data=np.zeros(0, np.uint8)), "zero-size"),
        (dict(width=0, step=0), "zero-size"),
        (dict(height=9000, width=9000, step=27000), "too large"),
        (dict(encoding="yuv422", width=3, step=6, data=np.zeros(24, np.uint8)), "even width"),
        (dict(encoding="mono16", step=7, data=np.zeros(28, np.uint8)), "step"),
    ],
)
def test_malformed_raw_images_raise(fields: dict, reason: str) -> None:
    with pytest.raises(ImageConversionError, match=reason):
        image_msg_to_rgb(_raw(**fields))


def test_max_pixels_is_configurable() -> None:
    image_msg_to_rgb(_raw(), max_pixels=16)
    with pytest.raises(ImageConversionError, match="too large"):
        image_msg_to_rgb(_raw(), max_pixels=15)


def test_conversion_error_is_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)


def _huge_png() -> bytes:
    # A 10000 x 10000 1-bit PNG is tiny on disk; it must be refused from the header, before decoding.
    buf = io.BytesIO()
    PILImage.new("1", (10000, 10000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("payload", "fmt", "reason"),
    [
        (b"", "jpeg", "empty"),
        (b"not an image at all", "jpeg", "corrupt"),
        (encode(smooth_rgb(), "jpeg")[:200], "jpeg", "truncated|corrupt"),
        (encode(smooth_rgb(200, 200), "jpeg")[:-400], "jpeg", "truncated"),
        (encode(smooth_rgb(), "png")[:-30], "png", "truncated|corrupt"),
        (encode(smooth_rgb(), "png"), "jpeg", "format says jpeg"),
        (b"\xff\xd8\xff" + b"\x00" * 64 + b"\xff\xd9", "jpeg", "corrupt"),
        (encode(smooth_rgb(), "png"), "16UC1; compressedDepth", "depth"),
        (_huge_png(), "png", "too large"),
    ],
)
def test_malformed_compressed_images_raise(payload: bytes, fmt: str, reason: str) -> None:
    with pytest.raises(ImageConversionError, match=reason):
        compressed_msg_to_rgb(make_compressed(payload, fmt))


def test_byte_order_of_host_is_handled() -> None:
    # A message in the host's own byte order and one in the other order decode to the same picture.
    pixels = random_pixels("rgb16", seed=9)
    host_big = sys.byteorder == "big"
    a = image_msg_to_rgb(make_image(pixels, "rgb16", bigendian=host_big))
    b = image_msg_to_rgb(make_image(pixels, "rgb16", bigendian=not host_big))
    np.testing.assert_array_equal(a, b)
