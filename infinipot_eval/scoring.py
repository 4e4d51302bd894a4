"""Scoring a model's free-text answer against a question's accepted answers.

Why more than string equality: a model says "It was red." or "Three." where the file says `red` / `3`.
Normalisation (lowercase, strip punctuation and articles, number words to digits) makes those equal. Why
not plain substring containment: an answer that lists everything ("red blue green", "yes or no") would then
always score. The rule is therefore:

1. exact match of the normalised prediction with a normalised accepted answer → right;
2. otherwise an accepted answer that occurs as a whole-word span of the prediction counts only if the
   prediction names no *competing* answer word: a word of the closed answer vocabulary (colours, shapes,
   yes/no, numbers) of a category the accepted answers use (a colour answer competes with colours, a
   count with numbers) that none of the accepted answers contains. So "3 balls" answers a count of 3,
   "red ball" answers "red", but "red or blue" does not.

Multiple choice: the prediction selects a choice by letter ("b", "(B)") or by naming exactly one choice
(rule 1, then rule 2 with the other choices' words as the competitors).

"When" questions (`EVIDENCE_SCORED_KINDS`) are scored on the answer's evidence, not its text (the built-in
model does not speak times): right when the strongest evidence frame overlaps one of the question's
evidence spans widened by one sampling period on each side (`evidence_hit`). The same hit is reported for
every question with evidence spans as `evidence_hit_rate`.

A model that reads its frames' timestamps (Qwen3-VL's `<t seconds>`, SmolVLM2's `Frame from MM:SS:`) may
answer a "when" in words. Such an answer is scored on the times it names (`spoken_time_hit`): "12.5 seconds",
"12 s", "0:12" / "00:12" (MM:SS), "1:02:03" (H:MM:SS) and "2 minutes". It is right when every time it names
lies inside one of the question's evidence spans widened by one sampling period plus `SPOKEN_TIME_TOLERANCE_S`
on each side (the slack covers MM:SS rounding to whole seconds and Qwen3-VL stamping a temporal patch of two
frames with their mean time); naming several times, one of them wrong, is wrong, as listing colours is. Times
are read as seconds since the memory's first frame, which is how both processors count and what the replay's
stream time is (its first message is stream time 0). An answer that names no time falls back to the evidence.
"""
from __future__ import annotations

import re
import string
from typing import Sequence

from .questions import Question

__all__ = ["normalise", "answer_category", "match_free_text", "match_choice", "is_correct", "evidence_hit", "score",
           "EVIDENCE_SCORED_KINDS", "SPOKEN_TIME_TOLERANCE_S", "spoken_times", "spoken_time_hit"]

#: question kinds whose `correct` is the evidence hit (question_gen's `when`)
EVIDENCE_SCORED_KINDS: tuple[str, ...] = ("when",)

#: seconds of slack, beyond one sampling period, for a time named in an answer (MM:SS rounds to whole seconds)
SPOKEN_TIME_TOLERANCE_S = 1.0

# H:MM:SS or MM:SS; then "12.5 seconds" / "12 s" / "12 sec"; then "2 minutes" / "2 min"
_CLOCK = re.compile(r"\b(?:(\d+):)?(\d{1,2}):(\d{2})(?:\.(\d+))?\b")
_SECONDS = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b", re.IGNORECASE)
_MINUTES = re.compile(r"\b(\d+(?:\.\d+)?)\s*(?:minutes?|mins?)\b", re.IGNORECASE)

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
_ARTICLES = {"a", "an", "the"}
_SPELLING = {"color": "colour", "grey": "gray"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation})

#: closed vocabulary of the synthetic world's answers; words outside it never compete
COLOUR_WORDS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "pink", "black", "gray", "brown")
SHAPE_WORDS = ("cube", "ball", "cone", "star", "ring")
_CATEGORIES = {"colour": frozenset(COLOUR_WORDS), "shape": frozenset(SHAPE_WORDS), "yesno": frozenset({"yes", "no"})}
_DIGITS = re.compile(r"^\d+$")
_PLURAL = {f"{s}s": s for s in SHAPE_WORDS}


def normalise(text: str) -> str:
    """Lowercase, drop punctuation and articles, map number words to digits and plurals of shapes to singular.

    >>> normalise("The THREE red Cubes!")
    '3 red cube'
    """
    words = []
    for word in text.lower().translate(_PUNCT).split():
        if word in _ARTICLES:
            continue
        word = _SPELLING.get(word, word)
        word = _PLURAL.get(word, word)
        if word in _NUMBER_WORDS:
            word = str(_NUMBER_WORDS[word])
        elif _DIGITS.match(word):
            word = str(int(word))  # "03" -> "3"
        words.append(word)
    return " ".join(words)


