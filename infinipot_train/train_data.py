"""Training examples for the built-in model: synthetic worlds, sampled like the node, with exact answers.

Why this module: the trained model must see at training time exactly what it sees in the node. So a clip
is a `infinipot_eval.world.World` rendered at the camera's fps, thinned by the node's own stamp sampler
(`infinipot.sampling.FrameSampler`, 2 Hz by default), cut at the moment a question is asked (every
frame with stamp <= ask time, as the offline replay does) and trimmed to whole temporal frames (the session
leaves an odd trailing frame pending, so the model never sees it either). Questions and answers come from
`infinipot_eval.question_gen.make_questions`, so the wording is the evaluation's wording.

Curriculum (why: a tiny model trained on long multi-object clips from the start sits at the answer prior
for a long time): stages go from one short event with colour/presence questions, to a few short events
with all question kinds, to the evaluation's own timeline statistics. `stage_weights(progress)` mixes them;
later stages keep some of the easy data so nothing is forgotten.

No frame cache: rendering is cheap next to a training step (measured here: 0.02 ms per 56 px frame,
0.07 ms per 112 px frame, 1 ms per world), and preprocessing a 56 px frame is of the same order, so
examples are drawn fresh from a seeded stream instead of being cached on disk.

Seeds: training worlds use seeds >= TRAIN_SEED_BASE; evaluation uses seeds below it (see model_eval.py),
so no evaluation world is ever trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from infinipot_eval.question_gen import KINDS, colour_question, make_questions, with_article
from infinipot_eval.questions import Question
from infinipot_eval.world import World, WorldConfig
from infinipot.sampling import FrameSampler

__all__ = [
    "TRAIN_SEED_BASE",
    "EXTRA_WORDS",
    "Stage",
    "STAGES",
    "Example",
    "sampled_indices",
    "ask_times",
    "world_examples",
    "stage_weights",
    "harden_presence",
    "add_shape_questions",
    "focus_older_colour",
    "ExampleStream",
    "length_batches",
]

#: every training world's seed is >= this; evaluation worlds use seeds below it
TRAIN_SEED_BASE = 1_000_000

#: words of question_gen's questions/answers missing from the tiny tokenizer's base vocabulary
#: (counts are answered in digits; "most recent"; "came first")
EXTRA_WORDS: tuple[str, ...] = tuple(str(n) for n in range(21)) + ("came", "most", "recent")


@dataclass(frozen=True)
class Stage:
    """One kind of training clip: timeline statistics, clip length range and the question kinds asked."""

    name: str
    config: WorldConfig
    seconds: tuple[float, float]
    kinds: tuple[str, ...] = KINDS
    #: render sizes (px) to draw from; the adapter resizes to its frame size like it does for a camera
    sizes: tuple[int, ...] = (56, 112)


#: from easy to the evaluation's own statistics (WorldConfig() defaults)
STAGES: tuple[Stage, ...] = (
    Stage("single", WorldConfig(lead_in_seconds=(0.5, 2.0), event_seconds=(1.5, 4.0), gap_seconds=(1.0, 3.0)),
          (4.0, 8.0), kinds=("colour", "presence")),
    Stage("few", WorldConfig(lead_in_seconds=(0.5, 2.0), event_seconds=(1.5, 4.0), gap_seconds=(1.0, 4.0)),
          (8.0, 30.0)),
    Stage("long", WorldConfig(), (15.0, 90.0)),
)


@dataclass
class Example:
    """One question about one clip: the sampled frames up to the ask time and the answer to learn."""

    frames: list[np.ndarray]  # RGB uint8, even count (whole temporal frames of Qwen2-VL)
    question: str
    answer: str  # the first accepted answer: what the model should say
    kind: str
    seed: int
    stage: str = ""
    meta: dict = field(default_factory=dict)


def sampled_indices(world: World, sample_hz: float) -> list[int]:
    """Frame indices of `world` the node keeps at `sample_hz` (its stamp sampler, stamps = i / fps)."""
    sampler = FrameSampler(sample_hz)
    return [i for i in range(world.num_frames) if sampler.decide(world.time(i)).keep]


def ask_times(world: World, rng: np.random.Generator, per_gap: int = 2, settle_seconds: float = 0.5) -> list[float]:
    """`per_gap` random ask times in the quiet stretch after each event (like checkpoint_times, but more).

    Why more than one per gap: make_questions alternates presence answers yes/no and rotates kinds across
    ask times; with one event and one ask time every presence question would be a "yes".
    """
    last_t = (world.num_frames - 1) / world.fps
    times = []
    for k, event in enumerate(world.events):
        gap_end = world.events[k + 1].start if k + 1 < len(world.events) else last_t + 1e-9
        lo, hi = event.end + settle_seconds, min(gap_end - settle_seconds, last_t, event.end + 3.0)
        if hi >= lo:
            times.extend(round(float(t), 2) for t in rng.uniform(lo, hi, size=per_gap))
    return sorted(times)


def harden_presence(world: World, questions: list, rng: np.random.Generator, share: float) -> list:
    """Rewrite a `share` of the "no" presence questions into hard negatives: an unseen pair that shares its
    colour or its shape with something seen so far ("Did you see a red cube?" after a red star, or after a
    blue cube).

    Why: the evaluation's "no" questions name a random unseen pair, and in a one-object training clip that
    pair almost always differs in colour, so colour alone answers it and nothing teaches shape. In longer
    streams most wrong answers were the colour of another event (the wrong shape matched). A hard negative
    can only be answered by binding colour and shape. Both halves are needed: trained on seen-colour
    negatives only, a model learnt to answer "yes" whenever the shape matched (7 of 40 right on seen-shape
    negatives, measured on single-object clips).
    """
    if share <= 0.0:
        return questions
    cfg = world.config
    out = []
    for q in questions:
        if q.kind == "presence" and q.answers[:1] == ("no",) and rng.random() < share:
            past = world.events_before(q.time)
            seen = {e.name for e in past}
            partial = {f"{e.colour} {s}" for e in past for s in cfg.shapes}
            partial |= {f"{c} {e.shape}" for e in past for c in cfg.colours}
            hard = sorted(partial - seen)
            if hard:
                name = hard[int(rng.integers(len(hard)))]
                q = replace(q, question=f"Did you see {with_article(name)}?", tags=(q.kind, *q.tags[1:], "hard_negative"))
        out.append(q)
    return out


def focus_older_colour(world: World, questions: list, rng: np.random.Generator, share: float) -> list:
    """Re-aim a `share` of the colour questions at a shape other than the latest object's, where two or more
    shapes were seen so far ("What colour was the star?" when a cube came after the star).

    Why: the model answered the colour of the most recent object almost always right (43 of 44 on held-out
    60-s worlds) and an older object's only half the time (10 of 20), every miss naming another seen
    object's colour. The evaluation picks the asked shape uniformly, so a stream with two shapes asks about
    the latest one half the time and "say the newest colour" is a cheap partial answer. Questions that can
    only be answered by finding the asked shape in older memory take that shortcut away. The wording and
    answer are question_gen's own (`colour_question`).
    """
    if share <= 0.0:
        return questions
    out = []
    for q in questions:
        if q.kind == "colour" and rng.random() < share:
            past = world.events_before(q.time)
            older_shapes = sorted({e.shape for e in past} - {past[-1].shape}) if past else []
            if older_shapes:
                text, target = colour_question(past, older_shapes[int(rng.integers(len(older_shapes)))])
                q = replace(q, question=text, answers=(target.colour,), tags=(q.kind, *q.tags[1:], "older"))
        out.append(q)
    return out


def add_shape_questions(world: World, questions: list, rng: np.random.Generator, share: float) -> list:
    """Add, at a `share` of the ask times, "What shape was the <colour> object?" about a past event whose
    colour is unique so far (a training-only kind, `shape`; the evaluation never asks it).

    Why: the model learnt colours in minutes (the answer reads a colour straight off the visual tokens) but
    stayed shape-blind: with one object in view it answered "yes" to "Did you see a red cube?" after a red
    star, and with two objects it guessed which colour a shape had. Naming the shape is the same direct
    read-out for shape, so the vision tower gets a gradient for it from the first steps.
    """
    if share <= 0.0:
        return questions
    out = list(questions)
    for t in sorted({q.time for q in questions}):
        if rng.random() >= share:
            continue
        past = world.events_before(t)
        colours = [e.colour for e in past]
        unique = [e for e in past if colours.count(e.colour) == 1]
        if not unique:
            continue
        event = unique[int(rng.integers(len(unique)))]
        out.append(Question(id=f"shape-{t:g}", topic=questions[0].topic, time=t,
                            question=f"What shape was the {event.colour} object?", answers=(event.shape,),
                            tags=("shape", "recent")))
    return sorted(out, key=lambda q: q.time)


def world_examples(
    seed: int,
    stage: Stage,
    *,
    sample_hz: float = 2.0,
    fps: float = 10.0,
    frames_per_step: int = 2,
    rng: np.random.Generator | None = None,
    max_questions: int | None = None,
    hard_negative_share: float = 0.0,
    shape_question_share: float = 0.0,
    older_colour_share: float = 0.0,
) -> list[Example]:
    """All (or `max_questions` random) questions about the world `seed` of `stage`, each with its frames."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    seconds = float(rng.uniform(*stage.seconds))
    size = int(stage.sizes[int(rng.integers(len(stage.sizes)))])
    world = World(seed=seed, seconds=seconds, fps=fps, size=size, config=stage.config)
    questions = make_questions(world, kinds=stage.kinds, per_checkpoint=2, times=ask_times(world, rng))
    questions = harden_presence(world, questions, rng, hard_negative_share)
    questions = focus_older_colour(world, questions, rng, older_colour_share)
    questions = add_shape_questions(world, questions, rng, shape_question_share)
    if max_questions is not None and len(questions) > max_questions:
        picks = rng.choice(len(questions), size=max_questions, replace=False)
        questions = [questions[int(k)] for k in sorted(picks)]
    if not questions:
        return []
    kept = sampled_indices(world, sample_hz)
    rendered: dict[int, np.ndarray] = {}
    examples = []
    for q in questions:
        upto = [i for i in kept if world.time(i) <= q.time]
        upto = upto[: len(upto) - len(upto) % frames_per_step]
        if not upto:
            continue
        frames = [rendered.setdefault(i, world.frame(i)) for i in upto]
        examples.append(Example(frames, q.question, q.answers[0], q.tags[0], seed, stage.name,
                                {"time": q.time, "size": size}))
    return examples


