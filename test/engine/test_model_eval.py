"""model_eval's colour split: the latest object's colour vs an older object's, the built-in model's weak spot."""
from __future__ import annotations

from pathlib import Path

from infinipot.adapters.loading import load_adapter
from infinipot_train.model_eval import colour_target, evaluate
from infinipot_eval.question_gen import make_questions
from infinipot_eval.world import World

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "infinipot-tiny-qwen2vl"


def test_colour_target_tells_the_latest_object_from_an_older_one() -> None:
    world = next(w for w in (World(seed=s, seconds=60.0, fps=10.0, size=56) for s in range(40))
                 if len({e.shape for e in w.events}) >= 3)
    targets = set()
    for q in make_questions(world, per_checkpoint=2, kinds=("colour", "presence")) + make_questions(world, kinds=("colour",)):
        target = colour_target(world, q)
        if q.kind != "colour":
            assert target == ""
            continue
        past = world.events_before(q.time)
        asked = [e for e in past if q.question.rstrip("?").endswith(e.shape)]
        assert asked, "the asked shape was seen"
        assert (target == "latest") == (asked[-1] is past[-1])
        targets.add(target)
    assert targets == {"latest", "older"}


def test_report_splits_every_colour_question(tmp_path) -> None:
    report = evaluate(load_adapter(str(CHECKPOINT)), [4, 5], seconds=30.0, size=56, kinds=("colour",))
    summary = report.as_dict()
    split = summary["colour_by_target"]
    assert set(split) <= {"latest", "older"} and split
    assert sum(s["total"] for s in split.values()) == summary["per_kind"]["colour"]["total"]
    assert sum(s["right"] for s in split.values()) == summary["per_kind"]["colour"]["right"]
