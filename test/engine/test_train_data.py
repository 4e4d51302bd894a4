"""Training data: hard presence negatives, a fixed stage mix, and a stream that resumes exactly."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from infinipot_train.train_data import STAGES, ExampleStream, add_shape_questions, focus_older_colour, harden_presence
from infinipot_eval.question_gen import make_questions
from infinipot_eval.world import World


def _world_with_events(min_events: int) -> World:
    for seed in range(1_000_000, 1_000_200):
        world = World(seed=seed, seconds=40.0, fps=10.0, size=56, config=STAGES[1].config)
        if len(world.events) >= min_events:
            return world
    raise AssertionError("no world with enough events")


def test_hard_negatives_share_a_colour_or_a_shape_with_a_seen_object() -> None:
    world = _world_with_events(3)
    questions = make_questions(world, kinds=("presence",), per_checkpoint=2)
    hardened = harden_presence(world, questions, np.random.default_rng(0), share=1.0)
    assert len(hardened) == len(questions)
    rewritten = 0
    halves: set[str] = set()
    for before, after in zip(questions, hardened):
        assert after.answers == before.answers and after.time == before.time
        if before.answers[0] == "yes":
            assert after == before
            continue
        past = world.events_before(after.time)
        words = after.question.rstrip("?").split()
        colour, shape = words[-2], words[-1]
        assert f"{colour} {shape}" not in {e.name for e in past}, "a hard negative must still be a 'no'"
        if after != before:
            rewritten += 1
            seen_colour, seen_shape = colour in {e.colour for e in past}, shape in {e.shape for e in past}
            assert seen_colour or seen_shape
            halves.update(name for name, hit in (("colour", seen_colour), ("shape", seen_shape)) if hit)
            assert "hard_negative" in after.tags
    assert rewritten > 0
    assert halves == {"colour", "shape"}, "both kinds of partial match must occur"


def test_share_zero_leaves_questions_alone() -> None:
    world = _world_with_events(2)
    questions = make_questions(world, per_checkpoint=2)
    assert harden_presence(world, questions, np.random.default_rng(1), share=0.0) == questions


def test_fixed_weights_override_the_curriculum() -> None:
    stream = ExampleStream(4, fixed_weights=[0, 0, 1])
    stages = Counter(e.stage for e in stream.take(30, progress=0.0))
    assert set(stages) == {"long"}, stages  # the curriculum would give only "single" at progress 0
    with pytest.raises(ValueError):
        ExampleStream(4, fixed_weights=[1, 1])


def test_stream_resumes_with_the_same_examples() -> None:
    first = ExampleStream(9, hard_negative_share=0.5)
    first.take(10, progress=0.5)
    state = first.state()
    expected = [(e.question, e.answer, len(e.frames)) for e in first.take(10, progress=0.5)]
    second = ExampleStream(0, hard_negative_share=0.5)
    second.restore(state)
    assert [(e.question, e.answer, len(e.frames)) for e in second.take(10, progress=0.5)] == expected


def test_shape_questions_name_the_shape_of_a_uniquely_coloured_past_event() -> None:
    world = _world_with_events(3)
    questions = make_questions(world, kinds=("colour",), per_checkpoint=1)
    added = add_shape_questions(world, questions, np.random.default_rng(2), share=1.0)
    shape_qs = [q for q in added if q.kind == "shape"]
    assert shape_qs and len(added) == len(questions) + len(shape_qs)
    assert [q.time for q in added] == sorted(q.time for q in added)
    for q in shape_qs:
        colour = q.question.split()[-2]
        past = [e for e in world.events_before(q.time) if e.colour == colour]
        assert len(past) == 1 and q.answers == (past[0].shape,)
    assert add_shape_questions(world, questions, np.random.default_rng(2), share=0.0) == questions


def test_vision_aux_frames_show_the_labelled_object() -> None:
    from infinipot_train.vision_aux import COLOUR_NAMES, object_frames
    from infinipot_eval.render import COLOURS

    frames, shapes, colours = object_frames(np.random.default_rng(3), 6)
    assert len(frames) == 12 and shapes.shape == colours.shape == (6,)
    for k in range(6):
        rgb = np.array(COLOURS[COLOUR_NAMES[int(colours[k])]], dtype=np.uint8)
        for frame in frames[2 * k:2 * k + 2]:
            assert (frame == rgb).all(axis=-1).sum() > 20, "the labelled colour is drawn in both frames"


def test_vision_aux_head_learns_shapes_on_a_fixed_batch() -> None:
    """The loss reaches the vision tower: a few steps on one batch lower it (the training aid works)."""
    import torch

    from infinipot.adapters.loading import load_adapter
    from infinipot_train.vision_aux import VisionAuxHead, object_frames

    adapter = load_adapter("builtin:tiny-qwen2-vl")
    frames, shapes, colours = object_frames(np.random.default_rng(4), 8, adapter.frames_per_step)
    head = VisionAuxHead(adapter.model.config.text_config.hidden_size)
    params = list(head.parameters()) + list(adapter.model.model.visual.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    first = None
    for _ in range(30):
        loss, _shape_acc, _colour_acc = head.loss(adapter, frames, shapes, colours)
        first = float(loss) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.5 * first


def test_linear_probe_reads_colour_from_a_random_tower() -> None:
    """Colour is nearly linear in the pixels, so even an untrained tower's tokens carry it; the probe must
    find that (the diagnostic that showed the trained tower carries colour but not shape)."""
    from infinipot.adapters.loading import load_adapter
    from infinipot_train.vision_aux import probe_accuracy

    scores = probe_accuracy(load_adapter("builtin:tiny-qwen2-vl"), count=160, steps=200)
    assert set(scores) == {"shape", "colour"}
    assert scores["colour"] > 0.3, scores  # chance is 0.125


def test_older_colour_questions_ask_about_a_shape_other_than_the_latest_one() -> None:
    world = _world_with_events(4)
    questions = make_questions(world, kinds=("colour",), per_checkpoint=1)
    focused = focus_older_colour(world, questions, np.random.default_rng(3), share=1.0)
    assert len(focused) == len(questions)
    re_aimed = 0
    for before, after in zip(questions, focused):
        past = world.events_before(after.time)
        shape = after.question.rstrip("?").split()[-1]
        same = [e for e in past if e.shape == shape]
        assert same and after.answers == (same[-1].colour,), "the answer must be that shape's latest colour"
        assert ("most recent" in after.question) == (len(same) > 1)
        if len({e.shape for e in past}) >= 2:
            assert shape != past[-1].shape, "with two shapes seen, the latest object's shape is never asked"
            assert "older" in after.tags
            re_aimed += 1
        else:
            assert after == before
    assert re_aimed > 0
    assert focus_older_colour(world, questions, np.random.default_rng(3), share=0.0) == questions
