"""Camera message → RGB array conversion, without ROS.

Why ROS-free: the node converts `sensor_msgs/Image` and `CompressedImage` messages from rclpy, and the
offline evaluation converts the same messages read from a rosbag2 file with `rosbags` (no ROS runtime).
Both kinds of message expose the same fields (`height`, `width`, `encoding`, `is_bigendian`, `step`,
`data` / `format`, `data`), so these functions only read those attributes (duck typing) and never import
rclpy.

The results match `rosbags.image.message_to_cvimage(msg, "rgb8")` (the reference the tests compare against),
including its way of scaling 16-bit images to 8 bit (``floor(v * 255 / 65535)``). Unlike the reference, the
row `step` is honoured (padded rows are common on real drivers) and every malformed message raises a typed
`ImageConversionError` instead of an assertion or a NumPy error.

Every returned array is a fresh, C-contiguous ``(H, W, 3) uint8`` copy: the caller may keep it after the
message buffer is reused.
"""
from __future__ import annotations

import warnings

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

try:  # OpenCV is a dependency of rosbags-image; it decodes YUV/Bayer and matches the reference exactly.
    import cv2

    if hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)  # corrupt camera data must not spam stderr; errors are raised as exceptions
except ImportError:  # pragma: no cover - exercised only on machines without OpenCV
    cv2 = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageConversionError",
    "SUPPORTED_ENCODINGS",
    "compressed_msg_to_rgb",
    "image_msg_to_rgb",
    "message_to_rgb",
    "is_compressed",
]

#: Largest image (width × height) accepted unless the caller says otherwise: 8192 × 8192.
DEFAULT_MAX_PIXELS = 8192 * 8192


class ImageConversionError(ValueError):
    """A message that cannot be turned into an RGB image; the text says why."""


@dataclass(frozen=True)
class _Encoding:
    """How one raw encoding is laid out and turned into RGB."""

    channels: int
    bytes_per_channel: int
    # Takes the (H, W, C) array in native byte order, returns (H, W, 3) uint8.
    to_rgb: Callable[[np.ndarray], np.ndarray]
    # Needs an even width (two pixels share chroma samples).
    even_width: bool = False

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_channel


def _scale16(img: np.ndarray) -> np.ndarray:
    """16 → 8 bit exactly as the reference does (float multiply, then truncation)."""
    return np.multiply(img, 255.0 / 65535.0).astype(np.uint8)


def _rgb(img: np.ndarray) -> np.ndarray:
    return img[..., :3]


def _bgr(img: np.ndarray) -> np.ndarray:
    return img[..., 2::-1]


def _gray(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[..., :1], 3, axis=2)


def _cv(code_name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A converter that needs OpenCV's colour conversion (chroma subsampling, demosaicing)."""

    def convert(img: np.ndarray) -> np.ndarray:
        if cv2 is None:  # pragma: no cover
            raise ImageConversionError(f"converting this encoding needs OpenCV ({code_name}), not installed")
        planes = img[..., 0] if img.shape[-1] == 1 else img  # Bayer mosaics are 2-D for OpenCV
        return cv2.cvtColor(np.ascontiguousarray(planes), getattr(cv2, code_name))

    return convert


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1, _rgb),
    "bgr8": _Encoding(3, 1, _bgr),
    "rgba8": _Encoding(4, 1, _rgb),
    "bgra8": _Encoding(4, 1, _bgr),
    "mono8": _Encoding(1, 1, _gray),
    # OpenCV-style generic types: 8UC3 is taken as RGB (as the reference does), 8UC1 as gray.
    "8UC3": _Encoding(3, 1, _rgb),
    "8UC1": _Encoding(1, 1, _gray),
    "mono16": _Encoding(1, 2, lambda img: _scale16(_gray(img))),
    "rgb16": _Encoding(3, 2, lambda img: _scale16(_rgb(img))),
    "bgr16": _Encoding(3, 2, lambda img: _scale16(_bgr(img))),
    "rgba16": _Encoding(4, 2, lambda img: _scale16(_rgb(img))),
    "bgra16": _Encoding(4, 2, lambda img: _scale16(_bgr(img))),
    # Packed 4:2:2. ROS's "yuv422" is UYVY byte order; "yuv422_yuy2" is YUYV.
    "uyvy": _Encoding(2, 1, _cv("COLOR_YUV2RGB_UYVY"), even_width=True),
    "yuv422": _Encoding(2, 1, _cv("COLOR_YUV2RGB_UYVY"), even_width=True),
    "yuyv": _Encoding(2, 1, _cv("COLOR_YUV2RGB_YUYV"), even_width=True),
    "yuv422_yuy2": _Encoding(2, 1, _cv("COLOR_YUV2RGB_YUYV"), even_width=True),
    # Bayer: OpenCV names the pattern by the second row, hence RGGB → BG (as the reference maps it).
    "bayer_rggb8": _Encoding(1, 1, _cv("COLOR_BAYER_BG2RGB")),
    "bayer_bggr8": _Encoding(1, 1, _cv("COLOR_BAYER_RG2RGB")),
    "bayer_gbrg8": _Encoding(1, 1, _cv("COLOR_BAYER_GR2RGB")),
    "bayer_grbg8": _Encoding(1, 1, _cv("COLOR_BAYER_GB2RGB")),
}

#: Raw `sensor_msgs/Image` encodings `image_msg_to_rgb` accepts.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


