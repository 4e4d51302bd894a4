"""Live replay: the real node in its own process, the bag played to it, questions asked on /ask_video.

Why besides the offline replay: it tests what a robot runs (subscriptions, QoS, the latest-wins queue, the
worker thread, the service) and measures latency under real pacing. Questions are sent (asynchronously)
when the player reaches their stream time, so playback never waits for an answer, as on a robot; answers
are scored and reported exactly like the offline ones (`replay.summarise`). Memory over time comes from
the node's `~/cache_stats`, RSS from the node process.

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
from typing import Any

import psutil

from .bagio import list_image_topics
from .questions import Question, QuestionSet
from .replay import AnswerRecord, RunResult, RunSpec, StepRecord, run_specs, summarise
from .scoring import is_correct

__all__ = ["LiveError", "node_command", "run_live", "evaluate_live"]

REPO_ROOT = Path(__file__).resolve().parent.parent


class LiveError(RuntimeError):
    """The node did not come up, or died during the run."""


def node_command(spec: RunSpec, *, topic: str, model: str, sample_hz: float, max_new_tokens: int,
                 stats_period_s: float = 0.25) -> list[str]:
    """The node's command line for one run (parameters as `--ros-args -p name:=value`)."""
    params = {
        "model": model, "cameras": f"['{topic}']", "policy": spec.policy,
        "budget_tokens": 0 if spec.budget is None else spec.budget, "budget_mb": 0.0,
        "sample_rate_hz": float(sample_hz), "max_answer_tokens": int(max_new_tokens),
        "stats_period_s": float(stats_period_s),
    }
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


def run_live(bag: str | Path, topic: str, questions: list[Question], spec: RunSpec, *, model: str,
             sample_hz: float = 2.0, max_new_tokens: int = 16, rate: float = 1.0, startup_timeout_s: float = 120.0,
             answer_timeout_s: float = 60.0, domain_id: int | None = None) -> RunResult:
    """One live run: start the node, play the bag, ask on time, collect answers and cache stats."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    from infinipot_ros.msg import CacheStats
    from infinipot_ros.srv import AskVideo

    from .bag_player import BagPlayer

    domain = _domain_id() if domain_id is None else domain_id
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen(node_command(spec, topic=topic, model=model, sample_hz=sample_hz,
                                         max_new_tokens=max_new_tokens), cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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

    def on_stats(msg: CacheStats) -> None:
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
        result.frames_sampled = int(msg.frames_ingested)
        result.frames_rejected = int(msg.frames_rejected)

    node.create_subscription(CacheStats, "/infinipot/cache_stats", on_stats, 50)
    client = node.create_client(AskVideo, "/ask_video")
    pending = sorted((q for q in questions if q.topic == topic), key=lambda q: q.time)
    asked: list[tuple[Question, float, Any]] = []

    def ask_due(stream_s: float) -> None:
        stream_now[0] = stream_s
        while pending and pending[0].time < stream_s:
            q = pending.pop(0)
            req = AskVideo.Request(question=q.question, camera="", max_new_tokens=max_new_tokens)
            asked.append((q, stream_s, client.call_async(req)))

    started = time.perf_counter()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not client.wait_for_service(timeout_sec=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LiveError(f"node did not offer /ask_video (exit code {proc.poll()}):\n"
                                f"{_drain(proc)}")
        player = BagPlayer(node, bag, [topic], rate)
        time.sleep(1.0)  # let the node's subscription match the new publisher before the first frame
        result.messages = player.play(before_publish=ask_due)
        time.sleep(0.5)
        ask_due(math.inf)
        for q, at, future in asked:
            end = time.monotonic() + answer_timeout_s
            while not future.done() and time.monotonic() < end:
                time.sleep(0.02)
            resp = future.result() if future.done() else None
            if resp is None or not resp.success:
                err = "timeout" if resp is None else resp.error_message
                result.answers.append(AnswerRecord(q.id, q.question, q.time, at, q.tags, q.reference, "", False,
                                                   None, None, None, None, None, error=err))
            else:
                result.answers.append(AnswerRecord(
                    q.id, q.question, q.time, at, q.tags, q.reference, resp.answer, is_correct(q, resp.answer),
                    resp.time_to_first_token_s * 1e3, resp.latency_s * 1e3, int(resp.tokens_used),
                    _stream(resp.memory_start, player.first_stamp), _stream(resp.memory_end, player.first_stamp)))
    finally:
        result.wall_s = time.perf_counter() - started
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        _stop(proc)
    return result


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
                  progress: bool = True) -> list[dict[str, Any]]:
    """Every policy × budget through the live node; report entries as in the offline evaluation."""
    topic = topic or qset.bag.topic
    known = {t.topic for t in list_image_topics(bag)}
    if topic not in known:
        raise ValueError(f"{bag}: no image topic {topic!r} (image topics: {sorted(known)})")
    results = []
    for spec in run_specs(policies, budgets):
        if progress:
            print(f"live run {spec.label} ...", file=sys.stderr)
        run = run_live(bag, topic, list(qset.questions), spec, model=model, sample_hz=sample_hz,
                       max_new_tokens=max_new_tokens, rate=rate)
        results.append(summarise(run))
    return results
