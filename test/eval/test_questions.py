"""The question file format: good files load and round-trip, bad files fail naming the id and field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from infinipot_eval.questions import QuestionFileError, load_questions, questions_from_dict, save_questions

GOOD = {
    "version": 1,
    "bag": {"topic": "/camera/image_raw", "fps": 10, "seconds": 60, "seed": 3, "size": 112},
    "questions": [
        {"id": "late", "topic": "/camera/image_raw", "time": 50, "question": "What colour was the cube?",
         "answers": ["red"], "tags": ["colour", "long_range"], "evidence": [[3.0, 7.5]]},
        {"id": "mc", "time": 20.5, "question": "Which came first, the red cube or the blue ball?",
         "choices": ["red cube", "blue ball"], "answer": "red cube", "tags": ["order", "recent"]},
        {"id": 7, "topic": "/camera/right", "time": 0, "question": "Did you see a ball?", "answers": ["no"]},
    ],
}


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_good_file_loads_sorted_with_defaults(tmp_path):
    qset = load_questions(_write(tmp_path, GOOD))
    assert [q.id for q in qset] == ["7", "mc", "late"]  # sorted by time; numeric id kept as a name
    mc = qset.questions[1]
    assert mc.is_multiple_choice and mc.answer == "red cube" and mc.topic == "/camera/image_raw"
    assert qset.questions[2].evidence == ((3.0, 7.5),)
    assert qset.bag.seed == 3 and qset.bag.extra == {"size": 112}
    assert qset.topics == ("/camera/right", "/camera/image_raw")
    assert qset.questions[0].tags == ()


def test_save_load_round_trip(tmp_path):
    qset = load_questions(_write(tmp_path, GOOD))
    again = load_questions(save_questions(qset, tmp_path / "out" / "again.yaml"))
    assert again == qset


def _broken(path: list, value=None, delete: bool = False) -> dict:
    doc = copy.deepcopy(GOOD)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize("doc, needles", [
    (_broken(["questions", 0, "time"], delete=True), ["'late'", "'time'", "missing"]),
    (_broken(["questions", 0, "time"], -1), ["'late'", "'time'"]),
    (_broken(["questions", 0, "time"], "soon"), ["'late'", "'time'"]),
    (_broken(["questions", 0, "time"], 61), ["'late'", "after the end"]),
    (_broken(["questions", 0, "choices"], ["a", "b"]), ["'late'", "exactly one of"]),
    (_broken(["questions", 0, "answers"], []), ["'late'", "'answers'"]),
    (_broken(["questions", 0, "answers"], ["red", "red"]), ["'late'", "duplicates"]),
    (_broken(["questions", 1, "answer"], "green ring"), ["'mc'", "'answer'", "not one of the choices"]),
    (_broken(["questions", 1, "choices"], ["only one"]), ["'mc'", "'choices'"]),
    (_broken(["questions", 1, "question"], "  "), ["'mc'", "'question'"]),
    (_broken(["questions", 1, "tag"], ["x"]), ["'mc'", "unknown field", "tag"]),
    (_broken(["questions", 1, "tags"], "order"), ["'mc'", "'tags'"]),
    (_broken(["questions", 1, "topic"], "camera"), ["'mc'", "'topic'", "absolute"]),
    (_broken(["questions", 0, "evidence"], [[5, 1]]), ["'late'", "'evidence'"]),
    (_broken(["questions", 1, "id"], "late"), ["'late'", "duplicate"]),
    (_broken(["questions", 1, "id"], ""), ["#1", "'id'"]),
    (_broken(["version"], 2), ["'version'"]),
    (_broken(["bag"], delete=True), ["'bag'"]),
    (_broken(["bag", "fps"], "fast"), ["'bag'", "'fps'"]),
    (_broken(["questions"], {"a": 1}), ["'questions'"]),
    (_broken(["extra"], 1), ["unknown key"]),
])
def test_bad_files_name_the_question_and_field(tmp_path, doc, needles):
    with pytest.raises(QuestionFileError) as info:
        load_questions(_write(tmp_path, doc))
    message = str(info.value)
    assert str(tmp_path / "q.yaml") in message
    for needle in needles:
        assert needle in message, message


def test_not_yaml_and_not_a_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("questions: [unclosed", encoding="utf-8")
    with pytest.raises(QuestionFileError, match="not valid YAML"):
        load_questions(path)
    with pytest.raises(QuestionFileError, match="top level"):
        questions_from_dict(["a list"])
    with pytest.raises(QuestionFileError, match="cannot read"):
        load_questions(tmp_path / "missing.yaml")
