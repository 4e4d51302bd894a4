"""`infinipot_synthetic_camera`: a small moving-objects scene published as sensor_msgs/Image (rgb8).

Why: the demo and the tests need a camera without hardware or bag files. The scene is drawn with NumPy only:
a fixed gradient background with a red cube, a blue ball and a green bar that enter, move and leave at
known times (the script loops every `loop_s` seconds of scene time), so a question like "What colour was the
cube?" has a definite answer. Header stamps are the node clock at render time, so sampling by stamp works
as it does with a real driver. (The richer world used for evaluation lives in infinipot_eval/.)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

__all__ = ["SyntheticCameraNode", "SceneObject", "render_scene", "DEFAULT_OBJECTS", "main"]


@dataclass(frozen=True)
class SceneObject:
    """A shape visible from `enter_s` to `leave_s` of scene time, moving in a straight line meanwhile."""

    name: str
    shape: str  # "square" | "circle" | "bar"
    color: tuple[int, int, int]
    enter_s: float
    leave_s: float
    start: tuple[float, float]  # (x, y) at enter, as fractions of width/height
    end: tuple[float, float]  # (x, y) at leave
    size: float  # fraction of the image height


DEFAULT_OBJECTS: tuple[SceneObject, ...] = (
    SceneObject("red cube", "square", (220, 30, 30), 0.0, 6.0, (0.1, 0.5), (0.8, 0.45), 0.25),
    SceneObject("blue ball", "circle", (30, 60, 220), 2.0, 9.0, (0.9, 0.3), (0.2, 0.7), 0.2),
    SceneObject("green bar", "bar", (40, 190, 60), 5.0, 10.0, (0.5, 0.1), (0.5, 0.9), 0.12),
)


def _background(height: int, width: int) -> np.ndarray:
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    sky = np.stack([150 + 60 * y + 0 * x, 170 + 50 * y + 0 * x, 200 - 40 * y + 10 * x], axis=2)
    return np.clip(sky, 0, 255).astype(np.uint8)


def render_scene(
    t: float,
    height: int = 240,
    width: int = 320,
    objects: tuple[SceneObject, ...] = DEFAULT_OBJECTS,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """The scene at scene time `t` seconds as an (H, W, 3) uint8 RGB image."""
    img = (background if background is not None else _background(height, width)).copy()
    yy, xx = np.ogrid[0:height, 0:width]
    for obj in objects:
        if not obj.enter_s <= t < obj.leave_s:
            continue
        a = (t - obj.enter_s) / (obj.leave_s - obj.enter_s)
        cx = (obj.start[0] + a * (obj.end[0] - obj.start[0])) * width
        cy = (obj.start[1] + a * (obj.end[1] - obj.start[1])) * height
        r = obj.size * height / 2
        if obj.shape == "circle":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif obj.shape == "bar":
            mask = (np.abs(xx - cx) <= r * 2.5) & (np.abs(yy - cy) <= r * 0.4)
        else:
            mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        img[mask] = obj.color
    return img


class SyntheticCameraNode(Node):
    """Publishes `render_scene` frames at `rate_hz` on `topic` with node-clock header stamps."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("infinipot_synthetic_camera", **kwargs)
        self.declare_parameter("topic", "/camera/image_raw",
                               ParameterDescriptor(description="Image topic to publish on.", read_only=True))
        self.declare_parameter("rate_hz", 10.0, ParameterDescriptor(
            description="Frames per second.", read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=120.0)]))
        self.declare_parameter("width", 320, ParameterDescriptor(
            description="Image width in pixels.", read_only=True,
            integer_range=[IntegerRange(from_value=16, to_value=4096, step=0)]))
        self.declare_parameter("height", 240, ParameterDescriptor(
            description="Image height in pixels.", read_only=True,
            integer_range=[IntegerRange(from_value=16, to_value=4096, step=0)]))
        self.declare_parameter("loop_s", 12.0, ParameterDescriptor(
            description="Scene time after which the script starts over.", read_only=True,
            floating_point_range=[FloatingPointRange(from_value=1.0, to_value=3600.0)]))
        self.declare_parameter("frame_id", "synthetic_camera", ParameterDescriptor(
            description="header.frame_id of the images.", read_only=True))
        self.declare_parameter("max_frames", 0, ParameterDescriptor(
            description="Stop publishing after this many frames; 0 = never.", read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=1 << 31, step=0)]))

        gp = self.get_parameter
        self._width, self._height = gp("width").value, gp("height").value
        self._loop_s = gp("loop_s").value
        self._frame_id = gp("frame_id").value
        self._max_frames = gp("max_frames").value
        self._background = _background(self._height, self._width)
        self._pub = self.create_publisher(Image, gp("topic").value, qos_profile_sensor_data)
        self._start = self.get_clock().now()
        self.published = 0
        self._timer = self.create_timer(1.0 / gp("rate_hz").value, self._tick)
        self.get_logger().info(
            f"publishing {self._width}x{self._height} rgb8 at {gp('rate_hz').value:g} Hz on {gp('topic').value}"
        )

    def _tick(self) -> None:
        if self._max_frames and self.published >= self._max_frames:
            self._timer.cancel()
            return
        now = self.get_clock().now()
        t = ((now - self._start).nanoseconds * 1e-9) % self._loop_s
        rgb = render_scene(t, self._height, self._width, background=self._background)
        msg = Image()
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = self._frame_id
        msg.height, msg.width = self._height, self._width
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = self._width * 3
        msg.data = rgb.tobytes()
        self._pub.publish(msg)
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
