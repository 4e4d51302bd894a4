"""Bounded hand-over queues between the ROS callbacks and the single model worker, without ROS.

Why latest-wins: the model ingests frames far slower than cameras publish. An unbounded queue would grow
memory and latency without limit, and a queue that rejects new frames would answer questions about the
past. So each camera gets a small deque; pushing into a full one drops the *oldest* frame and counts it.

Why requests are separate: a question must not wait behind a backlog of frames. The worker always takes a
pending request first (`WorkQueues.get`). The request queue is bounded too, but it refuses *new* requests
when full (their callers are told so at once) rather than dropping a request somebody already waits for.

Both queues share one condition variable so the worker sleeps on a single wait.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

__all__ = ["LatestWinsQueue", "QueueStats", "RequestQueue", "WorkQueues"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class QueueStats:
    """Counters of one key of a `LatestWinsQueue` (or of all keys together)."""

    depth: int
    capacity: int
    pushed: int
    dropped: int
    max_depth_seen: int


class LatestWinsQueue(Generic[T]):
    """A deque per key (camera), each bounded by `capacity`; full → the oldest item is dropped.

    `pop` serves keys round-robin so one fast camera cannot starve another.
    """

    def __init__(self, capacity: int = 4, condition: threading.Condition | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._cond = condition or threading.Condition()
        self._items: dict[Hashable, deque[T]] = {}
        self._order: deque[Hashable] = deque()  # round-robin order of keys
        self._pushed: dict[Hashable, int] = {}
        self._dropped: dict[Hashable, int] = {}
        self._max_depth: dict[Hashable, int] = {}

    @property
    def capacity(self) -> int:
        return self._capacity

    def _ensure(self, key: Hashable) -> deque[T]:
        if key not in self._items:
            self._items[key] = deque()
            self._order.append(key)
            self._pushed[key] = self._dropped[key] = self._max_depth[key] = 0
        return self._items[key]

    def push(self, key: Hashable, item: T) -> T | None:
        """Append `item` for `key`; returns the dropped oldest item when the key's deque was full."""
        with self._cond:
            items = self._ensure(key)
            dropped = None
            if len(items) >= self._capacity:
                dropped = items.popleft()
                self._dropped[key] += 1
            items.append(item)
            self._pushed[key] += 1
            self._max_depth[key] = max(self._max_depth[key], len(items))
            self._cond.notify_all()
            return dropped

    def pop_nowait(self) -> tuple[Hashable, T] | None:
        """The oldest item of the next non-empty key (round-robin), or None. Caller may hold the lock."""
        with self._cond:
            for _ in range(len(self._order)):
                key = self._order[0]
                self._order.rotate(-1)
                if self._items[key]:
                    return key, self._items[key].popleft()
            return None

    def clear(self, key: Hashable | None = None) -> int:
        """Discard queued items (of one key or all); returns how many. Not counted as drops."""
        with self._cond:
            keys = list(self._items) if key is None else [key] if key in self._items else []
            n = 0
            for k in keys:
                n += len(self._items[k])
                self._items[k].clear()
            return n

    def __len__(self) -> int:
        with self._cond:
            return sum(len(d) for d in self._items.values())

    def stats(self, key: Hashable | None = None) -> QueueStats:
        """Counters of one key, or summed over keys (max depth: the largest of any key)."""
        with self._cond:
            keys = list(self._items) if key is None else [key] if key in self._items else []
            return QueueStats(
                depth=sum(len(self._items[k]) for k in keys),
                capacity=self._capacity,
                pushed=sum(self._pushed[k] for k in keys),
                dropped=sum(self._dropped[k] for k in keys),
                max_depth_seen=max((self._max_depth[k] for k in keys), default=0),
            )


class RequestQueue(Generic[R]):
    """A bounded FIFO that refuses new items when full (callers already waiting are never dropped)."""

    def __init__(self, capacity: int = 8, condition: threading.Condition | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._cond = condition or threading.Condition()
        self._items: deque[R] = deque()
        self.refused = 0
        self.max_depth_seen = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def push(self, item: R) -> bool:
        """Enqueue; False (and counted) when full."""
        with self._cond:
            if len(self._items) >= self._capacity:
                self.refused += 1
                return False
            self._items.append(item)
            self.max_depth_seen = max(self.max_depth_seen, len(self._items))
            self._cond.notify_all()
            return True

    def pop_nowait(self) -> R | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def drain(self) -> list[R]:
        """Remove and return everything queued (used at shutdown to answer waiting callers)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class WorkQueues(Generic[R, T]):
    """The worker's two inputs on one condition: requests are always served before frames."""

    def __init__(self, frame_capacity: int = 4, request_capacity: int = 8) -> None:
        self._cond = threading.Condition()
        self.requests: RequestQueue[R] = RequestQueue(request_capacity, self._cond)
        self.frames: LatestWinsQueue[T] = LatestWinsQueue(frame_capacity, self._cond)
        self._closed = False

    def close(self) -> None:
        """Wake the worker for shutdown; `get` returns None from now on once the requests are drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> tuple[str, object] | None:
        """Next work item: ``("request", r)`` before ``("frame", (key, frame))``; None on timeout/close."""
        with self._cond:
            while True:
                request = self.requests.pop_nowait()
                if request is not None:
                    return "request", request
                if self._closed:
                    return None
                frame = self.frames.pop_nowait()
                if frame is not None:
                    return "frame", frame
                if not self._cond.wait(timeout):
                    return None
