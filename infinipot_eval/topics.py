"""Multi-topic evaluation: which camera topics of a question file are replayed, and one report entry per run.

Why: a question file may ask about several cameras (`Question.topic`), and the node keeps one memory per
camera. Evaluating only the file's default topic silently scored a part of the file. Here every topic the
questions name is replayed (each into a memory of its own, as the node does), and a question that cannot be
asked (its topic is not in the bag, or `--topic` picked another one) is named, never dropped unseen.

One report entry per policy x budget stays the unit of the report (table, plots, suite pooling): its
answers and accuracy cover every topic; its memory is the node's total over its cameras (at each stream
time the sum of each camera's latest KV bytes; the cap is the sum of the cameras' caps); `per_topic` holds
each camera's own entry (without the answer list, which the combined entry carries with a `topic` field),
present only when more than one topic was replayed (a single-topic entry is that topic's entry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bagio import BagError, list_image_topics
from .questions import Question, QuestionSet
from .replay import RunResult, StepRecord, summarise

__all__ = ["TopicPlan", "plan_topics", "merge_runs", "combined_entry"]


@dataclass(frozen=True)
class TopicPlan:
    """Topics to replay (with their message counts) and the questions that will not be asked, with why."""

    topics: dict[str, int]
    skipped: list[dict[str, str]]

    def warning(self) -> str | None:
        """One line naming every skipped question (None when none is skipped)."""
        if not self.skipped:
            return None
        names = ", ".join(f"{s['id']} ({s['topic']})" for s in self.skipped)
        return f"{len(self.skipped)} question(s) not asked: {names}"


def plan_topics(qset: QuestionSet, bag: str | Path, requested: str | None = None) -> TopicPlan:
    """Every topic the questions name (the file's `bag.topic` first, then in order of first appearance; the
    `bag.topic` alone when there are no questions), or only `requested`.

    A question whose topic is not an image topic of the bag, or not the requested one, is skipped (named
    in the plan). Raises `BagError` when nothing is left to replay or the requested topic is not in the bag.
    """
    available = {t.topic: t.count for t in list_image_topics(bag)}
    if requested is not None and requested not in available:
        raise BagError(f"{bag}: no image topic {requested!r} (image topics: {sorted(available)})")
    named = qset.topics
    if requested:
        wanted = [requested]
    else:
        wanted = ([qset.bag.topic] if qset.bag.topic in named or not named else []) + \
            [t for t in named if t != qset.bag.topic]
    topics = {t: available[t] for t in wanted if t in available}
    skipped = []
    for q in qset.questions:
        if q.topic not in topics:
            why = ("not an image topic of the bag" if q.topic not in available
                   else f"--topic {requested} was asked for")
            skipped.append({"id": q.id, "topic": q.topic, "reason": why})
    if not topics:
        raise BagError(f"{bag}: none of the question file's topics {wanted} is an image topic of the bag "
                       f"(image topics: {sorted(available)})")
    return TopicPlan(topics, skipped)


def _summed_steps(runs: list[RunResult]) -> list[StepRecord]:
    """The node's total memory over stream time: each camera's latest record, summed (RSS: the largest)."""
    events = sorted(((s.stream_s, k, s) for k, r in enumerate(runs) for s in r.steps), key=lambda e: e[:2])
    latest: dict[int, StepRecord] = {}
    out = []
    for stream_s, k, step in events:
        latest[k] = step
        now = list(latest.values())
        out.append(StepRecord(stream_s, sum(s.kv_bytes for s in now), sum(s.tokens_held for s in now),
                              max(s.rss_bytes for s in now), sum(s.compressions for s in now),
                              sum(s.total_compression_s for s in now), math.nan))
    return out


def merge_runs(runs: list[RunResult]) -> RunResult:
    """One `RunResult` for the node's cameras together (a single run is returned as it is)."""
    if len(runs) == 1:
        return runs[0]
    caps = [r.cap_bytes for r in runs]
    stats = {key: sum(r.final_stats.get(key, 0) for r in runs)
             for key in ("compressions", "tokens_evicted", "total_compression_s")}
    stats["mean_compression_s"] = stats["total_compression_s"] / stats["compressions"] if stats["compressions"] else 0.0
    sampled = sum(r.frames_sampled for r in runs)
    per_frame = [(summarise(r, include_answers=False)["ingest_ms_per_frame"], r.frames_sampled) for r in runs]
    weighted = [(ms, n) for ms, n in per_frame if ms is not None and n]
    ingest = sum(ms * n for ms, n in weighted) / sum(n for _, n in weighted) if weighted else None
    return RunResult(
        spec=runs[0].spec, steps=_summed_steps(runs),
        answers=sorted((a for r in runs for a in r.answers), key=lambda a: a.time),
        cap_bytes=None if None in caps else sum(caps), messages=sum(r.messages for r in runs),
        frames_sampled=sampled, frames_rejected=sum(r.frames_rejected for r in runs), final_stats=stats,
        frames_received=None if all(r.frames_received is None for r in runs)
        else sum(r.messages if r.frames_received is None else r.frames_received for r in runs),
        wall_s=sum(r.wall_s for r in runs), ingest_ms_per_frame=ingest)


def combined_entry(runs_by_topic: dict[str, RunResult], questions: tuple[Question, ...]) -> dict[str, Any]:
    """The report entry of one policy x budget over every replayed topic, with `per_topic` entries."""
    topic_of = {q.id: q.topic for q in questions}
    entry = summarise(merge_runs(list(runs_by_topic.values())))
    for answer in entry.get("answers", []):
        answer["topic"] = topic_of.get(answer["id"])
    entry["topics"] = list(runs_by_topic)
    if len(runs_by_topic) > 1:
        entry["per_topic"] = {t: summarise(r, include_answers=False) for t, r in runs_by_topic.items()}
    return entry