def _buffer(data: Any) -> np.ndarray:
    """The message's byte payload as a 1-D uint8 array (rclpy: array.array / bytes; rosbags: ndarray)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.view(np.uint8).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # e.g. a plain list of ints
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ImageConversionError(f"image data is not a byte sequence ({type(data).__name__})") from err


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"zero-size image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageConversionError(
            f"image too large: {width}x{height} = {width * height} pixels > max {max_pixels}"
        )


def image_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a raw `sensor_msgs/Image`-like message to a fresh ``(H, W, 3) uint8`` RGB array.

    Raises `ImageConversionError` for an unknown encoding, a zero or oversized image, a `step` shorter
    than a row, a payload shorter than ``step * height``, or an odd width in a 4:2:2 encoding.
    """
    encoding = str(msg.encoding)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels)
    row_bytes = width * spec.bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} < width {width} * {spec.bytes_per_pixel} bytes per pixel ({encoding})"
        )
    if spec.even_width and width % 2:
        raise ImageConversionError(f"{encoding} needs an even width, got {width}")
    data = _buffer(msg.data)
    if data.size < step * height:
        raise ImageConversionError(
            f"data too short: {data.size} bytes < step {step} * height {height} = {step * height}"
        )
    # Copy the rows (without padding) out of the message buffer first: the result never aliases it.
    rows = np.array(data[: step * height].reshape(height, step)[:, :row_bytes], copy=True)
    if spec.bytes_per_channel == 1:
        pixels = rows.reshape(height, width, spec.channels)
    else:
        order = ">" if bool(msg.is_bigendian) else "<"
        wide = rows.view(np.dtype(f"{order}u{spec.bytes_per_channel}"))
        pixels = wide.astype(wide.dtype.newbyteorder("=")).reshape(height, width, spec.channels)
    # `pixels` is already our own copy, so a contiguous result of it cannot alias the message.
    return np.ascontiguousarray(spec.to_rgb(pixels), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------
# Compressed images

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sniff(head: bytes) -> str | None:
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_PNG_MAGIC):
        return "png"
    return None


def _declared_codec(fmt: str) -> str | None:
    """The codec named in a `CompressedImage.format` such as "jpeg", "png" or "rgb8; jpeg compressed bgr8"."""
    text = fmt.lower()
    if "compresseddepth" in text.replace(" ", ""):
        return "compressedDepth"
    if "png" in text:
        return "png"
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    return None


def _image_size(payload: bytes, codec: str) -> tuple[int, int]:
    """Width and height from the file header, read before decoding so a huge image is refused cheaply."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL's own "decompression bomb" warning: this module enforces its own (configurable) limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(payload)) as img:
                return int(img.width), int(img.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageConversionError(f"corrupt {codec} data: cannot read the header ({err})") from err
    except Image.DecompressionBombError as err:
        raise ImageConversionError(f"{codec} image too large: {err}") from err


def _complete(payload: bytes, codec: str) -> bool:
    """Whether the stream ends properly: truncated JPEGs otherwise decode "successfully" with grey rows."""
    if codec == "jpeg":
        return payload.rstrip(b"\x00").endswith(b"\xff\xd9")
    return b"IEND" in payload[-16:]


def compressed_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage`-like message (JPEG or PNG) to ``(H, W, 3) uint8`` RGB.

    The codec is taken from `format` when it names one, else from the data's magic bytes; they must agree.
    Raises `ImageConversionError` for an unknown or mismatched format, empty, truncated or corrupt data and
    images larger than `max_pixels` (checked from the header, before decoding).
    """
    fmt = str(getattr(msg, "format", ""))
    payload = _buffer(msg.data).tobytes()
    if not payload:
        raise ImageConversionError("empty compressed image data")
    declared = _declared_codec(fmt)
    if declared == "compressedDepth":
        raise ImageConversionError(f"compressed depth images are not camera images (format {fmt!r})")
    actual = _sniff(payload[:8])
    if actual is None:
        raise ImageConversionError(
            f"corrupt or unsupported compressed data (format {fmt!r}; not a JPEG or PNG stream)"
        )
    if declared is not None and declared != actual:
        raise ImageConversionError(f"format says {declared} but the data is {actual} (format {fmt!r})")
    width, height = _image_size(payload, actual)
    _check_size(width, height, max_pixels)
    if not _complete(payload, actual):
        raise ImageConversionError(f"truncated {actual} data ({len(payload)} bytes)")
    if cv2 is not None:
        bgr = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ImageConversionError(f"corrupt {actual} data: decoder failed")
        rgb = bgr[..., ::-1]
    else:  # pragma: no cover - PIL fallback where OpenCV is missing
        from io import BytesIO

        from PIL import Image

        try:
            with Image.open(BytesIO(payload)) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as err:
            raise ImageConversionError(f"corrupt {actual} data: {err}") from err
    if rgb.shape[:2] != (height, width):
        raise ImageConversionError(f"corrupt {actual} data: header says {width}x{height}, got {rgb.shape}")
    return np.ascontiguousarray(rgb, dtype=np.uint8).copy()


def is_compressed(msg: Any) -> bool:
    """A `CompressedImage` has `format` and no `encoding`."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def message_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert either kind of camera message (dispatch on its fields)."""
    if is_compressed(msg):
        return compressed_msg_to_rgb(msg, max_pixels)
    return image_msg_to_rgb(msg, max_pixels)

