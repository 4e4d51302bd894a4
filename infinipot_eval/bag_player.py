"""`infinipot_bag_player`: publish a bag's image topics with their recorded timing (no `ros2 bag` needed).

    infinipot_bag_player --bag DIR [--rate 1.0] [--topic T ...] [--loop]

Why our own player: `ros2 bag play` is not installable without a ROS distribution (see
docs/evaluation.md). Messages are published exactly as recorded: the raw CDR bytes from the bag are
deserialised with rclpy's own message classes, so header stamps and data are untouched, and the time
between messages is the recorded receive-time difference divided by `rate`.

QoS (`image_qos`, the same kinds as the node's `image_qos` parameter): `reliable` (default) publishes
RELIABLE, KEEP_LAST 10; it matches both a reliable node subscription (every message arrives: replays and
lockstep) and the node's default `sensor_data` one (BEST_EFFORT, KEEP_LAST 5), where the link then runs best
effort and a burst of large frames can be lost in transport. `sensor_data` publishes as a camera driver
does (`qos_profile_sensor_data`); it matches only a best-effort subscription. The real-time player relies
on the recorded pacing; the lockstep driver (live.py) paces on the node's counters.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .bagio import COMPRESSED_TYPE, IMAGE_TYPE, BagError, list_image_topics

__all__ = ["BagPlayer", "main"]


class BagPlayer:
    """Publishes image topics of one bag on `node`, paced by the recorded timing scaled by `rate`."""

    def __init__(self, node, bag_dir: str | Path, topics: list[str] | None = None, rate: float = 1.0, *,
                 image_qos: str = "reliable") -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if image_qos not in ("reliable", "sensor_data"):
            raise ValueError(f"image_qos must be reliable or sensor_data, got {image_qos!r}")
        self.bag_dir = Path(bag_dir)
        available = {t.topic: t.msgtype for t in list_image_topics(self.bag_dir)}
        self.topics = topics or sorted(available)
        missing = [t for t in self.topics if t not in available]
        if missing:
            raise BagError(f"{self.bag_dir}: no image topic(s) {missing} (image topics: {sorted(available)})")
        self.rate = rate
        qos = (QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE) if image_qos == "reliable"
               else qos_profile_sensor_data)  # reliable matches best-effort subscribers too
        classes = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage}
        self._classes = {t: classes[available[t]] for t in self.topics}
        self._pubs = {t: node.create_publisher(self._classes[t], t, qos) for t in self.topics}
        self.published = 0
        #: header stamp (s) of the first published message: stream time 0
        self.first_stamp: float | None = None

    def wait_for_subscribers(self, timeout_s: float, count: int = 1) -> bool:
        """Wait until every topic has `count` matched subscriptions (discovery), so no first frame is lost."""
        deadline = time.monotonic() + timeout_s
        while any(pub.get_subscription_count() < count for pub in self._pubs.values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def play(self, stop: threading.Event | None = None,
             before_publish: Callable[[float, Any], None] | None = None, *, paced: bool = True) -> int:
        """Publish every message once; `before_publish(stream_seconds, msg)` runs before each.

        Stream seconds are header-stamp seconds since the first message, as in the offline replay. The hook
        may block (the lockstep driver pauses playback there); with `paced` the recorded timing × rate is
        kept relative to the start, so time spent in the hook is caught up, as a real-time player would.
        `paced=False` publishes as fast as the hook allows. Returns the number of messages published.
        """
        from rclpy.serialization import deserialize_message
        from rosbags.rosbag2 import Reader

        with Reader(self.bag_dir) as reader:
            conns = [c for c in reader.connections if c.topic in self.topics]
            wall0 = time.monotonic()
            log0: int | None = None
            first_stamp: float | None = None
            for conn, log_ns, raw in reader.messages(connections=conns):
                if stop is not None and stop.is_set():
                    break
                log0 = log_ns if log0 is None else log0
                delay = wall0 + (log_ns - log0) * 1e-9 / self.rate - time.monotonic()
                if paced and delay > 0:
                    time.sleep(delay)
                msg = deserialize_message(bytes(raw), self._classes[conn.topic])
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                first_stamp = stamp if first_stamp is None else first_stamp
                self.first_stamp = first_stamp
                if before_publish is not None:
                    before_publish(stamp - first_stamp, msg)
                self._pubs[conn.topic].publish(msg)
                self.published += 1
        return self.published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infinipot_bag_player", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--topic", action="append", help="image topic to play (repeatable; default: all)")
    parser.add_argument("--loop", action="store_true", help="play again and again until interrupted")
    parser.add_argument("--image-qos", choices=("reliable", "sensor_data"), default="reliable",
                        help="publisher QoS (reliable also reaches best-effort subscribers)")
    args, ros_args = parser.parse_known_args(argv)

    import rclpy
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=ros_args)
    node = rclpy.create_node("infinipot_bag_player")
    try:
        player = BagPlayer(node, args.bag, args.topic, args.rate, image_qos=args.image_qos)
        node.get_logger().info(f"playing {args.bag} topics {player.topics} at rate {args.rate}")
        while True:
            player.play()
            if not args.loop:
                break
    except (BagError, ValueError) as exc:
        print(f"infinipot_bag_player: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # Ctrl-C: rclpy's signal handler shuts the context down, and the next publish fails on it. That is
        # the normal way out of playback; anything else is re-raised.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
