"""The synthetic world and its questions: deterministic, visible objects, answers that match the timeline."""
from __future__ import annotations

import re

import numpy as np
import pytest

from infinipot_eval.question_gen import ALL_KINDS, make_questions, window_seconds_for
from infinipot_eval.render import COLOURS
from infinipot_eval.world import World, WorldConfig


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=5, seconds=180, fps=4, size=56)


def test_same_seed_same_world_any_frame_order(world):
    other = World(seed=5, seconds=180, fps=4, size=56)
    assert other.events == world.events
    picks = [700, 3, 351, 0]
    for i in picks:  # reverse / random order must not matter: frames are pure functions of the index
        assert np.array_equal(other.frame(i), world.frame(i))
    assert world.frame(10).shape == (56, 56, 3) and world.frame(10).dtype == np.uint8
    different = World(seed=6, seconds=180, fps=4, size=56)
    assert different.events != world.events
    assert not np.array_equal(different.frame(0), world.frame(0))


def test_timeline_one_object_at_a_time(world):
    ev = world.events
    assert len(ev) >= 8
    assert all(a.end <= b.start for a, b in zip(ev, ev[1:]))
    assert all(0 < e.start < e.end <= world.seconds for e in ev)
    names = [e.name for e in ev]
    assert len(set(names)) == len(names)  # a shuffled cycle of colour × shape pairs: no early repeats
    with pytest.raises(IndexError):
        world.frame(world.num_frames)


def test_objects_visible_only_during_events(world):
    for e in world.events[:5]:
        mid = world.frame_at((e.start + e.end) / 2)
        colour = np.asarray(COLOURS[e.colour], dtype=np.uint8)
        hits = np.all(mid == colour, axis=-1).sum()
        assert hits >= 0.3 * (e.radius * world.size) ** 2, (e, hits)  # large enough to see at 56 px
        gap = world.frame_at(e.end + 0.1)
        for rgb in COLOURS.values():
            assert not np.all(gap == np.asarray(rgb, np.uint8), axis=-1).any()


def test_background_drifts_slowly():
    w = World(seed=1, seconds=120, fps=10, size=112, config=WorldConfig(lead_in_seconds=(200, 200)))
    assert w.events == ()  # no events at all: the background alone
    frames = [w.frame(i).astype(int) for i in range(0, 1200, 5)]
    steps = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    assert max(steps) < 6  # half a second changes little
    assert max(np.abs(f - frames[0]).mean() for f in frames) > 0.5  # but the camera does drift


def _past(world, t):
    return [e for e in world.events if e.end <= t]


def test_questions_match_the_timeline(world):
    qs = make_questions(world, window_seconds=8.0, per_checkpoint=2)
    assert qs == make_questions(world, window_seconds=8.0, per_checkpoint=2)
    assert {q.kind for q in qs} == set(ALL_KINDS)
    assert len({q.time for q in qs}) > 3 and min(q.time for q in qs) < world.seconds / 2
    yes = no = 0
    for q in qs:
        assert world.in_gap(q.time), q  # nothing half-visible when asked
        past = _past(world, q.time)
        if q.kind == "presence":
            name = re.fullmatch(r"Did you see an? (\w+ \w+)\?", q.question).group(1)
            expected = "yes" if name in {e.name for e in past} else "no"
            assert q.answers == (expected,)
            yes, no = yes + (expected == "yes"), no + (expected == "no")
        elif q.kind == "count" and q.question == "How many objects did you see?":
            assert q.answers[0] == str(len(past))
        elif q.kind == "count":
            shape = re.fullmatch(r"How many (\w+)s did you see\?", q.question).group(1)
            assert q.answers[0] == str(sum(e.shape == shape for e in past))
        elif q.kind == "when":  # about a pair seen exactly once: its one span is the evidence
            name = re.fullmatch(r"When did you see the (\w+ \w+)\?", q.question).group(1)
            (event,) = [e for e in past if e.name == name]
            assert q.evidence == ((event.start, event.end),)
        elif q.kind == "order":
            a, b = re.fullmatch(r"Which came first, the (\w+ \w+) or the (\w+ \w+)\?", q.question).groups()
            first = min((e for e in past if e.name in (a, b)), key=lambda e: e.start)
            assert q.answers[0] == first.name
        else:
            shape = re.search(r"the (?:most recent )?(\w+)\?$", q.question).group(1)
            assert q.answers == ([e for e in past if e.shape == shape][-1].colour,)
    assert abs(yes - no) <= 1


def test_range_tags_follow_the_window(world):
    for q in make_questions(world, window_seconds=8.0):
        oldest_end = min(end for _start, end in q.evidence) if q.kind in ("colour", "order", "when") else None
        if oldest_end is not None:
            assert ("long_range" in q.tags) == (q.time - oldest_end > 8.0), q
    assert all("recent" in q.tags for q in make_questions(world, window_seconds=1e9))
    assert all("long_range" in q.tags for q in make_questions(world, window_seconds=0.0))
    assert window_seconds_for(256, 16, 2.0) == 8.0


def test_max_questions_spreads_over_the_stream():
    w = World(seed=2, seconds=1200, fps=1, size=32)
    qs = make_questions(w, max_questions=10)
    assert len(qs) == 10
    assert qs[0].time < 100 and qs[-1].time > 900
