"""Free-text and multiple-choice scoring: normalisation, and answers that list everything lose."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from infinipot_eval.questions import Question
from infinipot_eval.scoring import is_correct, match_choice, match_free_text, normalise


@pytest.mark.parametrize("text, expected", [
    ("The THREE red Cubes!", "3 red cube"),
    ("An orange ball.", "orange ball"),
    ("twelve", "12"),
    ("07", "7"),
    ("What color is it?", "what colour is it"),
    ("  yes,  ", "yes"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


@given(st.text(max_size=40))
def test_normalise_is_idempotent(text):
    assert normalise(normalise(text)) == normalise(text)


@pytest.mark.parametrize("prediction, accepted, right", [
    ("Red.", ["red"], True),
    ("It was red", ["red"], True),
    ("red or blue", ["red"], False),  # names a competing colour
    ("Three", ["3"], True),
    ("I saw 3 balls", ["3"], True),
    ("3 or 4", ["3"], False),
    ("none", ["0", "none"], True),
    ("zero", ["0", "none"], True),
    ("Yes, I did.", ["yes"], True),
    ("yes no", ["yes"], False),
    ("the red cube", ["red cube", "cube", "red"], True),
    ("cube", ["red cube", "cube", "red"], True),
    ("the blue ball", ["red cube", "cube", "red"], False),
    ("red ball", ["red cube", "cube", "red"], False),  # names the other shape
    ("", ["red"], False),
    ("reddish", ["red"], False),  # whole words only
])
def test_match_free_text(prediction, accepted, right):
    assert match_free_text(prediction, accepted) is right


def test_match_choice_by_letter_and_by_text():
    choices = ["red cube", "blue ball", "green star"]
    assert match_choice("B", choices) == 1
    assert match_choice("(c)", choices) == 2
    assert match_choice("a.", choices) == 0
    assert match_choice("The blue ball came first", choices) == 1
    assert match_choice("A red cube", choices) == 0  # the article is not the letter A
    assert match_choice("red cube or blue ball", choices) is None
    assert match_choice("d", choices) is None


def test_is_correct_dispatches_on_question_kind():
    free = Question(id="f", topic="/c", time=1.0, question="Colour?", answers=("red",))
    mc = Question(id="m", topic="/c", time=1.0, question="First?", choices=("red cube", "blue ball"),
                  answer="blue ball")
    assert is_correct(free, "RED!") and not is_correct(free, "blue")
    assert is_correct(mc, "b") and is_correct(mc, "blue ball") and not is_correct(mc, "red cube")


def test_evidence_hit_and_when_scoring():
    from infinipot_eval.questions import Question
    from infinipot_eval.scoring import evidence_hit, score

    when = Question(id="w", topic="/c", time=30.0, question="When did you see the red cube?",
                    answers=("10.0-14.0 s",), tags=("when", "long_range"), evidence=((10.0, 14.0),))
    assert evidence_hit(when, [(14.4, 14.9, 0.6), (11.0, 11.5, 0.3)], 0.5) is True  # within one period
    assert evidence_hit(when, [(14.6, 15.1, 0.6), (11.0, 11.5, 0.3)], 0.5) is False  # only the strongest counts
    assert evidence_hit(when, [(9.0, 9.5, 0.9)], 0.5) is True and evidence_hit(when, [(8.0, 9.4, 1.0)], 0.5) is False
    assert evidence_hit(when, [], 0.5) is None
    no_spans = Question(id="c", topic="/c", time=30.0, question="What colour?", answers=("red",), tags=("colour",))
    assert evidence_hit(no_spans, [(1.0, 1.5, 1.0)], 0.5) is None
    assert score(when, "yes", True) and not score(when, "yes", False)  # a "when" naming no time: on evidence
    assert score(no_spans, "red", False) and not score(no_spans, "blue", True)  # others on their text


@pytest.mark.parametrize("text, times", [
    ("<12.5 seconds>", [12.5]),
    ("At 0:12.", [12.0]),
    ("Frame from 01:05", [65.0]),
    ("1:02:03", [3723.0]),
    ("about 12 s ago", [12.0]),
    ("2 minutes in", [120.0]),
    ("at 0:12 s and 40 seconds", [12.0, 40.0]),  # the clock form is read once
    ("the red cube", []),
    ("3 balls", []),  # a count is not a time
])
def test_spoken_times(text, times):
    from infinipot_eval.scoring import spoken_times

    assert spoken_times(text) == times


def test_a_when_answer_that_names_a_time_is_scored_on_that_time():
    """Qwen3-VL / SmolVLM2 read frame times and can say them: the text decides, with a documented slack."""
    from infinipot_eval.scoring import SPOKEN_TIME_TOLERANCE_S, score, spoken_time_hit

    when = Question(id="w", topic="/c", time=30.0, question="When did you see the red cube?",
                    answers=("10.0-14.0 s",), tags=("when",), evidence=((10.0, 14.0),))
    period = 0.5
    edge = 14.0 + period + SPOKEN_TIME_TOLERANCE_S
    assert spoken_time_hit(when, "<12.5 seconds>", period) is True
    assert spoken_time_hit(when, f"{edge:.1f} seconds", period) is True
    assert spoken_time_hit(when, f"{edge + 0.1:.1f} seconds", period) is False
    assert spoken_time_hit(when, "At 0:09.", period) is True and spoken_time_hit(when, "At 0:20.", period) is False
    assert spoken_time_hit(when, "at 12 s or at 25 s", period) is False  # one named time is wrong
    assert spoken_time_hit(when, "a red cube", period) is None
    # the spoken time overrides the evidence either way; no time named: the evidence decides
    assert score(when, "12 seconds", False, period) and not score(when, "25 seconds", True, period)
    assert score(when, "a while ago", True, period) and not score(when, "a while ago", False, period)
