"""rosbag2 reading and writing of camera images with `rosbags` (pure Python, no ROS runtime).

Why `rosbags` and not `rosbag2_py`: the evaluation must run where no ROS distribution is installed (CI,
laptops); `rosbags` reads and writes the same files (mcap and sqlite3 storage) that `ros2 bag` does.
Messages are (de)serialised with the typestore of the newest ROS 2 distribution `rosbags` knows, whose
`sensor_msgs/msg/Image` and `CompressedImage` are the same as on every ROS 2 distribution since Humble.

Stamps: `iter_image_messages` yields the header stamp in seconds (what the node's sampler and the engine
use), not the bag's receive time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

__all__ = [
    "IMAGE_TYPE",
    "COMPRESSED_TYPE",
    "BagError",
    "ImageTopic",
    "typestore",
    "make_image_msg",
    "make_compressed_msg",
    "compressed_msg_from_bytes",
    "write_bag",
    "write_messages",
    "list_image_topics",
    "iter_image_messages",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
_IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
_STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
#: format string image_transport's compressed plugin writes for JPEG from an rgb8 source
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"


class BagError(RuntimeError):
    """A bag that cannot be read or written as asked (missing, no such topic, not an image topic, ...)."""


@dataclass(frozen=True)
class ImageTopic:
    topic: str
    msgtype: str
    count: int


_TYPESTORE = None


def typestore():
    """The shared typestore (newest ROS 2 distribution available in the installed `rosbags`)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        for name in ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_HUMBLE"):
            if hasattr(Stores, name):
                _TYPESTORE = get_typestore(getattr(Stores, name))
                break
    return _TYPESTORE


def _stamp(stamp_ns: int) -> Any:
    time_cls = typestore().types["builtin_interfaces/msg/Time"]
    return time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))


def _header(stamp_ns: int, frame_id: str) -> Any:
    return typestore().types["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id)


def make_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A `sensor_msgs/msg/Image` (rgb8) message object of the rosbags typestore."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    return typestore().types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding="rgb8", is_bigendian=0,
        step=width * 3, data=np.ascontiguousarray(rgb).reshape(-1).copy(),
    )


def make_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "camera", quality: int = 90) -> Any:
    """A `sensor_msgs/msg/CompressedImage` (JPEG) message; OpenCV's encoder is deterministic."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return compressed_msg_from_bytes(buf.tobytes(), JPEG_FORMAT, stamp_ns, frame_id)


def compressed_msg_from_bytes(payload: bytes, fmt: str, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A `sensor_msgs/msg/CompressedImage` carrying `payload` unchanged (e.g. a JPEG file's bytes)."""
    return typestore().types[COMPRESSED_TYPE](
        header=_header(stamp_ns, frame_id), format=fmt, data=np.frombuffer(payload, dtype=np.uint8).copy(),
    )


def write_bag(out_dir: str | Path, frames: Iterable[tuple[int, np.ndarray]], *, topic: str = "/camera/image_raw",
              storage: str = "mcap", compressed: bool = False, frame_id: str = "camera",
              jpeg_quality: int = 90) -> int:
    """Write (stamp_ns, rgb) frames as one image topic into a new rosbag2 directory; returns the count.

    Frames are consumed lazily (an hour of video never sits in memory). The receive timestamp equals the
    header stamp, as if recorded with no transport delay. `out_dir` must not exist yet (rosbag2 rule).
    """
    msgs = ((stamp_ns, make_compressed_msg(rgb, stamp_ns, frame_id, jpeg_quality) if compressed
             else make_image_msg(rgb, stamp_ns, frame_id)) for stamp_ns, rgb in frames)
    return write_messages(out_dir, msgs, topic=topic, msgtype=COMPRESSED_TYPE if compressed else IMAGE_TYPE,
                          storage=storage)


def write_messages(out_dir: str | Path, msgs: Iterable[tuple[int, Any]], *, topic: str, msgtype: str,
                   storage: str = "mcap") -> int:
    """Write (receive stamp_ns, message) pairs of one topic into a new rosbag2 directory; returns the count."""
    if storage not in _STORAGES:
        raise BagError(f"unknown storage {storage!r}; use one of {sorted(_STORAGES)}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise BagError(f"{out_dir} exists; rosbag2 writes into a new directory")
    store = typestore()
    count = 0
    with Writer(out_dir, version=9, storage_plugin=_STORAGES[storage]) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for stamp_ns, msg in msgs:
            writer.write(conn, int(stamp_ns), store.serialize_cdr(msg, msgtype))
            count += 1
    return count


def _open(bag_dir: str | Path) -> Reader:
    bag_dir = Path(bag_dir)
    if not (bag_dir / "metadata.yaml").is_file():
        raise BagError(f"{bag_dir}: not a rosbag2 directory (no metadata.yaml)")
    try:
        reader = Reader(bag_dir)
        reader.open()
    except Exception as exc:  # rosbags raises its own ReaderError, and storage errors of its plugins
        raise BagError(f"{bag_dir}: cannot open: {exc}") from exc
    return reader


def list_image_topics(bag_dir: str | Path) -> list[ImageTopic]:
    """Image and CompressedImage topics of a bag, with message counts, sorted by topic name."""
    reader = _open(bag_dir)
    try:
        return sorted((ImageTopic(t, info.msgtype, info.msgcount) for t, info in reader.topics.items()
                       if info.msgtype in _IMAGE_TYPES), key=lambda it: it.topic)
    finally:
        reader.close()


def iter_image_messages(bag_dir: str | Path, topic: str) -> Iterator[tuple[float, Any]]:
    """Yield (header stamp in seconds, message) of one image topic, in bag order, lazily.

    The messages are rosbags message objects (`.header`, `.encoding`/`.format`, `.data`), which the ROS
    layer's `infinipot_ros.conversion` functions accept directly.
    """
    reader = _open(bag_dir)
    try:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            topics = sorted({c.topic for c in reader.connections})
            raise BagError(f"{bag_dir}: no topic {topic!r} (topics: {topics})")
        bad = [c.msgtype for c in conns if c.msgtype not in _IMAGE_TYPES]
        if bad:
            raise BagError(f"{bag_dir}: topic {topic!r} has type {bad[0]}, not an image type")
        store = typestore()
        for conn, _t, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            stamp = msg.header.stamp
            yield stamp.sec + stamp.nanosec * 1e-9, msg
    finally:
        reader.close()
