"""`infinipot_synthetic_camera`: the seeded synthetic world published as a live sensor_msgs/Image camera.

Why: the demo and the tests need a camera without hardware or bag files, and the built-in model was trained
on exactly this world (infinipot_eval/world.py: a drifting background and one coloured object at a time), so
questions about it have definite answers the model can know. Frame i is `World(seed).frame(i)` and its header
stamp is `start + i / rate_hz`: stream time advances exactly as in the recorded bags that `infinipot-synth`
writes, so the node's stamp sampler sees the same frames live and offline.
"""
from __future__ import annotations

import sys

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from infinipot_eval.world import World

__all__ = ["SyntheticCameraNode", "make_world", "stamp_for", "rgb_to_image_msg", "main"]

#: length of the rendered timeline; the stream loops after it (frames are rendered lazily, so it costs nothing)
WORLD_SECONDS = 3600.0


def make_world(seed: int, rate_hz: float, size: int) -> World:
    """The world the camera shows; the demo builds the same one to know the right answers."""
    return World(seed=seed, seconds=WORLD_SECONDS, fps=rate_hz, size=size)


def stamp_for(start_ns: int, index: int, rate_hz: float) -> Time:
    """Header stamp of frame `index`: the start time plus index / rate, exact to the nanosecond."""
    ns = start_ns + round(index * 1e9 / rate_hz)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def rgb_to_image_msg(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """An rgb8 sensor_msgs/Image holding a copy of `rgb` (H, W, 3) uint8."""
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = rgb.tobytes()
    return msg


class SyntheticCameraNode(Node):
    """Publishes the frames of `World(seed)` at `rate_hz` on `topic`."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("infinipot_synthetic_camera", **kwargs)
        self.declare_parameter("topic", "/camera/image_raw",
                               ParameterDescriptor(description="Image topic to publish on.", read_only=True))
        self.declare_parameter("rate_hz", 10.0, ParameterDescriptor(
            description="Frames per second (also the world's frame rate).", read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=120.0)]))
        self.declare_parameter("size", 112, ParameterDescriptor(
            description="Width and height of the square images in pixels.", read_only=True,
            integer_range=[IntegerRange(from_value=16, to_value=4096, step=0)]))
        self.declare_parameter("seed", 0, ParameterDescriptor(
            description="Seed of the synthetic world (objects, colours, timing).", read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=(1 << 31) - 1, step=0)]))
        self.declare_parameter("start_stamp_ns", 0, ParameterDescriptor(
            description="Header stamp of frame 0 in nanoseconds; 0 = the node clock at start-up.",
            read_only=True, integer_range=[IntegerRange(from_value=0, to_value=(1 << 63) - 1, step=0)]))
        self.declare_parameter("frame_id", "synthetic_camera", ParameterDescriptor(
            description="header.frame_id of the images.", read_only=True))
        self.declare_parameter("max_frames", 0, ParameterDescriptor(
            description="Stop publishing after this many frames; 0 = never.", read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=1 << 31, step=0)]))

        gp = self.get_parameter
        self._rate = float(gp("rate_hz").value)
        self._world = make_world(int(gp("seed").value), self._rate, int(gp("size").value))
        self._frame_id = gp("frame_id").value
        self._max_frames = int(gp("max_frames").value)
        self._start_ns = int(gp("start_stamp_ns").value) or self.get_clock().now().nanoseconds
        self._pub = self.create_publisher(Image, gp("topic").value, qos_profile_sensor_data)
        self.published = 0
        self._timer = self.create_timer(1.0 / self._rate, self._tick)
        self.get_logger().info(
            f"publishing world seed {gp('seed').value} ({gp('size').value}px rgb8) at {self._rate:g} Hz "
            f"on {gp('topic').value}; frame 0 stamp {self._start_ns} ns"
        )

    def _tick(self) -> None:
        if self._max_frames and self.published >= self._max_frames:
            self._timer.cancel()
            return
        i = self.published
        rgb = self._world.frame(i % self._world.num_frames)
        self._pub.publish(rgb_to_image_msg(rgb, stamp_for(self._start_ns, i, self._rate), self._frame_id))
        self.published += 1


def main(args: list[str] | None = None) -> int:
    """Entry point of `infinipot_synthetic_camera`."""
    rclpy.init(args=args)
    node = SyntheticCameraNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
