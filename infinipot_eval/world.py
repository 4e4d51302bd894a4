"""A seeded synthetic camera world: a drifting background and one salient object at a time.

Why this world: streaming video memory is tested by *when* things happened. The timeline is long mostly
static stretches (a slowly drifting textured background, which InfiniPot-V's temporal-redundancy score
should find cheap to forget) separated by EVENTS: one object (a colour and a shape) appears, stays or
moves, and leaves. Questions about those events (question_gen.py) have answers known exactly, and whether
the answer lies beyond a sliding window is known from the event times.

Design for reuse by training: `World` is a plain library object. The timeline (`events`) is drawn once
from the seed; `frame(i)` is a pure function of the frame index (no state, any order, any length from
seconds to hours, nothing but the background held in memory), so a training data loader can render clips
of many small worlds (`WorldConfig` shortens events and gaps) and ask `make_questions` about them.

Determinism: numpy's PCG64 `default_rng(seed)` plus integer pixel output; the same (seed, seconds, fps,
size, config) gives the same events and the same frame bytes.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from .render import COLOURS, SHAPES, draw_shape, make_background

__all__ = ["WorldConfig", "Event", "World"]


@dataclass(frozen=True)
class WorldConfig:
    """Timeline statistics (seconds) and object sizes. Defaults suit minutes-to-hours evaluation bags;
    a training set would shorten them (e.g. event_seconds=(1, 2), gap_seconds=(0.5, 1.5))."""

    lead_in_seconds: tuple[float, float] = (1.0, 3.0)  # quiet start before the first event
    event_seconds: tuple[float, float] = (3.0, 7.0)  # how long an object stays in view
    gap_seconds: tuple[float, float] = (4.0, 14.0)  # quiet stretch between events
    radius_fraction: tuple[float, float] = (0.14, 0.20)  # object radius / frame size
    moving_probability: float = 0.5  # chance that an object moves while in view
    drift_pixels: float = 3.0  # amplitude of the camera drift at size 112 (scales with size)
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES

    def __post_init__(self) -> None:
        for name in ("lead_in_seconds", "event_seconds", "gap_seconds", "radius_fraction"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"WorldConfig.{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.event_seconds[1] <= 0:
            raise ValueError("WorldConfig.event_seconds must allow a positive duration")
        unknown = [c for c in self.colours if c not in COLOURS] + [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.colours or not self.shapes:
            raise ValueError(f"WorldConfig: unknown or missing colours/shapes {unknown}")


@dataclass(frozen=True)
class Event:
    """One object in view from `start` to `end` (stream seconds, end exclusive), moving p0 → p1.

    Positions are normalised (0..1) object centres; `radius` is a fraction of the frame size.
    """

    index: int
    colour: str
    shape: str
    start: float
    end: float
    p0: tuple[float, float]
    p1: tuple[float, float]
    radius: float

    @property
    def name(self) -> str:
        """"red cube": how questions and answers refer to it."""
        return f"{self.colour} {self.shape}"

    @property
    def moving(self) -> bool:
        return self.p0 != self.p1

    def position(self, t: float) -> tuple[float, float]:
        """Normalised centre at stream time t (linear motion from p0 at start to p1 at end)."""
        a = 0.0 if self.end <= self.start else min(max((t - self.start) / (self.end - self.start), 0.0), 1.0)
        return (self.p0[0] + a * (self.p1[0] - self.p0[0]), self.p0[1] + a * (self.p1[1] - self.p0[1]))


@dataclass
class World:
    """A seeded world of `seconds` at `fps` frames per second, frames of `size`×`size` RGB."""

    seed: int
    seconds: float
    fps: float = 10.0
    size: int = 112
    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.fps <= 0:
            raise ValueError(f"World needs seconds > 0 and fps > 0, got {self.seconds}, {self.fps}")
        if self.size < 16:
            raise ValueError(f"World size must be at least 16 px, got {self.size}")
        rng = np.random.default_rng(self.seed)
        self._margin = int(math.ceil(self.config.drift_pixels * self.size / 112.0)) + 1
        side = self.size + 2 * self._margin
        self._background = make_background(rng, side, side)
        self._drift = (rng.uniform(20.0, 60.0, size=2), rng.uniform(0.0, 2 * math.pi, size=2))
        self.events: tuple[Event, ...] = tuple(self._make_events(rng))
        self._starts = [e.start for e in self.events]

    # ------------------------------------------------------------------ timeline
    @property
    def num_frames(self) -> int:
        """Frames in the stream: frame i is at stream time i / fps, for i/fps < seconds."""
        return max(1, int(math.ceil(self.seconds * self.fps - 1e-9)))

    def time(self, i: int) -> float:
        return i / self.fps

    def _make_events(self, rng: np.random.Generator) -> list[Event]:
        cfg = self.config
        combos: list[tuple[str, str]] = []
        events: list[Event] = []
        t = float(rng.uniform(*cfg.lead_in_seconds))
        while True:
            duration = float(rng.uniform(*cfg.event_seconds))
            if t + duration > self.seconds:
                break
            if not combos:  # a shuffled cycle over all colour×shape pairs: no repeats until all are used
                combos = [(c, s) for c in cfg.colours for s in cfg.shapes]
                order = rng.permutation(len(combos))
                combos = [combos[k] for k in order]
            colour, shape = combos.pop()
            radius = float(rng.uniform(*cfg.radius_fraction))
            lo, hi = radius + 0.02, 1.0 - radius - 0.02
            p0 = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
            p1 = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))) if rng.random() < cfg.moving_probability else p0
            events.append(Event(len(events), colour, shape, round(t, 3), round(t + duration, 3), p0, p1, radius))
            t += duration + float(rng.uniform(*cfg.gap_seconds))
        return events

    def active_event(self, t: float) -> Event | None:
        """The event in view at stream time t (at most one at a time), or None."""
        k = bisect.bisect_right(self._starts, t) - 1
        if k >= 0 and self.events[k].start <= t < self.events[k].end:
            return self.events[k]
        return None

    def events_before(self, t: float) -> tuple[Event, ...]:
        """Events that have ended by stream time t (fully seen)."""
        return tuple(e for e in self.events if e.end <= t)

    def in_gap(self, t: float, margin: float = 0.0) -> bool:
        """True when no object is in view within `margin` seconds of t."""
        return all(not (e.start - margin <= t < e.end + margin) for e in self.events)

    # ------------------------------------------------------------------ pixels
    def _offset(self, t: float) -> tuple[int, int]:
        periods, phases = self._drift
        amp = self._margin - 1
        dx = int(round(amp * math.sin(2 * math.pi * t / periods[0] + phases[0])))
        dy = int(round(amp * math.sin(2 * math.pi * t / periods[1] + phases[1])))
        return dx, dy

    def frame_at(self, t: float) -> np.ndarray:
        """The RGB frame ((size, size, 3) uint8) at stream time t."""
        dx, dy = self._offset(t)
        m = self._margin
        img = self._background[m + dy:m + dy + self.size, m + dx:m + dx + self.size].copy()
        event = self.active_event(t)
        if event is not None:
            x, y = event.position(t)
            draw_shape(img, event.shape, COLOURS[event.colour], x * self.size, y * self.size,
                       event.radius * self.size)
        return img

    def frame(self, i: int) -> np.ndarray:
        """Frame i ((size, size, 3) uint8, RGB), at stream time i / fps."""
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} outside 0..{self.num_frames - 1}")
        return self.frame_at(self.time(i))

    def iter_frames(self):
        """Yield (stream_seconds, frame) lazily for the whole stream."""
        for i in range(self.num_frames):
            yield self.time(i), self.frame(i)
