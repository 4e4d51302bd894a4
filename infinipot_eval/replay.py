"""Offline replay: feed a rosbag straight into a `StreamingSession` and ask the questions on time.

Why offline and ROS-free: it is fast (no real-time pacing), deterministic (same bag, same questions, same
answers) and runs anywhere. It matches the node because it uses the node's own pieces: the same message
conversion (`infinipot_ros.conversion`), the same stamp-based sampler (`infinipot.sampling`) and the same
engine. A question with time T is asked after every message with stream time <= T has been handled and
before the first later one, which is what a live driver asking at T would get with an idle node.

Stream time is the header stamp minus the topic's first header stamp; frames are given to the engine with
that stream time, so `Answer.memory_start/end` are stream seconds too.

The session is configured exactly as the node configures it for the same parameters (`session_config`:
`NodeSettings.session_config_kwargs` over the node's declared defaults, with the run's policy, budget and
`max_new_tokens` as the node's `max_answer_tokens`), so the store's reserve and therefore the hard cap are
the node's: the same budget_tokens gives the same cap offline and live.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import psutil

from infinipot.errors import InfiniPotError
from infinipot.session import SessionConfig, StreamingSession
from infinipot_ros.conversion import ImageConversionError, message_to_rgb
from infinipot_ros.parameters import NodeSettings, default_of
from infinipot.sampling import STAMP_RESTART_S, FrameSampler

from .bagio import iter_image_messages
from .questions import Question
from .scoring import evidence_hit, score

__all__ = ["ReplayError", "RunSpec", "StepRecord", "AnswerRecord", "RunResult", "NodeFrameSteps", "run_specs",
           "replay", "summarise", "evidence_hit_rates", "session_config", "DEFAULT_MAX_NEW_TOKENS"]

#: Answer length limit of the evaluation tools by default: the node's `max_answer_tokens` default, which
#: also sizes the store's reserve (so the defaults give the node's cap).
DEFAULT_MAX_NEW_TOKENS: int = default_of("max_answer_tokens")


class ReplayError(RuntimeError):
    """A bag that cannot be replayed as a single stream (e.g. header stamps that go backwards)."""


@dataclass(frozen=True)
class RunSpec:
    """One evaluated configuration: a policy and its threshold budget in tokens (None = uncapped)."""

    policy: str
    budget: int | None

    @property
    def label(self) -> str:
        return self.policy if self.budget is None else f"{self.policy}@{self.budget}"


def session_config(spec: RunSpec, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   options: dict[str, Any] | None = None) -> SessionConfig:
    """The `SessionConfig` the node builds with `policy`, `budget_tokens` = spec.budget (budget_mb 0),
    `max_answer_tokens` = max_new_tokens and every other parameter at its default; `options` override
    SessionConfig fields. ValueError for values the node would refuse."""
    settings = NodeSettings.from_values({"policy": spec.policy, "budget_tokens": spec.budget or 0, "budget_mb": 0.0,
                                         "max_answer_tokens": int(max_new_tokens)})
    return SessionConfig(**{**settings.session_config_kwargs(), **(options or {})})


def run_specs(policies: Iterable[str], budgets: Iterable[int]) -> list[RunSpec]:
    """policy × budget, except "full", which ignores budgets and runs once with budget None."""
    budgets = list(budgets)
    specs: list[RunSpec] = []
    for policy in policies:
        if policy == "full":
            specs.append(RunSpec("full", None))
        else:
            if not budgets:
                raise ValueError(f"policy {policy!r} needs at least one budget")
            specs.extend(RunSpec(policy, b) for b in budgets)
    return list(dict.fromkeys(specs))


@dataclass(frozen=True)
class StepRecord:
    """The session after one sampled frame was handed to it."""

    stream_s: float
    kv_bytes: int
    tokens_held: int
    rss_bytes: int
    compressions: int
    total_compression_s: float
    ingest_ms: float  # wall time of this add_frame call (encoding happens every frames_per_step frames)


@dataclass(frozen=True)
class AnswerRecord:
    id: str
    question: str
    time: float  # stream time the question is due
    asked_at_s: float  # stream time of the newest frame handed to the session when it was asked
    tags: tuple[str, ...]
    reference: str
    prediction: str
    correct: bool
    ttft_ms: float | None
    answer_ms: float | None
    tokens_used: int | None
    memory_start: float | None
    memory_end: float | None
    error: str | None = None
    #: the answer's evidence frames, strongest first: [start, end, weight] in stream seconds
    evidence: tuple[tuple[float, float, float], ...] = ()
    #: strongest evidence frame inside one of the question's evidence spans (± one sampling period);
    #: None when the question has no spans or the answer no evidence (scoring.evidence_hit)
    evidence_hit: bool | None = None


@dataclass
class RunResult:
    spec: RunSpec
    steps: list[StepRecord] = field(default_factory=list)
    answers: list[AnswerRecord] = field(default_factory=list)
    cap_bytes: int | None = None
    messages: int = 0
    frames_sampled: int = 0
    frames_rejected: int = 0
    final_stats: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    #: mean ingest wall time per sampled frame when it is not measured per step (live runs); None = from steps
    ingest_ms_per_frame: float | None = None
    #: messages that reached the node (live runs, from ~/cache_stats); None = every message (offline)
    frames_received: int | None = None
    #: what the memory held at the end of the stream: [start, end, tokens kept] per held frame, oldest first
    memory_frames: list[list[float]] = field(default_factory=list)
    #: evidence spans of the questions asked on this stream (for the memory timeline plot)
    question_spans: list[list[float]] = field(default_factory=list)


class NodeFrameSteps:
    """The node's per-message frame steps (`InfiniPotNode._on_image`): peek, convert, commit.

    Why a class: the offline replay feeds what it returns to the session, and the lockstep live driver runs
    the same steps on the messages it publishes to know exactly how many frames the node must have sampled
    (so "caught up" is an exact count, not a guess). The order matters: a malformed frame is not committed,
    so it does not take a good frame's sampling slot.
    """

    def __init__(self, sample_hz: float, stamp_restart_s: float = STAMP_RESTART_S) -> None:
        self._sampler = FrameSampler(sample_hz, stamp_restart_s=stamp_restart_s)
        self.first_stamp: float | None = None
        self.sampled = 0  # frames the node hands to its worker
        self.rejected = 0  # frames the sampler kept but that do not convert
        self.last_sampled_s = 0.0  # stream time of the newest sampled frame

    def offer(self, stamp: float, msg: Any) -> tuple[np.ndarray | None, bool]:
        """(RGB frame or None when not sampled or malformed, whether the stamps went backwards)."""
        if self.first_stamp is None:
            self.first_stamp = stamp
        decision = self._sampler.peek(stamp)
        if not decision.keep:
            self._sampler.commit(stamp, decision)
            return None, False
        try:
            rgb = message_to_rgb(msg)
        except ImageConversionError:
            self.rejected += 1
            return None, decision.restarted
        self._sampler.commit(stamp, decision)
        self.sampled += 1
        self.last_sampled_s = stamp - self.first_stamp
        return rgb, decision.restarted


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _ask(session: StreamingSession, q: Question, asked_at: float, max_new_tokens: int,
         period: float) -> AnswerRecord:
    try:
        ans = session.ask(q.question, max_new_tokens)
    except InfiniPotError as exc:  # no frame yet, question too long, ...: scored wrong, run goes on
        return AnswerRecord(q.id, q.question, q.time, asked_at, q.tags, q.reference, "", False, None, None, None,
                            None, None, error=f"{type(exc).__name__}: {exc}")
    evidence = tuple((e.start, e.end, e.weight) for e in ans.evidence)
    hit = evidence_hit(q, evidence, period)
    correct = score(q, ans.text, hit, period)
    return AnswerRecord(q.id, q.question, q.time, asked_at, q.tags, q.reference, ans.text, correct,
                        ans.ttft_s * 1e3, ans.latency_s * 1e3, ans.tokens_used, ans.memory_start, ans.memory_end,
                        evidence=evidence, evidence_hit=hit)


def replay(bag_dir: str | Path, topic: str, questions: Iterable[Question], adapter: Any, spec: RunSpec, *,
           sample_hz: float = 2.0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, record_every: int = 1,
           session_options: dict[str, Any] | None = None,
           on_message: Callable[[], None] | None = None) -> RunResult:
    """Replay one topic of a bag into a fresh session configured by `spec`; ask `questions` on time.

    Records a `StepRecord` after every `record_every`-th sampled frame (and always the last one).
    `on_message` is called once per bag message (progress bars).
    """
    if record_every < 1:
        raise ValueError("record_every must be >= 1")
    pending = sorted((q for q in questions if q.topic == topic), key=lambda q: q.time)
    session = StreamingSession(adapter, session_config(spec, max_new_tokens, session_options))
    cap = session.stats().kv_cap_bytes
    result = RunResult(spec=spec, cap_bytes=cap or None)
    result.question_spans = [[lo, hi] for q in pending for lo, hi in q.evidence]
    period = 1.0 / sample_hz if sample_hz > 0 else 0.0
    steps = NodeFrameSteps(sample_hz)
    k = 0
    started = time.perf_counter()
    last_step: StepRecord | None = None
    for stamp, msg in iter_image_messages(bag_dir, topic):
        result.messages += 1
        if on_message is not None:
            on_message()
        stream_s = stamp - (stamp if steps.first_stamp is None else steps.first_stamp)
        while pending and pending[0].time < stream_s:
            result.answers.append(_ask(session, pending.pop(0), steps.last_sampled_s, max_new_tokens, period))
        rgb, restarted = steps.offer(stamp, msg)
        if restarted:
            raise ReplayError(f"{bag_dir} {topic}: header stamps go backwards at message {result.messages}; "
                              "replay needs one monotonic stream (split the bag)")
        result.frames_rejected = steps.rejected
        if rgb is None:
            continue
        t0 = time.perf_counter()
        session.add_frame(rgb, stream_s)
        ingest_ms = (time.perf_counter() - t0) * 1e3
        result.frames_sampled += 1
        st = session.stats()
        last_step = StepRecord(stream_s, st.kv_bytes, st.tokens_held, _rss(), st.compressions,
                               st.total_compression_s, ingest_ms)
        k += 1
        if k % record_every == 0:
            result.steps.append(last_step)
    if last_step is not None and (not result.steps or result.steps[-1] is not last_step):
        result.steps.append(last_step)
    result.memory_frames = [[h.start, h.end, h.tokens] for h in session.held_frames()]
    while pending:
        result.answers.append(_ask(session, pending.pop(0), steps.last_sampled_s, max_new_tokens, period))
    result.final_stats = session.stats().as_dict()
    result.wall_s = time.perf_counter() - started
    return result


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _p95(xs: list[float]) -> float | None:
    return float(np.percentile(xs, 95)) if xs else None


def evidence_hit_rates(answers: Iterable[Any]) -> tuple[float | None, dict[str, float]]:
    """(share of judged answers whose evidence hit, the same per tag); answers are AnswerRecords or their dicts.

    Judged = answered with evidence, about a question with evidence spans (`evidence_hit` not None)."""
    hits: list[bool] = []
    by_tag: dict[str, list[bool]] = {}
    for a in answers:
        hit = a.get("evidence_hit") if isinstance(a, dict) else a.evidence_hit
        if hit is None:
            continue
        hits.append(bool(hit))
        for tag in a["tags"] if isinstance(a, dict) else a.tags:
            by_tag.setdefault(tag, []).append(bool(hit))
    rate = sum(hits) / len(hits) if hits else None
    return rate, {tag: sum(v) / len(v) for tag, v in sorted(by_tag.items())}


def summarise(result: RunResult, *, include_answers: bool = True) -> dict[str, Any]:
    """The report.json entry of one run (field names are part of the report format, see docs/evaluation.md)."""
    answers = result.answers
    n = len(answers)
    by_tag: dict[str, list[bool]] = {}
    for a in answers:
        for tag in a.tags:
            by_tag.setdefault(tag, []).append(a.correct)
    ttft = [a.ttft_ms for a in answers if a.ttft_ms is not None]
    total = [a.answer_ms for a in answers if a.answer_ms is not None]
    ingest = [s.ingest_ms for s in result.steps if math.isfinite(s.ingest_ms)]
    stats = result.final_stats
    hit_rate, hit_by_tag = evidence_hit_rates(answers)
    out: dict[str, Any] = {
        "policy": result.spec.policy,
        "budget": result.spec.budget,
        "n_questions": n,
        "accuracy": (sum(a.correct for a in answers) / n) if n else None,
        "accuracy_by_tag": {tag: sum(v) / len(v) for tag, v in sorted(by_tag.items())},
        "n_by_tag": {tag: len(v) for tag, v in sorted(by_tag.items())},
        "evidence_hit_rate": hit_rate,
        "evidence_hit_rate_by_tag": hit_by_tag,
        "memory_timeline": {"at_s": result.steps[-1].stream_s if result.steps else 0.0,
                            "frames": [[round(v, 4) for v in f] for f in result.memory_frames],
                            "evidence_spans": result.question_spans},
        "peak_kv_bytes": max((s.kv_bytes for s in result.steps), default=0),
        "cap_bytes": result.cap_bytes,
        "kv_bytes_over_time": [[round(s.stream_s, 4), s.kv_bytes] for s in result.steps],
        "tokens_held_over_time": [[round(s.stream_s, 4), s.tokens_held] for s in result.steps],
        "rss_bytes_over_time": [[round(s.stream_s, 4), s.rss_bytes] for s in result.steps],
        "peak_rss_bytes": max((s.rss_bytes for s in result.steps), default=0),
        "ttft_ms_mean": _mean(ttft),
        "ttft_ms_p95": _p95(ttft),
        "answer_ms_mean": _mean(total),
        "answer_ms_p95": _p95(total),
        "ingest_ms_per_frame": (result.ingest_ms_per_frame if result.ingest_ms_per_frame is not None
                                else _mean(ingest)),
        "compressions": int(stats.get("compressions", 0)),
        "total_compression_s": float(stats.get("total_compression_s", 0.0)),
        "mean_compression_ms": float(stats.get("mean_compression_s", 0.0)) * 1e3,
        "tokens_evicted": int(stats.get("tokens_evicted", 0)),
        "messages": result.messages,
        "frames_received": result.messages if result.frames_received is None else result.frames_received,
        "frames_sampled": result.frames_sampled,
        "frames_rejected": result.frames_rejected,
        "stream_seconds": result.steps[-1].stream_s if result.steps else 0.0,
        "wall_s": result.wall_s,
        "errors": sum(1 for a in answers if a.error),
    }
    if include_answers:
        out["answers"] = [asdict(a) for a in answers]
    for key, value in list(out.items()):  # JSON has no NaN/inf
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
    return out
