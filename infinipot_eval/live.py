"""Live replay: the real node in its own process, the bag played to it, questions asked on /ask_video.

Why besides the offline replay: it tests what a robot runs (subscriptions, QoS, the latest-wins queue, the
worker thread, the service). Two modes:

- real time (default): the bag plays with its timing × rate; questions are sent (asynchronously) when the
  player reaches their stream time, so playback never waits for an answer, as on a robot. Latencies are
  realistic; what the node remembers depends on what it could keep up with (its queue drops frames).
- lockstep: playback is paced by the node (never a lost frame, checked) and pauses before each question
  until the node has taken every frame it sampled so far (`lockstep.NodeMonitor`). The question is asked
  at exactly the point of the stream where the offline replay asks it, so with a deterministic model the
  answers are the offline ones: the test that the ROS path (transport, conversion, sampling, queue, worker)
  changes nothing.

Answers are scored and reported exactly like the offline ones (`replay.summarise`). Memory over time comes
from the node's `~/cache_stats`, RSS from the node process, ingest time per frame from the worker's busy
time in `/diagnostics` (`_ingest_ms_per_frame`).

Each policy × budget gets a fresh node process with `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` and a
`ROS_DOMAIN_ID` of its own, so parallel runs (tests, other users) do not see each other.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import psutil

from .lockstep import LockstepError, NodeMonitor
from .questions import Question, QuestionSet
from .replay import AnswerRecord, NodeFrameSteps, RunResult, RunSpec, StepRecord, run_specs
from .scoring import evidence_hit, score
from .topics import combined_entry, plan_topics

__all__ = ["LiveError", "LockstepError", "node_command", "run_live", "evaluate_live"]

REPO_ROOT = Path(__file__).resolve().parent.parent
#: lockstep waits on ~/cache_stats, so it is published often (the node's minimum period)
LOCKSTEP_STATS_PERIOD_S = 0.05
#: lockstep lets the player run this many sampled frames ahead of the worker (none is ever dropped)
LOCKSTEP_QUEUE_SIZE = 16
#: camera QoS kinds (the node's `image_qos` parameter; the bag player publishes with the same kind)
IMAGE_QOS_KINDS = ("sensor_data", "reliable")


def default_image_qos(lockstep: bool) -> str:
    """Lockstep promises that no frame is lost, which only a reliable link can keep: on best effort a burst
    of large frames (raw 640x480 is 900 KB each) may never arrive, and lockstep then waits for it in vain.
    Real time keeps the robot's default (sensor data, best effort), so its losses are the robot's."""
    return "reliable" if lockstep else "sensor_data"


class LiveError(RuntimeError):
    """The node did not come up, or died during the run."""


def node_command(spec: RunSpec, *, topic: str, model: str, sample_hz: float, max_new_tokens: int,
                 stats_period_s: float = 0.25, queue_size: int | None = None, dtype: str = "float32",
                 device: str = "cpu", image_qos: str = "sensor_data") -> list[str]:
    """The node's command line for one run (parameters as `--ros-args -p name:=value`)."""
    params: dict[str, Any] = {
        "model": model, "cameras": f"['{topic}']", "policy": spec.policy,
        "budget_tokens": 0 if spec.budget is None else spec.budget, "budget_mb": 0.0,
        "sample_rate_hz": float(sample_hz), "max_answer_tokens": int(max_new_tokens),
        "stats_period_s": float(stats_period_s), "dtype": dtype, "device": device, "image_qos": image_qos,
    }
    if queue_size is not None:
        params["queue_size"] = int(queue_size)
    cmd = [sys.executable, "-m", "infinipot_ros.node", "--ros-args"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def _domain_id() -> int:
    """A ROS domain id unlikely to collide with a parallel run (0..101 are the portable ids)."""
    return 20 + (os.getpid() + int(time.time())) % 80


def _stream(t: Any, first_stamp: float | None) -> float | None:
    """A header-stamp Time from the node → stream seconds (as offline); None when unset."""
    value = t.sec + t.nanosec * 1e-9
    if value <= 0:
        return None
    return value - first_stamp if first_stamp is not None and value >= first_stamp else value


@dataclass
class _Asked:
    """A question sent to /ask_video: when (stream seconds of the newest frame sent) and its reply."""

    question: Question
    asked_at_s: float
    future: Any


def _record(asked: _Asked, timeout_s: float, first_stamp: float | None,
            period: float = 0.5) -> tuple[AnswerRecord, float]:
    """Wait for one reply and score it; also returns the reply's latency_s (0 without a reply).

    The reply's evidence carries only each frame's start stamp, so a frame counts as [start, start]; the
    one-period slack of `evidence_hit` (`period`, seconds between sampled frames) covers the rest of it."""
    q, end = asked.question, time.monotonic() + timeout_s
    while not asked.future.done() and time.monotonic() < end:
        time.sleep(0.01)
    resp = asked.future.result() if asked.future.done() else None
    if resp is None or not resp.success:
        err = "timeout" if resp is None else resp.error_message
        return (AnswerRecord(q.id, q.question, q.time, asked.asked_at_s, q.tags, q.reference, "", False, None,
                             None, None, None, None, error=err), 0.0 if resp is None else float(resp.latency_s))
    starts = [_stream(t, first_stamp) for t in resp.evidence_stamps]
    evidence = tuple((s, s, float(w)) for s, w in zip(starts, resp.evidence_weights) if s is not None)
    hit = evidence_hit(q, evidence, period)
    return (AnswerRecord(q.id, q.question, q.time, asked.asked_at_s, q.tags, q.reference, resp.answer,
                         score(q, resp.answer, hit, period), resp.time_to_first_token_s * 1e3, resp.latency_s * 1e3,
                         int(resp.tokens_used), _stream(resp.memory_start, first_stamp),
                         _stream(resp.memory_end, first_stamp), evidence=evidence, evidence_hit=hit),
            float(resp.latency_s))


def _ingest_ms_per_frame(worker: dict[str, str], answer_s: float, frames: int) -> float | None:
    """Mean worker time per sampled frame: (worker busy time − time spent answering) / frames.

    Why this estimate: CacheStats has no per-frame ingest time, and `ingest_fps` or frames_ingested over
    wall time measure the input pacing (or lockstep waits), not the model. The worker's `busy_s` (in
    /diagnostics) is the time it spent on work items; subtracting the answers' `latency_s` (which includes
    any wait behind a frame, so slightly more than their worker time) leaves the frames' share. In lockstep
    questions never wait, so it matches the offline add_frame mean closely; in real time it is a lower bound.
    """
    try:
        busy = float(worker["busy_s"])
    except (KeyError, ValueError):
        return None
    if frames <= 0:
        return None
    return max(busy - answer_s, 0.0) / frames * 1e3


def run_live(bag: str | Path, topic: str, questions: list[Question], spec: RunSpec, *, model: str,
             sample_hz: float = 2.0, max_new_tokens: int = 16, rate: float = 1.0, lockstep: bool = False,
             startup_timeout_s: float = 120.0, answer_timeout_s: float = 60.0, sync_timeout_s: float = 60.0,
             domain_id: int | None = None, dtype: str = "float32", device: str = "cpu",
             image_qos: str | None = None) -> RunResult:
    """One live run: start the node, play the bag, ask the questions, collect answers and cache stats.

    Real time (default): the bag is played with its timing × `rate` and questions are sent without pausing
    playback, as on a robot; the node may drop frames when it falls behind (its queue is latest-wins).
    `lockstep=True`: the bag is played as fast as the node takes it, never faster (no frame lost: checked,
    `LockstepError` otherwise), and before a question playback pauses until the node has added every frame
    it sampled so far to its memory; the question is answered before playback resumes. With a
    deterministic model the answers then equal the offline replay's (`replay.replay`).
    `image_qos`: the node's camera QoS and the player's (None = `default_image_qos(lockstep)`).
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor

    from infinipot_ros.msg import CacheStats
    from infinipot_ros.srv import AskVideo

    from .bag_player import BagPlayer

    domain = _domain_id() if domain_id is None else domain_id
    image_qos = default_image_qos(lockstep) if image_qos is None else image_qos
    if image_qos not in IMAGE_QOS_KINDS:
        raise ValueError(f"image_qos must be one of {IMAGE_QOS_KINDS}, got {image_qos!r}")
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    cmd = node_command(spec, topic=topic, model=model, sample_hz=sample_hz, max_new_tokens=max_new_tokens,
                       dtype=dtype, device=device, image_qos=image_qos,
                       stats_period_s=LOCKSTEP_STATS_PERIOD_S if lockstep else 0.25,
                       queue_size=LOCKSTEP_QUEUE_SIZE if lockstep else None)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    context = rclpy.Context()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("infinipot_eval_driver", context=context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    result = RunResult(spec=spec)
    stream_now = [0.0]
    node_proc = psutil.Process(proc.pid)
    monitor = NodeMonitor()

    def on_stats(msg: CacheStats) -> None:
        monitor.on_stats(msg)
        if result.cap_bytes is None and msg.kv_cap_bytes:
            result.cap_bytes = int(msg.kv_cap_bytes)
        try:
            rss = int(node_proc.memory_info().rss)
        except psutil.Error:
            rss = 0
        result.steps.append(StepRecord(stream_now[0], int(msg.kv_bytes), int(msg.tokens_held), rss,
                                       int(msg.compressions), float(msg.mean_compression_s) * int(msg.compressions),
                                       math.nan))
        result.final_stats = {"compressions": int(msg.compressions), "tokens_evicted": int(msg.tokens_evicted),
                              "mean_compression_s": float(msg.mean_compression_s),
                              "total_compression_s": float(msg.mean_compression_s) * int(msg.compressions)}
        result.frames_received = int(msg.frames_received)
        result.frames_sampled = int(msg.frames_sampled)
        result.frames_rejected = int(msg.frames_rejected)

    node.create_subscription(CacheStats, "/infinipot/cache_stats", on_stats, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", monitor.on_diagnostics, 10)
    client = node.create_client(AskVideo, "/ask_video")
    pending = sorted((q for q in questions if q.topic == topic), key=lambda q: q.time)
    asked: list[_Asked] = []
    answer_s = [0.0]
    steps = NodeFrameSteps(sample_hz)  # lockstep: what the node must have sampled so far

    def send(q: Question, at: float) -> _Asked:
        req = AskVideo.Request(question=q.question, camera="", max_new_tokens=max_new_tokens)
        return _Asked(q, at, client.call_async(req))

    def collect(a: _Asked) -> None:
        record, latency = _record(a, answer_timeout_s, player.first_stamp, 1.0 / sample_hz if sample_hz > 0 else 0.0)
        result.answers.append(record)
        answer_s[0] += latency

    def ask_due(stream_s: float, _msg: Any = None) -> None:  # real time: send and go on
        stream_now[0] = stream_s
        while pending and pending[0].time < stream_s:
            asked.append(send(pending.pop(0), stream_s))

    def ask_rest() -> None:  # after the last message: the stream clock stays at that message's time
        while pending:
            asked.append(send(pending.pop(0), stream_now[0]))

    def ask_in_lockstep(stream_s: float) -> None:  # pause: catch up, ask, wait for the answer
        if not (pending and pending[0].time < stream_s):
            return
        monitor.wait_caught_up(player.published, steps.sampled, sync_timeout_s)
        while pending and pending[0].time < stream_s:
            collect(send(pending.pop(0), steps.last_sampled_s))

    def lockstep_hook(stream_s: float, msg: Any) -> None:
        stream_now[0] = stream_s
        ask_in_lockstep(stream_s)
        steps.offer(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg)
        monitor.wait_room(player.published, steps.sampled, sync_timeout_s)

    started = time.perf_counter()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not client.wait_for_service(timeout_sec=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LiveError(f"node did not offer /ask_video (exit code {proc.poll()}):\n"
                                f"{_drain(proc)}")
        player = BagPlayer(node, bag, [topic], rate, image_qos=image_qos)
        # frames sent before the subscription matches, or before the model is loaded, would be lost
        if not player.wait_for_subscribers(max(deadline - time.monotonic(), 1.0)):
            raise LiveError(f"the node did not subscribe to {topic}")
        try:
            monitor.wait_ready(max(deadline - time.monotonic(), 1.0))
        except LockstepError as exc:  # the model did not load: a start-up failure in either mode
            raise LiveError(f"node not ready: {exc}") from exc
        if lockstep:
            result.messages = player.play(before_publish=lockstep_hook, paced=False)
            final = monitor.wait_caught_up(player.published, steps.sampled, sync_timeout_s)
            ask_in_lockstep(math.inf)
            if final.received != result.messages or final.sampled != steps.sampled:  # wait_caught_up's promise
                raise LockstepError(f"published {result.messages}, expected {steps.sampled} sampled; node: "
                                    f"{final.describe()}")
        else:
            result.messages = player.play(before_publish=ask_due)
            time.sleep(0.5)
            ask_rest()
            for a in asked:
                collect(a)
        counters = monitor.counters
        frames = counters.sampled if counters else 0
        worker = _try(lambda: monitor.wait_next_worker(5.0), {})
        result.ingest_ms_per_frame = _ingest_ms_per_frame(worker, answer_s[0], frames)
    finally:
        result.wall_s = time.perf_counter() - started
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        _stop(proc)
    return result


def _try(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except LockstepError:
        return default


def _drain(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return ""
    out = proc.stdout.read() if proc.stdout else ""
    return out[-3000:]


def _stop(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGINT (the node shuts down cleanly), then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def evaluate_live(bag: str | Path, qset: QuestionSet, *, policies: list[str], budgets: list[int], model: str,
                  topic: str | None = None, sample_hz: float = 2.0, max_new_tokens: int = 16, rate: float = 1.0,
                  lockstep: bool = False, progress: bool = True, dtype: str = "float32",
                  device: str = "cpu", image_qos: str | None = None) -> list[dict[str, Any]]:
    """Every policy × budget through the live node; report entries as in the offline evaluation.

    Every topic of the question file (or only `topic`) is played to a node of its own, one after the other
    (the node keeps an independent memory per camera, so this is what one node with all cameras remembers),
    and scored into one entry per policy × budget (`topics.combined_entry`)."""
    plan = plan_topics(qset, bag, topic)
    results = []
    for spec in run_specs(policies, budgets):
        runs = {}
        for topic_name in plan.topics:
            if progress:
                print(f"live run {spec.label} {topic_name} ...", file=sys.stderr)
            runs[topic_name] = run_live(bag, topic_name, list(qset.questions), spec, model=model,
                                        sample_hz=sample_hz, dtype=dtype, device=device,
                                        max_new_tokens=max_new_tokens, rate=rate, lockstep=lockstep,
                                        image_qos=image_qos)
        results.append(combined_entry(runs, qset.questions))
    return results
