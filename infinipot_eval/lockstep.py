"""What the live driver knows about the node, from its `~/cache_stats` and `/diagnostics`, and waits on it.

Why a class of its own: lockstep replay (live.py) must know *exactly* when the node has taken every frame
it was sent, without any hook inside the node. The node publishes cumulative counters; the driver knows
how many messages it published and, by running the node's own sampling steps (`replay.NodeFrameSteps`), how
many frames the node must have sampled. "Caught up" is then an equality of counts, checked here:

- `frames_received == published`: every message arrived (the link is best effort);
- `frames_sampled == expected`: the node sampled exactly the frames the offline replay samples;
- `queue_depth == 0`: the worker has taken every sampled frame off its queue. The worker serves one item at
  a time, so a question sent now is answered after the last frame was added to the memory, never before.
- no frame lost: `frames_dropped + frames_rejected` minus the frames the sampler skipped
  (`frames_received - frames_sampled`) counts queue drops, frames discarded before the model was ready,
  and frames the engine refused; it must stay 0.

The stats timer reads the queue depth before the counters, so a message can show depth 0 while the last
frame's callback is between `sampled += 1` and its push. Requiring two consecutive stats messages that
both show the caught-up state closes that window (the push is the callback's next statement; the next
message comes a stats period later).

ROS-free on purpose (any object with the message's fields will do), so the rules are unit-tested without
a node.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["LockstepError", "NodeCounters", "NodeMonitor"]


class LockstepError(RuntimeError):
    """The node lost or mis-sampled frames, or did not catch up in time: live ≠ offline would follow."""


@dataclass(frozen=True)
class NodeCounters:
    """The frame counters of one `CacheStats` message, numbered in order of arrival (`seq`)."""

    seq: int
    received: int
    sampled: int
    ingested: int  # frames encoded into the cache (a block of frames_per_step at a time)
    dropped: int
    rejected: int
    queue_depth: int
    queue_capacity: int

    @property
    def lost(self) -> int:
        """Frames that reached the node but not the memory for another reason than sampling."""
        return self.dropped + self.rejected - (self.received - self.sampled)

    def describe(self) -> str:
        return (f"received {self.received}, sampled {self.sampled}, ingested {self.ingested}, dropped "
                f"{self.dropped}, rejected {self.rejected}, queue {self.queue_depth}/{self.queue_capacity}")


class NodeMonitor:
    """Latest counters of one camera (from ~/cache_stats) and the worker's state (from /diagnostics)."""

    def __init__(self, camera: str | None = None) -> None:
        """`camera`: the node's camera name to follow; None = the first camera that reports."""
        self.camera = camera
        self._cond = threading.Condition()
        self._seq = 0
        self._counters: NodeCounters | None = None
        self._prev: NodeCounters | None = None
        self._worker: dict[str, str] = {}
        self._worker_seq = 0

    # ----- subscription callbacks (executor threads) -------------------------------------------------
    def on_stats(self, msg: Any) -> None:
        if self.camera is None:
            self.camera = msg.camera
        if msg.camera != self.camera:
            return
        with self._cond:
            self._seq += 1
            self._prev = self._counters
            self._counters = NodeCounters(
                self._seq, int(msg.frames_received), int(msg.frames_sampled), int(msg.frames_ingested),
                int(msg.frames_dropped), int(msg.frames_rejected), int(msg.queue_depth), int(msg.queue_capacity))
            self._cond.notify_all()

    def on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.name == "infinipot: worker":
                with self._cond:
                    self._worker = {kv.key: kv.value for kv in status.values}
                    self._worker_seq += 1
                    self._cond.notify_all()

    # ----- reads ----------------------------------------------------------------------------------
    @property
    def counters(self) -> NodeCounters | None:
        with self._cond:
            return self._counters

    @property
    def worker(self) -> dict[str, str]:
        """The worker's last diagnostic values (state, busy_s, requests_answered, ...), as strings."""
        with self._cond:
            return dict(self._worker)

    # ----- waits ----------------------------------------------------------------------------------
    def _wait(self, check: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """Wait until `check()` (called under the lock) returns something truthy; raise on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                value = check()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    now = self._counters.describe() if self._counters else "no cache_stats yet"
                    raise LockstepError(f"timed out after {timeout_s:g}s waiting for {what} ({now})")
                self._cond.wait(min(left, 0.5))

    def wait_ready(self, timeout_s: float) -> None:
        """Until the worker reports state `ready` (frames sent earlier would be discarded) and stats flow."""
        def check() -> bool:
            state = self._worker.get("state")
            if state in ("error", "stopped"):
                raise LockstepError(f"the node's model worker is {state}: {self._worker.get('last_error', '')}")
            return state == "ready" and self._counters is not None

        self._wait(check, timeout_s, "the node's model to be ready")

    def wait_next_worker(self, timeout_s: float) -> dict[str, str]:
        """The worker's diagnostic values from a /diagnostics message that arrives after this call."""
        with self._cond:
            seq = self._worker_seq
        return self._wait(lambda: self._worker_seq > seq and dict(self._worker), timeout_s, "/diagnostics")

    def _check_sane(self, c: NodeCounters, published: int, expected: int) -> None:
        if c.lost > 0:
            raise LockstepError(f"the node lost {c.lost} frame(s) (queue drop, not ready or refused): "
                                f"{c.describe()}")
        if c.sampled > expected or c.received > published:
            raise LockstepError(f"the node saw more than was sent: published {published}, expected sampled "
                                f"{expected}; node: {c.describe()}")

    def wait_room(self, published: int, expected: int, timeout_s: float, in_flight: int = 4) -> NodeCounters:
        """Before publishing more: at most `in_flight` messages not yet received (the node's best-effort
        subscription keeps 5) and every sampled frame, `expected` counting the next one, fits in the queue."""
        def check() -> NodeCounters | None:
            c = self._counters
            if c is None:
                return None
            self._check_sane(c, published, expected)
            room = expected - c.ingested <= max(c.queue_capacity, 1)
            return c if room and published - c.received < in_flight else None

        return self._wait(check, timeout_s, f"room for message {published + 1} (expected sampled {expected})")

    def wait_caught_up(self, published: int, expected: int, timeout_s: float) -> NodeCounters:
        """Until two consecutive stats messages show every published message received, exactly `expected`
        frames sampled and none left in the queue (see the module docstring)."""
        def done(c: NodeCounters | None) -> bool:
            return (c is not None and c.received == published and c.sampled == expected
                    and c.queue_depth == 0)

        def check() -> NodeCounters | None:
            c = self._counters
            if c is None:
                return None
            self._check_sane(c, published, expected)
            return c if done(c) and done(self._prev) else None

        return self._wait(check, timeout_s, f"the node to take all {published} messages "
                                            f"({expected} sampled frames)")
