"""Questions about a synthetic `World`, with exact answers and a long_range / recent tag.

Why questions are asked only in quiet gaps: every event is then either fully seen or still in the future,
so the right answer is unambiguous (nothing half-visible), and no question can be answered by peeking at a
frame after its time.

Kinds (the first tag):
- `colour`: "What colour was the cube?" (the shape seen exactly once so far) or "What colour was the most
  recent cube?" (seen several times) → the colour, e.g. `red`.
- `presence`: "Did you see a green ball?" → `yes` / `no`, alternating so the two answers are balanced; a
  "no" names a colour×shape pair not seen so far (it may appear later: no peeking).
- `order`: "Which came first, the red cube or the blue ball?" about two pairs each seen exactly once →
  the earlier one's name (`red cube`); its shape alone is also accepted when the shapes differ, its colour
  alone when the colours differ.
- `count`: "How many objects did you see?" / "How many balls did you see?" → a number (digits; number
  words are normalised by scoring.py), `0` also as `none`.
- `when`: "When did you see the red cube?" about a pair seen exactly once so far → its span as text
  (`12.3-16.8 s`, for reports); scored on the answer's evidence frames, not the text (scoring.py), since
  the built-in model does not speak times. Not in `KINDS` (the text-scored kinds training and
  infinipot-model-eval use); the evaluation's default is `ALL_KINDS`.

Range tag: a question needs `evidence`, the stream-time spans of the events its answer depends on (for a
"no" and for counts: every event so far). It is `long_range` when the oldest needed event ended more than
`window_seconds` before the question, i.e. a sliding-window cache holding the last `window_seconds` of
frames keeps none of it; otherwise `recent`. `window_seconds_for` gives that window for a token budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .questions import BagInfo, Question, QuestionSet
from .world import Event, World

__all__ = ["KINDS", "ALL_KINDS", "DEFAULT_WINDOW_SECONDS", "window_seconds_for", "checkpoint_times", "make_questions",
           "make_question_set", "with_article", "colour_question"]

KINDS: tuple[str, ...] = ("colour", "presence", "order", "count")
#: every kind the generator knows; "when" is scored on evidence (see the module docstring)
ALL_KINDS: tuple[str, ...] = KINDS + ("when",)

#: reference budget 256 tokens, 16 visual tokens per frame, frames sampled at 2 Hz → 256 / (16·2) = 8 s
DEFAULT_WINDOW_SECONDS = 8.0


def window_seconds_for(budget_tokens: int, tokens_per_frame: int, sample_hz: float) -> float:
    """Stream seconds a sliding window of `budget_tokens` holds: budget / (tokens per frame × frames per second)."""
    if budget_tokens <= 0 or tokens_per_frame <= 0 or sample_hz <= 0:
        raise ValueError("window_seconds_for needs positive budget, tokens per frame and sample rate")
    return budget_tokens / (tokens_per_frame * sample_hz)


def with_article(name: str) -> str:
    """"an orange cube", "a red cube"."""
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _plural(shape: str) -> str:
    return shape + "s"


def checkpoint_times(world: World, rng: np.random.Generator, *, settle_seconds: float = 0.5) -> list[float]:
    """One ask time in the quiet gap after each event (and none where the gap is too short)."""
    last_t = (world.num_frames - 1) / world.fps
    times = []
    for k, event in enumerate(world.events):
        gap_end = world.events[k + 1].start if k + 1 < len(world.events) else last_t + 1e-9
        lo = event.end + settle_seconds
        hi = min(gap_end - settle_seconds, last_t, event.end + 3.0)
        if hi >= lo:
            times.append(round(float(rng.uniform(lo, hi)), 2))
    return times


@dataclass
class _Ctx:
    world: World
    time: float
    past: tuple[Event, ...]
    window_seconds: float
    rng: np.random.Generator

    def range_tag(self, evidence: tuple[Event, ...]) -> str:
        oldest_end = min((e.end for e in evidence), default=self.time)
        return "long_range" if self.time - oldest_end > self.window_seconds else "recent"

    def unique_names(self) -> list[Event]:
        """Past events whose colour×shape pair occurred exactly once so far."""
        names = [e.name for e in self.past]
        return [e for e in self.past if names.count(e.name) == 1]


def colour_question(past: Sequence[Event], shape: str) -> tuple[str, Event]:
    """The colour question about `shape` (seen in `past`) and the event it asks about: "What colour was the
    cube?" when one cube was seen, "What colour was the most recent cube?" (the latest one) when several were."""
    same = [e for e in past if e.shape == shape]
    text = f"What colour was the {shape}?" if len(same) == 1 else f"What colour was the most recent {shape}?"
    return text, same[-1]


def _colour(ctx: _Ctx, _state: dict) -> tuple[str, tuple[str, ...], tuple[Event, ...]] | None:
    if not ctx.past:
        return None
    shapes = sorted({e.shape for e in ctx.past})
    text, target = colour_question(ctx.past, shapes[int(ctx.rng.integers(len(shapes)))])
    return text, (target.colour,), (target,)


def _presence(ctx: _Ctx, state: dict) -> tuple[str, tuple[str, ...], tuple[Event, ...]] | None:
    want_yes = state.setdefault("presence_yes", True)
    seen = {e.name for e in ctx.past}
    cfg = ctx.world.config
    unseen = [f"{c} {s}" for c in cfg.colours for s in cfg.shapes if f"{c} {s}" not in seen]
    if want_yes and not ctx.past:
        want_yes = False
    if not want_yes and not unseen:
        want_yes = True
    state["presence_yes"] = not want_yes
    if want_yes:
        event = ctx.past[int(ctx.rng.integers(len(ctx.past)))]
        latest = [e for e in ctx.past if e.name == event.name][-1]
        return f"Did you see {with_article(event.name)}?", ("yes",), (latest,)
    name = unseen[int(ctx.rng.integers(len(unseen)))]
    return f"Did you see {with_article(name)}?", ("no",), ctx.past


