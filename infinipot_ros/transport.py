"""Frames lost between a camera's publisher and the node, counted from the publishers' sequence numbers.

Why: on the sensor-data QoS (best effort) a frame the node did not take in time is overwritten or dropped
in transport, and nothing the node receives says so; `frames_received` only falls behind a rate nobody
knows. Every DDS writer numbers its samples (1, 2, 3, ...), and rclpy hands that number to a subscription
callback that takes a second argument (`rclpy.subscription.MessageInfo`: `publication_sequence_number`,
`publisher_gid`). A jump from n to n + k means k - 1 samples of that publisher never reached the callback.

Counted per publisher (a camera topic may have several, and a restarted driver is a new writer with its
own numbering). Messages a publisher sent before the node's first message from it are not counted (they
were not meant for this subscription), nor are losses after its last received one (unknowable until the
next). Bounded: at most `max_publishers` writers are remembered (least recently heard forgotten first).
No rclpy import: the node passes what rclpy gives it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

__all__ = ["TransportLossCounter"]


class TransportLossCounter:
    """Counts sequence-number gaps per publisher of one topic."""

    def __init__(self, max_publishers: int = 64) -> None:
        if max_publishers < 1:
            raise ValueError(f"max_publishers must be >= 1, got {max_publishers}")
        self._max = max_publishers
        self._last: OrderedDict[bytes, int] = OrderedDict()
        #: samples the publishers sent that never reached the node (gaps in their sequence numbers)
        self.lost = 0
        #: messages that came without a usable sequence number (an rmw that does not report it)
        self.unnumbered = 0

    def observe(self, info: Mapping[str, Any] | None) -> int:
        """Record one received message's info; returns how many samples were lost just before it."""
        seq = None if info is None else info.get("publication_sequence_number")
        gid = None if info is None else info.get("publisher_gid")
        if not isinstance(seq, int) or seq <= 0:
            self.unnumbered += 1
            return 0
        key = bytes(gid.get("data", b"")) if isinstance(gid, Mapping) else b""
        last = self._last.get(key)
        self._last[key] = max(seq, last or 0)
        self._last.move_to_end(key)
        if len(self._last) > self._max:
            self._last.popitem(last=False)
        if last is None or seq <= last:  # first message of this writer, or a late duplicate
            return 0
        gap = seq - last - 1
        self.lost += gap
        return gap