def answer_category(word: str) -> str | None:
    """The answer category of a normalised word ("colour", "shape", "yesno", "number"), or None."""
    if _DIGITS.match(word):
        return "number"
    for name, words in _CATEGORIES.items():
        if word in words:
            return name
    return None


def _contains_span(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def match_free_text(prediction: str, accepted: tuple[str, ...] | list[str],
                    competitors: tuple[str, ...] | list[str] = ()) -> bool:
    """Whether `prediction` gives one of the `accepted` answers (rules 1 and 2 of the module docstring).

    `competitors` adds answers that must not be named (their words count as competing words too).
    """
    pred = normalise(prediction)
    norm_accepted = [normalise(a) for a in accepted]
    if pred in norm_accepted:
        return True
    pred_words = pred.split()
    allowed = {w for a in norm_accepted for w in a.split()}
    categories = {answer_category(w) for w in allowed} - {None}
    competing = {w for w in pred_words if w not in allowed and answer_category(w) in categories}
    competing |= {w for c in competitors for w in normalise(c).split() if w not in allowed and w in pred_words}
    if competing:
        return False
    return any(_contains_span(pred_words, a.split()) for a in norm_accepted)


_LETTER = re.compile(r"^\(?([a-z])\)?[.:)]?$")


def match_choice(prediction: str, choices: tuple[str, ...] | list[str]) -> int | None:
    """Index of the choice the prediction selects, or None if it selects none or several."""
    raw = prediction.strip().lower()
    first = raw.split()[0] if raw.split() else ""
    letter = _LETTER.match(first)
    if letter and (len(raw.split()) == 1 or first.startswith("(") or first.endswith((")", ".", ":"))):
        idx = ord(letter.group(1)) - ord("a")
        return idx if 0 <= idx < len(choices) else None
    hits = [i for i, c in enumerate(choices)
            if match_free_text(prediction, [c], [o for j, o in enumerate(choices) if j != i])]
    return hits[0] if len(hits) == 1 else None


def is_correct(question: Question, prediction: str) -> bool:
    """Score one prediction for one question (free text or multiple choice)."""
    if question.is_multiple_choice:
        idx = match_choice(prediction, question.choices)
        return idx is not None and question.choices[idx] == question.answer
    return match_free_text(prediction, question.answers)


def evidence_hit(question: Question, evidence: Sequence[Sequence[float]], period: float) -> bool | None:
    """Whether the strongest evidence frame (`evidence[0]` = (start, end, ...), stream seconds) overlaps one
    of the question's evidence spans widened by `period` (one sampling period) on each side.

    None when it cannot be judged: the question has no evidence spans or the answer no evidence."""
    if not question.evidence or not evidence:
        return None
    start, end = float(evidence[0][0]), float(evidence[0][1])
    return any(start <= hi + period and end >= lo - period for lo, hi in question.evidence)


def spoken_times(text: str) -> list[float]:
    """Every time named in `text`, in seconds, in the order named (see the module docstring for the forms).

    >>> spoken_times("at 0:12, and again at 1:02:03 or <12.5 seconds>, 2 minutes in")
    [12.0, 3723.0, 12.5, 120.0]
    """
    found: list[tuple[int, float]] = []
    taken: list[tuple[int, int]] = []
    for match in _CLOCK.finditer(text):
        hours, minutes, seconds, fraction = match.groups()
        value = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + float(f"0.{fraction or 0}")
        found.append((match.start(), float(value)))
        taken.append(match.span())
    for pattern, scale in ((_SECONDS, 1.0), (_MINUTES, 60.0)):
        for match in pattern.finditer(text):
            if any(lo <= match.start() < hi for lo, hi in taken):
                continue  # "0:12 s": the clock form already read it
            found.append((match.start(), float(match.group(1)) * scale))
    return [value for _, value in sorted(found)]


def spoken_time_hit(question: Question, prediction: str, period: float) -> bool | None:
    """Whether every time `prediction` names lies in one of the question's evidence spans, widened by
    `period` + SPOKEN_TIME_TOLERANCE_S on each side. None when it names no time or the question has no spans."""
    times = spoken_times(prediction)
    if not times or not question.evidence:
        return None
    slack = float(period) + SPOKEN_TIME_TOLERANCE_S
    return all(any(lo - slack <= t <= hi + slack for lo, hi in question.evidence) for t in times)


def score(question: Question, prediction: str, hit: bool | None, period: float = 0.0) -> bool:
    """`correct` of one answer. For `EVIDENCE_SCORED_KINDS`: the times the answer names if it names any
    (`spoken_time_hit`, `period` = seconds between sampled frames), else the evidence hit; the text otherwise."""
    if question.kind in EVIDENCE_SCORED_KINDS:
        spoken = spoken_time_hit(question, prediction, period)
        return bool(hit) if spoken is None else spoken
    return is_correct(question, prediction)