def _order(ctx: _Ctx, _state: dict) -> tuple[str, tuple[str, ...], tuple[Event, ...]] | None:
    candidates = ctx.unique_names()
    if len(candidates) < 2:
        return None
    i, j = sorted(int(k) for k in ctx.rng.choice(len(candidates), size=2, replace=False))
    first, second = candidates[i], candidates[j]
    a, b = (first, second) if ctx.rng.random() < 0.5 else (second, first)
    accepted = [first.name]
    if first.shape != second.shape:
        accepted.append(first.shape)
    if first.colour != second.colour:
        accepted.append(first.colour)
    return f"Which came first, the {a.name} or the {b.name}?", tuple(accepted), (first, second)


def _count(ctx: _Ctx, state: dict) -> tuple[str, tuple[str, ...], tuple[Event, ...]] | None:
    by_shape = state.setdefault("count_by_shape", False)
    state["count_by_shape"] = not by_shape
    if not by_shape:
        n = len(ctx.past)
        text = "How many objects did you see?"
    else:
        shapes = ctx.world.config.shapes
        shape = shapes[int(ctx.rng.integers(len(shapes)))]
        n = sum(1 for e in ctx.past if e.shape == shape)
        text = f"How many {_plural(shape)} did you see?"
    answers = (str(n), "none") if n == 0 else (str(n),)
    return text, answers, ctx.past


def _when(ctx: _Ctx, _state: dict) -> tuple[str, tuple[str, ...], tuple[Event, ...]] | None:
    candidates = ctx.unique_names()
    if not candidates:
        return None
    event = candidates[int(ctx.rng.integers(len(candidates)))]
    return f"When did you see the {event.name}?", (f"{event.start:.1f}-{event.end:.1f} s",), (event,)


def _spans(evidence: tuple[Event, ...], max_spans: int = 4) -> tuple[tuple[float, float], ...]:
    """Evidence spans for the file: one per event, or one covering span when many events are needed
    (keeps whole-history questions of hour-long bags small; the range tag is computed from the events)."""
    if len(evidence) > max_spans:
        return ((evidence[0].start, evidence[-1].end),)
    return tuple((e.start, e.end) for e in evidence)


_GENERATORS = {"colour": _colour, "presence": _presence, "order": _order, "count": _count, "when": _when}


def make_questions(world: World, *, window_seconds: float = DEFAULT_WINDOW_SECONDS, topic: str = "/camera/image_raw",
                   per_checkpoint: int = 2, max_questions: int | None = None, kinds: tuple[str, ...] = ALL_KINDS,
                   times: list[float] | None = None, seed: int | None = None) -> list[Question]:
    """Questions about `world`, asked at `times` (default: one quiet moment after each event).

    Kinds rotate over the checkpoints so every kind is asked about equally often; a kind that cannot be
    asked at a moment (e.g. `order` before two events) is skipped for the next one. With `max_questions`,
    checkpoints are thinned evenly over the whole stream so long bags still get early *and* late questions.
    Deterministic for a given world and `seed` (default: the world's seed).
    """
    unknown = [k for k in kinds if k not in _GENERATORS]
    if unknown or not kinds:
        raise ValueError(f"unknown question kinds {unknown}; known: {ALL_KINDS}")
    rng = np.random.default_rng([world.seed if seed is None else seed, 0x51])
    ask_times = sorted(times) if times is not None else checkpoint_times(world, rng)
    if max_questions is not None and per_checkpoint > 0:
        n_checkpoints = max(1, -(-max_questions // per_checkpoint))
        if len(ask_times) > n_checkpoints:
            picks = np.linspace(0, len(ask_times) - 1, n_checkpoints).round().astype(int)
            ask_times = [ask_times[k] for k in sorted(set(picks.tolist()))]
    questions: list[Question] = []
    state: dict = {}
    turn = 0
    for t in ask_times:
        ctx = _Ctx(world, t, world.events_before(t), window_seconds, rng)
        asked_texts: set[str] = set()
        made = 0
        for _attempt in range(len(kinds) * 2):
            if made >= per_checkpoint:
                break
            kind = kinds[turn % len(kinds)]
            turn += 1
            out = _GENERATORS[kind](ctx, state)
            if out is None or out[0] in asked_texts:
                continue
            text, answers, evidence = out
            asked_texts.add(text)
            made += 1
            questions.append(Question(
                id=f"q{len(questions) + 1:04d}-{kind}", topic=topic, time=t, question=text, answers=answers,
                tags=(kind, ctx.range_tag(evidence)),
                evidence=_spans(evidence),
            ))
            if max_questions is not None and len(questions) >= max_questions:
                return questions
    return questions


def make_question_set(world: World, *, topic: str = "/camera/image_raw",
                      window_seconds: float = DEFAULT_WINDOW_SECONDS, **kwargs) -> QuestionSet:
    """`make_questions` wrapped with the bag info of a bag written from `world` (see synth_cli)."""
    questions = make_questions(world, window_seconds=window_seconds, topic=topic, **kwargs)
    bag = BagInfo(topic=topic, fps=world.fps, seconds=world.seconds, seed=world.seed,
                  extra={"size": world.size, "window_seconds": window_seconds})
    return QuestionSet(bag=bag, questions=tuple(questions))
