"""The question file: what to ask about a recorded stream, when, and which answers count as right.

Why a file of its own (and not questions baked into a script): the same questions must drive the offline
replay, the live replay through the ROS node and, later, training data checks, and a person must be able
to write one by hand for a real recording. YAML keeps it readable; a strict schema check turns typos into
an error that names the question and the field instead of a silently wrong score.

Format (version 1)::

    version: 1
    bag:                        # what the questions were written for
      topic: /camera/image_raw  # default camera topic
      fps: 10                   # optional (null for a real recording)
      seconds: 120              # optional: stream length
      seed: 7                   # optional: generator seed (null for a real recording)
      # any further keys (size, window_seconds, ...) are kept as free-form info
    questions:
      - id: q0001-colour        # unique, non-empty
        topic: /camera/image_raw
        time: 12.5              # stream seconds (since the topic's first message) at which it is asked
        question: What colour was the cube?
        answers: [red]          # free text: accepted answers (see scoring.py for the normalisation)
        tags: [colour, recent]
      - id: q0002-mc
        topic: /camera/image_raw
        time: 30.0
        question: Which came first, the red cube or the blue ball?
        choices: [red cube, blue ball]   # multiple choice: the choices ...
        answer: red cube                 # ... and the right one (must be one of them)
        tags: [order, long_range]
        evidence: [[3.0, 7.5], [10.0, 14.0]]   # optional: stream-time spans the answer depends on

A question has either `answers` or `choices` + `answer`, never both. Unknown keys are errors (they are
almost always typos of a known key).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

__all__ = [
    "FORMAT_VERSION",
    "QuestionFileError",
    "BagInfo",
    "Question",
    "QuestionSet",
    "load_questions",
    "save_questions",
    "questions_from_dict",
    "questions_to_dict",
]

FORMAT_VERSION = 1

_QUESTION_KEYS = {"id", "topic", "time", "question", "answers", "choices", "answer", "tags", "evidence"}
_BAG_KEYS_TYPED = {"topic", "fps", "seconds", "seed"}


class QuestionFileError(ValueError):
    """A question file that does not follow the format; the message names the question id and field."""


@dataclass(frozen=True)
class BagInfo:
    """What the question set was written for; `extra` keeps free-form keys (e.g. size, window_seconds)."""

    topic: str
    fps: float | None = None
    seconds: float | None = None
    seed: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Question:
    """One question asked at stream time `time` on camera topic `topic`."""

    id: str
    topic: str
    time: float
    question: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer: str | None = None
    tags: tuple[str, ...] = ()
    evidence: tuple[tuple[float, float], ...] = ()

    @property
    def is_multiple_choice(self) -> bool:
        return bool(self.choices)

    @property
    def kind(self) -> str:
        """The first tag, by convention the question kind (colour, presence, order, count, ...)."""
        return self.tags[0] if self.tags else ""

    @property
    def reference(self) -> str:
        """The canonical right answer (for reports)."""
        return self.answer if self.is_multiple_choice and self.answer is not None else self.answers[0]


@dataclass(frozen=True)
class QuestionSet:
    """A validated question file: bag info plus questions sorted by ask time (stable for equal times)."""

    bag: BagInfo
    questions: tuple[Question, ...]
    version: int = FORMAT_VERSION

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions)

    def for_topic(self, topic: str) -> tuple[Question, ...]:
        return tuple(q for q in self.questions if q.topic == topic)

    @property
    def topics(self) -> tuple[str, ...]:
        """Camera topics the questions ask about, in order of first appearance."""
        return tuple(dict.fromkeys(q.topic for q in self.questions))


# --------------------------------------------------------------------------------------------- parsing


def _where(qid: str | None, index: int, fld: str) -> str:
    name = f"question {qid!r}" if qid else f"question #{index}"
    return f"{name} field {fld!r}"


def _number(value: Any, where: str, *, minimum: float | None = None, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QuestionFileError(f"{where}: must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise QuestionFileError(f"{where}: must be >= {minimum}, got {value!r}")
    return float(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QuestionFileError(f"{where}: must be a non-empty string, got {value!r}")
    return value.strip()


def _texts(value: Any, where: str, *, min_len: int) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < min_len:
        raise QuestionFileError(f"{where}: must be a list of at least {min_len} non-empty strings, got {value!r}")
    items = tuple(_text(v, where) for v in value)
    if len(set(items)) != len(items):
        raise QuestionFileError(f"{where}: has duplicates: {list(items)!r}")
    return items


def _bag(raw: Any) -> BagInfo:
    if not isinstance(raw, dict):
        raise QuestionFileError(f"'bag': must be a mapping with at least 'topic', got {raw!r}")
    topic = _topic(raw.get("topic"), "'bag' field 'topic'")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise QuestionFileError(f"'bag' field 'seed': must be an integer or null, got {seed!r}")
    return BagInfo(
        topic=topic,
        fps=_number(raw.get("fps"), "'bag' field 'fps'", minimum=0.0, allow_none=True),
        seconds=_number(raw.get("seconds"), "'bag' field 'seconds'", minimum=0.0, allow_none=True),
        seed=seed,
        extra={k: v for k, v in raw.items() if k not in _BAG_KEYS_TYPED},
    )


def _topic(value: Any, where: str) -> str:
    topic = _text(value, where)
    if not topic.startswith("/"):
        raise QuestionFileError(f"{where}: a topic name must be absolute (start with '/'), got {topic!r}")
    return topic


def _evidence(value: Any, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list):
        raise QuestionFileError(f"{where}: must be a list of [start, end] pairs, got {value!r}")
    spans = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise QuestionFileError(f"{where}: each entry must be [start, end], got {item!r}")
        start = _number(item[0], where, minimum=0.0)
        end = _number(item[1], where, minimum=0.0)
        assert start is not None and end is not None
        if end < start:
            raise QuestionFileError(f"{where}: span ends before it starts: {item!r}")
        spans.append((start, end))
    return tuple(spans)


def _question(raw: Any, index: int, default_topic: str, max_time: float | None) -> Question:
    if not isinstance(raw, dict):
        raise QuestionFileError(f"question #{index}: must be a mapping, got {raw!r}")
    qid_raw = raw.get("id")
    if isinstance(qid_raw, int) and not isinstance(qid_raw, bool):
        qid_raw = str(qid_raw)  # `id: 3` in YAML is an int; an id is a name
    qid = _text(qid_raw, _where(None, index, "id"))
    unknown = sorted(set(raw) - _QUESTION_KEYS)
    if unknown:
        raise QuestionFileError(f"question {qid!r}: unknown field(s) {unknown} (known: {sorted(_QUESTION_KEYS)})")
    topic = _topic(raw.get("topic", default_topic), _where(qid, index, "topic"))
    if "time" not in raw:
        raise QuestionFileError(f"{_where(qid, index, 'time')}: missing (stream seconds at which it is asked)")
    time = _number(raw["time"], _where(qid, index, "time"), minimum=0.0)
    assert time is not None
    if max_time is not None and time > max_time + 1e-6:
        raise QuestionFileError(f"{_where(qid, index, 'time')}: {time} is after the end of the bag ({max_time} s)")
    text = _text(raw.get("question"), _where(qid, index, "question"))
    has_free, has_mc = "answers" in raw, ("choices" in raw or "answer" in raw)
    if has_free == has_mc:
        raise QuestionFileError(
            f"question {qid!r}: needs exactly one of 'answers' (free text) or 'choices' + 'answer' (multiple choice)"
        )
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    answer = None
    if has_free:
        answers = _texts(raw["answers"], _where(qid, index, "answers"), min_len=1)
    else:
        choices = _texts(raw.get("choices"), _where(qid, index, "choices"), min_len=2)
        answer = _text(raw.get("answer"), _where(qid, index, "answer"))
        if answer not in choices:
            raise QuestionFileError(f"{_where(qid, index, 'answer')}: {answer!r} is not one of the choices {list(choices)!r}")
    tags_raw = raw.get("tags", [])
    if not isinstance(tags_raw, list) or not all(isinstance(t, str) and t.strip() for t in tags_raw):
        raise QuestionFileError(f"{_where(qid, index, 'tags')}: must be a list of non-empty strings, got {tags_raw!r}")
    evidence = _evidence(raw["evidence"], _where(qid, index, "evidence")) if "evidence" in raw else ()
    return Question(
        id=qid, topic=topic, time=time, question=text, answers=answers, choices=choices, answer=answer,
        tags=tuple(t.strip() for t in tags_raw), evidence=evidence,
    )


def questions_from_dict(doc: Any) -> QuestionSet:
    """Validate a parsed question document; raise `QuestionFileError` naming the offending id and field."""
    if not isinstance(doc, dict):
        raise QuestionFileError(f"top level: must be a mapping with 'version', 'bag' and 'questions', got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"version", "bag", "questions"})
    if unknown:
        raise QuestionFileError(f"top level: unknown key(s) {unknown}")
    if doc.get("version") != FORMAT_VERSION:
        raise QuestionFileError(f"'version': this reader understands version {FORMAT_VERSION}, got {doc.get('version')!r}")
    bag = _bag(doc.get("bag"))
    raw_questions = doc.get("questions")
    if not isinstance(raw_questions, list):
        raise QuestionFileError(f"'questions': must be a list, got {raw_questions!r}")
    questions = [_question(raw, i, bag.topic, bag.seconds) for i, raw in enumerate(raw_questions)]
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise QuestionFileError(f"question {q.id!r} field 'id': duplicate id")
        seen.add(q.id)
    questions.sort(key=lambda q: q.time)  # stable: equal times keep file order
    return QuestionSet(bag=bag, questions=tuple(questions))


def questions_to_dict(qset: QuestionSet) -> dict[str, Any]:
    """The plain-data form written by `save_questions` (round-trips through `questions_from_dict`)."""
    bag: dict[str, Any] = {"topic": qset.bag.topic, "fps": qset.bag.fps, "seconds": qset.bag.seconds,
                           "seed": qset.bag.seed}
    bag.update(qset.bag.extra)
    out: list[dict[str, Any]] = []
    for q in qset.questions:
        item: dict[str, Any] = {"id": q.id, "topic": q.topic, "time": q.time, "question": q.question}
        if q.is_multiple_choice:
            item["choices"] = list(q.choices)
            item["answer"] = q.answer
        else:
            item["answers"] = list(q.answers)
        item["tags"] = list(q.tags)
        if q.evidence:
            item["evidence"] = [[s, e] for s, e in q.evidence]
        out.append(item)
    return {"version": qset.version, "bag": bag, "questions": out}


def load_questions(path: str | Path) -> QuestionSet:
    """Read and validate a question file; errors name the file, the question id and the field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QuestionFileError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise QuestionFileError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return questions_from_dict(doc)
    except QuestionFileError as exc:
        raise QuestionFileError(f"{path}: {exc}") from None


def save_questions(qset: QuestionSet | Iterable[Question], path: str | Path, bag: BagInfo | None = None) -> Path:
    """Write a question file (validated on the way out, so a written file always loads)."""
    if not isinstance(qset, QuestionSet):
        if bag is None:
            raise ValueError("save_questions: pass a QuestionSet, or questions together with bag info")
        qset = QuestionSet(bag=bag, questions=tuple(qset))
    doc = questions_to_dict(qset)
    questions_from_dict(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")
    return path
