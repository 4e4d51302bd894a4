"""Lockstep live replay (real node process, rclpy, /ask_video) gives the offline replay's answers exactly.

The tiny builtin model has random weights, so its answers are gibberish, but they are a deterministic
function of exactly which frames are in the memory (and of how compression shaped it): one frame lost,
sampled differently, ingested after the question or compressed differently changes the generated tokens or
the memory span. So equal texts, token counts and spans for every question, with compressions on the way,
is the test that the ROS path changes nothing.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from infinipot_eval.lockstep import LockstepError, NodeMonitor
from infinipot_eval.live import run_live
from infinipot_eval.replay import RunSpec, replay, summarise
from infinipot_eval.synth_cli import synthesize

MODEL = "builtin:tiny-qwen2-vl"


def _stats(received, sampled, ingested, dropped=None, rejected=0, depth=0, capacity=16, camera="camera"):
    """A CacheStats look-alike (dropped defaults to the frames the sampler skipped)."""
    dropped = received - sampled if dropped is None else dropped
    return SimpleNamespace(camera=camera, frames_received=received, frames_sampled=sampled,
                           frames_ingested=ingested, frames_dropped=dropped, frames_rejected=rejected,
                           queue_depth=depth, queue_capacity=capacity)


def test_caught_up_needs_two_consecutive_stats_with_exact_counts():
    m = NodeMonitor()
    m.on_stats(_stats(10, 5, 4))
    with pytest.raises(LockstepError, match="timed out"):  # one message is not enough (callback race)
        m.wait_caught_up(published=10, expected=5, timeout_s=0.05)
    m.on_stats(_stats(10, 5, 4))
    assert m.wait_caught_up(published=10, expected=5, timeout_s=0.05).seq == 2
    m.on_stats(_stats(11, 6, 4, depth=1))  # a frame still queued: a question now would overtake it
    m.on_stats(_stats(11, 6, 4, depth=1))
    with pytest.raises(LockstepError, match="timed out"):
        m.wait_caught_up(published=11, expected=6, timeout_s=0.05)
    with pytest.raises(LockstepError, match="more than was sent"):  # the node sampled a frame offline did not
        m.wait_caught_up(published=11, expected=5, timeout_s=0.05)


def test_lost_frames_fail_loudly_and_room_bounds_the_queue():
    m = NodeMonitor()
    m.on_stats(_stats(20, 10, 6, dropped=11))  # 10 skipped by the sampler + 1 dropped from the queue
    with pytest.raises(LockstepError, match="lost 1 frame"):
        m.wait_room(published=20, expected=10, timeout_s=0.05)
    m = NodeMonitor()
    m.on_stats(_stats(20, 10, 2, capacity=8))
    with pytest.raises(LockstepError, match="timed out"):  # 11 - 2 > 8 frames would not fit in the queue
        m.wait_room(published=20, expected=11, timeout_s=0.05)
    assert m.wait_room(published=20, expected=10, timeout_s=0.05).ingested == 2
    with pytest.raises(LockstepError, match="timed out"):  # 4 messages not yet received: pause the player
        m.wait_room(published=24, expected=10, timeout_s=0.05)


def _fingerprint(run) -> list[tuple]:
    return [(a.prediction, a.tokens_used, round(a.memory_start, 4), round(a.memory_end, 4)) for a in run.answers]


@pytest.mark.timeout(300)
def test_lockstep_live_answers_equal_offline(tmp_path, tiny_adapter, monkeypatch):
    bag = tmp_path / "same"
    _, qset = synthesize(bag, seconds=30, seed=5, fps=4, size=48, max_questions=8)
    questions = list(qset.questions)
    assert len(questions) >= 4
    spec = RunSpec("infinipot", 24)
    offline = replay(bag, qset.bag.topic, questions, tiny_adapter, spec, sample_hz=2.0, max_new_tokens=6)
    live = run_live(bag, qset.bag.topic, questions, spec, model=MODEL, sample_hz=2.0, max_new_tokens=6,
                    lockstep=True)

    assert offline.final_stats["compressions"] >= 3  # the budget is small enough to compress, repeatedly
    assert live.messages == offline.messages == 120
    assert live.frames_sampled == offline.frames_sampled == 60
    assert live.final_stats["compressions"] == offline.final_stats["compressions"]
    assert [a.id for a in live.answers] == [a.id for a in offline.answers] == [q.id for q in questions]
    for off, on in zip(offline.answers, live.answers):
        assert off.error is None and on.error is None, (off, on)
        assert on.prediction == off.prediction, (off.id, off.prediction, on.prediction)
        assert on.tokens_used == off.tokens_used
        assert on.asked_at_s == pytest.approx(off.asked_at_s, abs=1e-6)
        # spans: stream seconds both (live: absolute header stamps through builtin_interfaces/Time)
        assert on.memory_start == pytest.approx(off.memory_start, abs=1e-5)
        assert on.memory_end == pytest.approx(off.memory_end, abs=1e-5)
        # the reply's evidence: the same frames (start stamps) and weights as the engine's, strongest first
        assert [e[0] for e in on.evidence] == pytest.approx([e[0] for e in off.evidence], abs=1e-5)
        assert [e[2] for e in on.evidence] == pytest.approx([e[2] for e in off.evidence], abs=1e-5)
    assert len({a.prediction for a in offline.answers}) > 1  # the texts do depend on the memory

    # negative control: the same comparison sees one lost frame (the 7th sampled one, skipped offline)
    import infinipot_eval.replay as replay_mod

    offer, kept = replay_mod.NodeFrameSteps.offer, [0]

    def offer_losing_one(self, stamp, msg):
        rgb, restarted = offer(self, stamp, msg)
        kept[0] += rgb is not None
        return (None if kept[0] == 7 and rgb is not None else rgb), restarted

    monkeypatch.setattr(replay_mod.NodeFrameSteps, "offer", offer_losing_one)
    lossy = replay(bag, qset.bag.topic, questions, tiny_adapter, spec, sample_hz=2.0, max_new_tokens=6)
    assert _fingerprint(lossy) != _fingerprint(live) == _fingerprint(offline)

    summary = summarise(live)
    assert summary["ingest_ms_per_frame"] is not None and summary["ingest_ms_per_frame"] > 0
    assert summary["peak_kv_bytes"] <= summary["cap_bytes"]


def test_cli_refuses_lockstep_without_live(tmp_path, capsys):
    from infinipot_eval import eval_cli

    with pytest.raises(SystemExit):
        eval_cli.main(["--bag", str(tmp_path), "--report", str(tmp_path / "r"), "--lockstep"])
    assert "--lockstep needs --live" in capsys.readouterr().err
