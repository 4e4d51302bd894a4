"""Frame sampling by stream time, without ROS.

Why header stamps and not arrival time: a model cannot ingest 30 fps, so the node keeps `rate_hz` frames
per second of *what the camera saw*. Using the stamps makes the choice the same live, when a bag is replayed
faster than real time, and in the offline evaluation (which reuses this class), and unaffected by transport
delays or executor scheduling.

The kept frames sit on a fixed grid anchored at the first kept frame (``t0, t0 + 1/rate, ...``) so the mean
rate is exact over long runs and does not drift; a frame up to `jitter_fraction` of a period early still
counts for its slot (camera stamps jitter). A kept frame more than half a period late for its slot (after a
gap) restarts the grid there, so kept frames are never closer than (0.5 - jitter_fraction) periods. A stamp that goes backwards (a looped bag, a restarted driver, sim time reset) restarts the sampler;
the decision reports it so the caller can start a fresh stream (the engine requires non-decreasing stamps).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameSampler", "SampleDecision"]


@dataclass(frozen=True)
class SampleDecision:
    """What to do with one frame."""

    keep: bool
    #: The stamp went backwards: the stream restarted (the sampler reset itself; this frame is kept).
    restarted: bool = False


class FrameSampler:
    """Keeps the first frame, then one frame per ``1 / rate_hz`` seconds of stream time.

    `rate_hz` = 0 keeps every frame (still reporting restarts). Not thread-safe: use one per camera from one
    callback (or guard it).
    """

    def __init__(self, rate_hz: float, jitter_fraction: float = 0.05) -> None:
        if rate_hz < 0:
            raise ValueError(f"rate_hz must be >= 0, got {rate_hz}")
        if not 0.0 <= jitter_fraction < 1.0:
            raise ValueError(f"jitter_fraction must be in [0, 1), got {jitter_fraction}")
        self._rate_hz = float(rate_hz)
        self._jitter_fraction = float(jitter_fraction)
        self._next_due: float | None = None
        self._last_stamp: float | None = None
        self.seen = 0
        self.kept = 0
        self.restarts = 0

    @property
    def rate_hz(self) -> float:
        return self._rate_hz

    @rate_hz.setter
    def rate_hz(self, value: float) -> None:
        """Change the rate; the next frame starts a new grid (no burst, no long pause)."""
        if value < 0:
            raise ValueError(f"rate_hz must be >= 0, got {value}")
        self._rate_hz = float(value)
        self._next_due = None if self._last_stamp is None else self._last_stamp

    @property
    def period_s(self) -> float:
        return 0.0 if self._rate_hz == 0 else 1.0 / self._rate_hz

    def reset(self) -> None:
        """Forget the stream: the next frame is kept as a first frame."""
        self._next_due = None
        self._last_stamp = None

    def peek(self, stamp: float) -> SampleDecision:
        """What `decide` would say, without changing any state.

        Lets the caller convert a frame the sampler would keep before committing to it, so a malformed
        frame does not use up a sampling slot (`commit` afterwards, or never for a rejected frame).
        """
        if self._last_stamp is not None and stamp < self._last_stamp:
            return SampleDecision(keep=True, restarted=True)
        period = self.period_s
        keep = (
            self._next_due is None
            or period == 0.0
            or stamp >= self._next_due - self._jitter_fraction * period
        )
        return SampleDecision(keep=keep)

    def commit(self, stamp: float, decision: SampleDecision) -> None:
        """Record a frame decided by `peek`."""
        self.seen += 1
        if decision.restarted:
            self.restarts += 1
            self.reset()
        self._last_stamp = stamp
        if not decision.keep:
            return
        self.kept += 1
        period = self.period_s
        if self._next_due is None or period == 0.0:
            self._next_due = stamp + period
        else:
            slot = self._next_due
            self._next_due += period
            # Closer to the next slot than to its own (a gap in the stream): restart the grid at this frame.
            # Continuing the old grid would let the next slot come almost at once (a duplicate stamp was
            # kept twice); the usual lateness, up to one camera frame interval, keeps the grid, so the mean
            # rate does not drift (a 15 fps camera sampled at 2 Hz is late by 33 ms at every other slot).
            if stamp - slot > 0.5 * period:
                self._next_due = stamp + period

    def decide(self, stamp: float) -> SampleDecision:
        """Decide for a frame with header stamp `stamp` (seconds) and record it."""
        decision = self.peek(stamp)
        self.commit(stamp, decision)
        return decision
