"""Frame sampling by stream time, without ROS.

Why header stamps and not arrival time: a model cannot ingest 30 fps, so the node keeps `rate_hz` frames
per second of *what the camera saw*. Using the stamps makes the choice the same live, when a bag is replayed
faster than real time, and in the offline evaluation (which reuses this class), and unaffected by transport
delays or executor scheduling.

The kept frames sit on a fixed grid anchored at the first kept frame (``t0, t0 + 1/rate, ...``) so the mean
rate is exact over long runs and does not drift; a frame up to `jitter_fraction` of a period early still
counts for its slot (camera stamps jitter). A kept frame more than half a period late for its slot (after a
gap) restarts the grid there, so kept frames are never closer than (0.5 - jitter_fraction) periods.

Stamps that go backwards: a frame at most `stamp_restart_s` earlier than the newest one seen (jitter, two
publishers' frames reordered in transport) is dropped and counted as out of order; the stream and its memory
go on. Only a bigger jump back (a looped bag, a restarted driver, sim time reset) restarts the sampler, and
the decision reports it so the caller can start a fresh stream (the engine requires non-decreasing stamps).
`stamp_restart_s` = 0 restarts on any backwards stamp; a huge value never restarts (frames are dropped
until the stamps pass the newest one again).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameSampler", "SampleDecision", "STAMP_RESTART_S"]

#: Default of `stamp_restart_s` (and of the node parameter): a jump back by more than this many seconds
#: restarts the stream. Jitter and reordering are a few frame intervals (tens of ms); a looped bag or a sim
#: time reset jumps back by seconds or more.
STAMP_RESTART_S = 1.0


@dataclass(frozen=True)
class SampleDecision:
    """What to do with one frame."""

    keep: bool
    #: The stamp jumped back by more than `stamp_restart_s`: the stream restarted (the sampler reset
    #: itself; this frame is kept).
    restarted: bool = False
    #: The stamp is earlier than the newest one, by at most `stamp_restart_s`: dropped (keep is False).
    out_of_order: bool = False


class FrameSampler:
    """Keeps the first frame, then one frame per ``1 / rate_hz`` seconds of stream time.

    `rate_hz` = 0 keeps every frame (still reporting restarts). Not thread-safe: use one per camera from one
    callback (or guard it).
    """

    def __init__(self, rate_hz: float, jitter_fraction: float = 0.05,
                 stamp_restart_s: float = STAMP_RESTART_S) -> None:
        if rate_hz < 0:
            raise ValueError(f"rate_hz must be >= 0, got {rate_hz}")
        if not 0.0 <= jitter_fraction < 1.0:
            raise ValueError(f"jitter_fraction must be in [0, 1), got {jitter_fraction}")
        self.stamp_restart_s = stamp_restart_s
        self._rate_hz = float(rate_hz)
        self._jitter_fraction = float(jitter_fraction)
        self._next_due: float | None = None
        self._last_stamp: float | None = None
        self.seen = 0
        self.kept = 0
        self.restarts = 0
        self.out_of_order = 0

    @property
    def stamp_restart_s(self) -> float:
        return self._stamp_restart_s

    @stamp_restart_s.setter
    def stamp_restart_s(self, value: float) -> None:
        """How far back (seconds) a stamp must jump to restart the stream; less is out of order."""
        if not value >= 0:
            raise ValueError(f"stamp_restart_s must be >= 0, got {value}")
        self._stamp_restart_s = float(value)

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
            if self._last_stamp - stamp > self._stamp_restart_s:
                return SampleDecision(keep=True, restarted=True)
            return SampleDecision(keep=False, out_of_order=True)
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
        if decision.out_of_order:  # dropped; the newest stamp stays the reference
            self.out_of_order += 1
            return
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
