"""A multi-threaded executor that takes new work only when one of its threads is free.

Why not rclpy's `MultiThreadedExecutor` as is: it hands every ready callback to a thread pool at once. When
all threads are busy (here: /ask_video callbacks blocked while the model answers), a handed-over task waits
in the pool's queue, neither running nor done, and the executor's loop yields that same task again on
every pass without waiting on anything. That is a busy spin: measured here, it held the GIL and starved the
camera callbacks and the model worker, and under a 4-client load the node lost thousands of camera
messages and answered questions seconds late.

This executor keeps one permit per thread. It waits for a permit (a blocking wait, not a spin) before it
looks for ready work, and gives the permit back when the callback returns, so a task it hands over always
starts at once. The node also sizes its pool so that the callbacks that may block (bounded by the request
queue) can never take every thread: cameras and timers always find one.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)

__all__ = ["BoundedThreadsExecutor"]

#: how long one pass waits for a free thread before it returns to `spin` (which checks for shutdown)
_PERMIT_WAIT_S = 0.1


class BoundedThreadsExecutor(MultiThreadedExecutor):
    """`MultiThreadedExecutor` that never queues a callback behind busy threads (so it never busy-spins)."""

    def __init__(self, num_threads: int, context: Any = None) -> None:
        super().__init__(num_threads=num_threads, context=context)
        self._permits = threading.BoundedSemaphore(num_threads)
        # The override below relies on MultiThreadedExecutor's pool and future list (same names from Humble
        # to Kilted); on an rclpy without them it falls back to the stock behaviour instead of failing.
        self._gated = hasattr(self, "_executor") and isinstance(getattr(self, "_futures", None), list)

    def _run_and_release(self, handler: Callable[[], None]) -> None:
        try:
            handler()
        finally:
            self._permits.release()

    def _spin_once_impl(self, timeout_sec: Any = None, wait_condition: Callable[[], bool] = lambda: False) -> None:
        if not self._gated:
            super()._spin_once_impl(timeout_sec, wait_condition)
            return
        timed = isinstance(timeout_sec, (int, float)) and timeout_sec >= 0  # None, a TimeoutObject: not a number
        wait = min(float(timeout_sec), _PERMIT_WAIT_S) if timed else _PERMIT_WAIT_S
        if not self._permits.acquire(timeout=wait):
            return  # every thread busy: come back after a blocking wait, never a spin
        try:
            handler, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            self._permits.release()
            return
        except BaseException:
            self._permits.release()
            raise
        try:
            self._executor.submit(self._run_and_release, handler)
        except RuntimeError:  # the pool is shut down (executor shutdown in progress)
            self._permits.release()
            return
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # re-raise a callback's exception, as MultiThreadedExecutor does
