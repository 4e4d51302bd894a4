"""Pixel drawing for the synthetic world: a textured background and filled 2-D shapes.

Why hand-written numpy instead of a drawing library: output bytes must be identical for a seed on every
machine (the bags and, later, the training data are compared byte for byte), and each frame is a pure
function of its time so a video of hours can be rendered lazily, one frame at a time, in any order.
Shapes are drawn with hard (non anti-aliased) edges, evaluated at pixel centres, on integer RGB.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["COLOURS", "SHAPES", "make_background", "shape_mask", "draw_shape"]

#: object colours (RGB); saturated or bright so they stand out from the muted background
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 190, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 40),
    "orange": (250, 140, 20),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "pink": (250, 130, 190),
}

#: shape names, each drawn as a filled 2-D silhouette (a cube is a square, a cone a triangle)
SHAPES: tuple[str, ...] = ("cube", "ball", "cone", "star", "ring")


def make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth, muted RGB texture (uint8, (height, width, 3)): a gradient plus a few low-frequency waves.

    Dark and low in saturation (values about 25..105) so that every object colour, white included,
    contrasts with it; smooth so that a drift of a few pixels changes little (temporal redundancy).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    angle = rng.uniform(0.0, 2 * math.pi)
    base = 0.5 + 0.5 * (math.cos(angle) * (xx - 0.5) + math.sin(angle) * (yy - 0.5))
    waves = np.zeros_like(base)
    for _ in range(3):
        fx, fy = rng.uniform(0.5, 2.5, size=2)
        phase = rng.uniform(0.0, 2 * math.pi)
        waves += np.sin(2 * math.pi * (fx * xx + fy * yy) + phase) / 3.0
    luminance = 0.55 * base + 0.45 * (0.5 + 0.5 * waves)  # 0..1
    tint = rng.uniform(0.8, 1.1, size=3)
    img = 25.0 + 80.0 * luminance[..., None] * tint[None, None, :]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _polygon_inside(px: np.ndarray, py: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over the points (px, py)."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        x1, y1 = vertices[i]
        x2, y2 = vertices[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (py >= min(y1, y2)) & (py < max(y1, y2))
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else 0.45 * r
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def shape_mask(shape: str, cx: float, cy: float, radius: float, height: int, width: int
               ) -> tuple[slice, slice, np.ndarray]:
    """Boolean mask of a filled shape centred at (cx, cy) px, clipped to the image.

    Returns (row slice, column slice, mask for that window) so callers only touch the bounding box.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    y0, y1 = max(int(math.floor(cy - radius)) - 1, 0), min(int(math.ceil(cy + radius)) + 2, height)
    x0, x1 = max(int(math.floor(cx - radius)) - 1, 0), min(int(math.ceil(cx + radius)) + 2, width)
    rows, cols = slice(y0, max(y0, y1)), slice(x0, max(x0, x1))
    py, px = np.mgrid[rows, cols].astype(np.float64)
    py += 0.5
    px += 0.5
    dist2 = (px - cx) ** 2 + (py - cy) ** 2
    if shape == "ball":
        mask = dist2 <= radius ** 2
    elif shape == "ring":
        mask = (dist2 <= radius ** 2) & (dist2 >= (0.55 * radius) ** 2)
    elif shape == "cube":
        half = 0.85 * radius
        mask = (np.abs(px - cx) <= half) & (np.abs(py - cy) <= half)
    elif shape == "cone":
        mask = _polygon_inside(px, py, [(cx, cy - radius), (cx + 0.9 * radius, cy + radius),
                                        (cx - 0.9 * radius, cy + radius)])
    else:  # star
        mask = _polygon_inside(px, py, _star(cx, cy, radius))
    return rows, cols, mask


def draw_shape(img: np.ndarray, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
               radius: float) -> None:
    """Fill `shape` in `colour` into `img` ((H, W, 3) uint8) in place."""
    rows, cols, mask = shape_mask(shape, cx, cy, radius, img.shape[0], img.shape[1])
    window = img[rows, cols]
    window[mask] = np.asarray(colour, dtype=np.uint8)
