"""ROS-free parts: the stamp-based sampler and the bounded latest-wins queues."""
from __future__ import annotations

import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from infinipot_ros.frame_queue import LatestWinsQueue, RequestQueue, WorkQueues
from infinipot.sampling import FrameSampler


def kept(sampler: FrameSampler, stamps: list[float]) -> list[float]:
    return [t for t in stamps if sampler.decide(t).keep]


def test_first_frame_kept_then_one_per_period() -> None:
    stamps = [i / 30 for i in range(90)]  # 3 s of a 30 fps camera
    got = kept(FrameSampler(2.0), stamps)
    assert got[0] == 0.0
    assert len(got) == 6  # 0, 0.5, 1.0, 1.5, 2.0, 2.5
    assert all(abs(b - a - 0.5) < 0.05 for a, b in zip(got, got[1:]))


def test_rate_zero_keeps_everything() -> None:
    stamps = [0.0, 0.0, 0.001, 0.002, 5.0]
    assert kept(FrameSampler(0.0), stamps) == stamps


def test_jitter_does_not_skip_slots() -> None:
    # A 2 Hz camera sampled at 2 Hz with +-20 ms jitter: every frame is kept.
    stamps = [0.0, 0.51, 0.98, 1.52, 1.99, 2.49, 3.02]
    assert kept(FrameSampler(2.0), stamps) == stamps


def test_no_drift_over_long_runs() -> None:
    # 29.97 fps for 100 s at 1 Hz: about 100 frames, not 97 or 103.
    stamps = [i / 29.97 for i in range(2997)]
    assert 99 <= len(kept(FrameSampler(1.0), stamps)) <= 101
    # 15 fps at 2 Hz: every other slot has no frame on it and takes one 33 ms late; the grid must hold.
    assert 199 <= len(kept(FrameSampler(2.0), [i / 15 for i in range(1500)])) <= 201


def test_gap_restarts_grid() -> None:
    s = FrameSampler(1.0)
    assert kept(s, [0.0, 10.0, 10.5, 11.0, 11.2]) == [0.0, 10.0, 11.0]


def test_backwards_stamps_restart_and_are_counted() -> None:
    s = FrameSampler(1.0)
    assert kept(s, [100.0, 100.5, 101.0]) == [100.0, 101.0]
    d = s.decide(0.0)  # bag loop
    assert d.keep and d.restarted and s.restarts == 1
    assert kept(s, [0.5, 1.0]) == [1.0]


def test_a_little_earlier_is_out_of_order_not_a_restart() -> None:
    s = FrameSampler(0.0)  # keep every frame
    assert kept(s, [100.0, 100.5]) == [100.0, 100.5]
    d = s.decide(100.45)  # 50 ms before the newest: jitter or reordering
    assert not d.keep and d.out_of_order and not d.restarted
    assert (s.out_of_order, s.restarts) == (1, 0)
    assert kept(s, [100.49, 100.6]) == [100.6]  # the newest stamp stays the reference
    d = s.decide(100.6 - 1.5)  # a real jump back (more than stamp_restart_s = 1 s)
    assert d.keep and d.restarted and s.restarts == 1


def test_stamp_restart_s_sets_where_a_jump_back_restarts() -> None:
    eager = FrameSampler(0.0, stamp_restart_s=0.0)  # any backwards stamp restarts
    eager.decide(10.0)
    assert eager.decide(9.99).restarted
    never = FrameSampler(0.0, stamp_restart_s=1e9)  # never restarts: dropped until the stamps pass 10.0
    assert kept(never, [10.0, 0.0, 5.0, 10.0, 11.0]) == [10.0, 10.0, 11.0]
    assert (never.out_of_order, never.restarts) == (2, 0)
    never.stamp_restart_s = 2.0  # runtime change
    assert never.decide(8.5).restarted
    with pytest.raises(ValueError):
        FrameSampler(1.0, stamp_restart_s=-1.0)


def test_peek_does_not_change_state() -> None:
    s = FrameSampler(1.0)
    s.decide(0.0)
    assert s.peek(1.0).keep and s.peek(1.0).keep
    assert not s.peek(0.5).keep
    assert s.seen == 1 and s.kept == 1


def test_invalid_rate() -> None:
    with pytest.raises(ValueError):
        FrameSampler(-1.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=200),
       st.floats(min_value=0.1, max_value=30))
@example(stamps=[0.0, 2.0, 2.0], rate=0.984375)  # found by hypothesis: a late frame, then its duplicate
def test_kept_frames_never_closer_than_grid_allows(stamps: list[float], rate: float) -> None:
    """Early by up to the jitter allowance (5 %) counts for a slot, more than half a period late restarts the
    grid: kept frames are at least 45 % of a period apart, and a duplicate stamp is never kept twice."""
    stamps = sorted(stamps)
    got = kept(FrameSampler(rate), stamps)
    assert got[0] == stamps[0]
    period = 1 / rate
    assert all(b - a >= 0.45 * period - 1e-9 for a, b in zip(got, got[1:]))


# ----- queues -------------------------------------------------------------------------------------

def test_latest_wins_drops_oldest_and_counts() -> None:
    q: LatestWinsQueue[int] = LatestWinsQueue(3)
    dropped = [q.push("cam", i) for i in range(10)]
    assert dropped == [None, None, None, 0, 1, 2, 3, 4, 5, 6]
    st_ = q.stats("cam")
    assert (st_.depth, st_.pushed, st_.dropped, st_.max_depth_seen) == (3, 10, 7, 3)
    assert [q.pop_nowait()[1] for _ in range(3)] == [7, 8, 9]
    assert q.pop_nowait() is None


def test_round_robin_between_cameras() -> None:
    q: LatestWinsQueue[int] = LatestWinsQueue(4)
    for i in range(4):
        q.push("a", i)
    q.push("b", 100)
    order = [q.pop_nowait() for _ in range(3)]
    assert ("b", 100) in order[:2]


def test_request_queue_refuses_when_full() -> None:
    q: RequestQueue[int] = RequestQueue(2)
    assert q.push(1) and q.push(2) and not q.push(3)
    assert q.refused == 1 and len(q) == 2


def test_requests_served_before_frames() -> None:
    w: WorkQueues = WorkQueues(frame_capacity=2, request_capacity=2)
    w.frames.push("cam", "f1")
    w.requests.push("r1")
    w.frames.push("cam", "f2")
    assert w.get(0.1) == ("request", "r1")
    assert w.get(0.1) == ("frame", ("cam", "f1"))
    w.close()
    assert w.get(0.1) is None


def test_concurrent_producers_stay_bounded() -> None:
    w: WorkQueues = WorkQueues(frame_capacity=4)
    depth_violations = []

    def produce(cam: str) -> None:
        for i in range(2000):
            w.frames.push(cam, i)
            if w.frames.stats(cam).depth > 4:
                depth_violations.append(cam)

    threads = [threading.Thread(target=produce, args=(c,)) for c in ("a", "b")]
    consumed = 0
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) or len(w.frames):
        if w.get(0.01):
            consumed += 1
    for t in threads:
        t.join()
    total = w.frames.stats()
    assert not depth_violations and total.max_depth_seen <= 4
    assert total.pushed == 4000 and consumed + total.dropped == 4000