def stage_weights(progress: float, num_stages: int = len(STAGES)) -> list[float]:
    """Mixing weights of the stages at training progress 0..1: easy first, all of them later.

    0-20 %: only stage 0; 20-40 %: stages 0-1 (1:3); then all three (1:2:4), so the hardest clips get
    most of the time once the basics are learnt while the easy ones are still rehearsed.
    """
    if num_stages == 1:
        return [1.0]
    if progress < 0.2:
        weights = [1.0] + [0.0] * (num_stages - 1)
    elif progress < 0.4 or num_stages == 2:
        weights = [1.0, 3.0] + [0.0] * (num_stages - 2)
    else:
        weights = [1.0, 2.0] + [4.0] * (num_stages - 2)
    total = sum(weights)
    return [w / total for w in weights]


class ExampleStream:
    """A deterministic, resumable stream of training examples.

    Example k of the stream depends only on (seed, world counter): `state()` / `restore()` carry the counter
    and a buffer-free position, so `--resume` continues with exactly the examples that would have come next.
    """

    def __init__(self, seed: int, stages: Sequence[Stage] = STAGES, *, sample_hz: float = 2.0,
                 fps: float = 10.0, frames_per_step: int = 2, questions_per_world: int = 3,
                 fixed_weights: Sequence[float] | None = None, hard_negative_share: float = 0.0,
                 shape_question_share: float = 0.0, older_colour_share: float = 0.0) -> None:
        self.seed = int(seed)
        self.stages = tuple(stages)
        self.sample_hz = sample_hz
        self.fps = fps
        self.frames_per_step = frames_per_step
        self.questions_per_world = questions_per_world
        #: stage mix for the whole run instead of the curriculum (a fine-tune that has the basics already)
        self.fixed_weights = None
        if fixed_weights is not None:
            if len(fixed_weights) != len(self.stages) or min(fixed_weights) < 0 or sum(fixed_weights) <= 0:
                raise ValueError(f"fixed_weights needs {len(self.stages)} non-negative weights, got {fixed_weights}")
            self.fixed_weights = [w / sum(fixed_weights) for w in fixed_weights]
        self.hard_negative_share = float(hard_negative_share)
        self.shape_question_share = float(shape_question_share)
        self.older_colour_share = float(older_colour_share)
        self.worlds = 0  # worlds drawn so far

    def state(self) -> dict:
        return {"seed": self.seed, "worlds": self.worlds}

    def restore(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.worlds = int(state["worlds"])

    def next_world(self, progress: float) -> list[Example]:
        """Examples of the next world; its stage is drawn with `stage_weights(progress)`."""
        while True:
            index = self.worlds
            self.worlds += 1
            rng = np.random.default_rng([self.seed, index])
            weights = self.fixed_weights or stage_weights(progress, len(self.stages))
            stage = self.stages[int(rng.choice(len(self.stages), p=weights))]
            world_seed = TRAIN_SEED_BASE + self.seed * 100_000_000 + index
            examples = world_examples(world_seed, stage, sample_hz=self.sample_hz, fps=self.fps,
                                      frames_per_step=self.frames_per_step, rng=rng,
                                      max_questions=self.questions_per_world,
                                      hard_negative_share=self.hard_negative_share,
                                      shape_question_share=self.shape_question_share,
                                      older_colour_share=self.older_colour_share)
            if examples:
                return examples

    def take(self, count: int, progress: float) -> list[Example]:
        """At least `count` examples (whole worlds), for one pool of batches."""
        out: list[Example] = []
        while len(out) < count:
            out.extend(self.next_world(progress))
        return out

    def __iter__(self) -> Iterator[Example]:  # convenience for inspection
        while True:
            yield from self.next_world(1.0)


def length_batches(examples: Sequence[Example], batch_size: int, rng: np.random.Generator) -> list[list[Example]]:
    """Group examples of similar frame count into batches (less padding), in random batch order."""
    order = sorted(range(len(examples)), key=lambda k: (len(examples[k].frames), float(rng.random())))
    batches = [[examples[k] for k in order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(batches))
    return [batches[int(k)] for k in perm]

