"""`infinipot-stress`: run the node under load, bad input and concurrent questions, and measure it.

What it does: starts the node as its own process (so its RSS is the node's alone and a crash is seen as
a dead process, not a test exception), publishes `--cameras` synthetic streams at `--hz` from this
process (even-numbered cameras as raw `sensor_msgs/Image`, odd ones as JPEG `CompressedImage`), replaces a
`--malformed-share` of the messages with malformed ones (fault_injection.py; each is checked to be
unconvertible before it is sent), and starts `--clients` separate client *processes* that call
`/ask_video` in a loop. Every second it samples the node's RSS (psutil on the node pid), KV bytes and
queue depth (from `~/cache_stats`); at the end it writes a JSON summary (+ the time series) and a PNG.

Why the node runs with `validate_all_frames:=true`: by default the node converts only the frames its stamp
sampler keeps, so a malformed message between two sampling slots would be dropped unseen instead of
rejected, and `malformed_rejected` could not be compared with `malformed_sent`. With it, every message is
converted (the harder load on the subscription side) while the model ingests at a robot's usual rate
(`--sample-rate-hz`, default 2 per camera).

Transport: this tool publishes with a reliable QoS and by default starts the node with
`image_qos:=reliable` (depth 500), so every message reaches the node however busy it is. With
`--image-qos sensor_data` (the live-camera default: best effort, depth 5) messages can be lost before the
node sees them. The JSON therefore carries `frames_sent`, the node's own
`frames_received` and `transport_lost`; `malformed_rejected` equals `malformed_sent` exactly when
`transport_lost` is 0, and otherwise lies within `transport_lost` of it (`malformed_accounting` says
which case happened).

The hidden sub-command `infinipot-stress client ...` is one client process.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "NodeProcess",
    "main",
    "node_command",
    "percentile",
    "ros_env",
    "rss_growth",
    "run_stress",
]

REPO = Path(__file__).resolve().parents[1]

QUESTIONS = (
    "What is in front of the camera?",
    "Where did you last see the red cube?",
    "What colour was the ball?",
    "Did anything move in the last seconds?",
    "How many objects are visible?",
    "Describe the scene.",
)


# ----- processes -----------------------------------------------------------------------------------

def ros_env(domain: int) -> dict[str, str]:
    """Environment for a child: its own ROS domain, localhost-only discovery, unbuffered output."""
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1")


def node_command(ros_args: Sequence[str]) -> list[str]:
    """The node's command line (same interpreter, same package as this process)."""
    return [sys.executable, "-m", "infinipot_ros.node", "--ros-args", *ros_args]


class NodeProcess:
    """The node as a child process; stdout+stderr go to a file (a full pipe would block the node)."""

    def __init__(self, ros_args: Sequence[str], domain: int, env: dict[str, str] | None = None,
                 log_path: str | Path | None = None) -> None:
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="infinipot-node-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            node_command(ros_args), cwd=REPO, env={**ros_env(domain), **(env or {})},
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> tuple[int, float, str]:
        """Send `sig` and wait; returns (exit code, seconds to exit, output). Killed after `timeout`."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        elapsed = time.monotonic() - t0
        self._log.close()
        return int(self.proc.returncode), elapsed, self.output()


# ----- small statistics (pure, unit-tested) ----------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, linear interpolation), or None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def rss_growth(samples: Sequence[tuple[float, float]], seconds: float) -> tuple[float | None, str]:
    """(median RSS of the last window / median of the reference window, which windows were used).

    Runs of at least 3 minutes: last minute vs second minute (the first minute holds start-up growth:
    model load, allocator warm-up, the cache filling to its budget). Shorter runs: last third vs second
    third, for the same reason.
    """
    if seconds >= 180:
        ref, last, text = (60.0, 120.0), (seconds - 60.0, seconds), "last minute / second minute"
    else:
        third = seconds / 3
        ref, last = (third, 2 * third), (2 * third, seconds)
        text = "last third / second third (run shorter than 3 min)"
    ref_v = [r for t, r in samples if ref[0] <= t < ref[1]]
    last_v = [r for t, r in samples if last[0] <= t <= last[1] + 1.0]
    if not ref_v or not last_v:
        return None, text + " (not enough samples)"
    return statistics.median(last_v) / statistics.median(ref_v), text


# ----- messages ------------------------------------------------------------------------------------

@dataclass
class _Camera:
    """One published stream: its topic, kind and counters."""

    name: str
    topic: str
    compressed: bool
    sent: int = 0
    malformed: int = 0
    next_due: float = 0.0
    publisher: Any = None
    faults: dict[str, int] = field(default_factory=dict)


def _frames(count: int, height: int, width: int) -> list[np.ndarray]:
    """`count` frames of the synthetic world (every 2.5 s of it), resized to width x height."""
    from PIL import Image as PILImage

    from .synthetic_camera import make_world

    world = make_world(seed=0, rate_hz=4.0, size=max(height, width))
    return [np.asarray(PILImage.fromarray(world.frame(i * 10)).resize((width, height))) for i in range(count)]


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def _malformed_pool(compressed: bool, rgb: np.ndarray, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` malformed message field sets, each verified to be refused by the node's own conversion."""
    from types import SimpleNamespace

    from infinipot_ros.conversion import ImageConversionError, message_to_rgb
    from .malformed import malformed_compressed_fields, malformed_image_fields

    rng = np.random.default_rng(seed)
    jpeg, png = _encode(rgb, "JPEG"), _encode(rgb, "PNG")
    pool: list[dict[str, Any]] = []
    while len(pool) < count:
        if compressed:
            fields = malformed_compressed_fields(rng, jpeg, png)
            probe = SimpleNamespace(format=fields["format"], data=fields["data"])
        else:
            fields = malformed_image_fields(rng, rgb.shape[0], rgb.shape[1])
            probe = SimpleNamespace(**{k: v for k, v in fields.items() if k != "fault"})
        try:
            message_to_rgb(probe)
        except ImageConversionError:
            pool.append(fields)
    return pool


# ----- client process ------------------------------------------------------------------------------

def run_client(argv: Sequence[str]) -> int:
    """One client process: ask `/ask_video` in a loop for `--seconds`, write one JSON record per call."""
    parser = argparse.ArgumentParser(prog="infinipot-stress client")
    parser.add_argument("--cameras", required=True, help="comma-separated camera names")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--interval", type=float, default=1.0, help="mean pause between questions")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--response-timeout", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(list(argv))

    import rclpy
    from rclpy.node import Node

    from infinipot_ros.srv import AskVideo

    rng = random.Random(args.seed)
    cameras = args.cameras.split(",")
    records: list[dict[str, Any]] = []
    rclpy.init(args=[])
    node = Node(f"infinipot_stress_client_{os.getpid()}")
    try:
        client = node.create_client(AskVideo, "/ask_video")
        if not client.wait_for_service(timeout_sec=60.0):
            print("stress client: no /ask_video", file=sys.stderr)
            return 2
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            camera = rng.choice(cameras)
            question = rng.choice(QUESTIONS)
            sent_wall, t0 = time.time(), time.monotonic()
            future = client.call_async(
                AskVideo.Request(question=question, camera=camera, max_new_tokens=args.max_new_tokens)
            )
            rclpy.spin_until_future_complete(node, future, timeout_sec=args.response_timeout)
            rtt = time.monotonic() - t0
            result = future.result() if future.done() else None
            if result is None:
                client.remove_pending_request(future)
            records.append({
                "t": sent_wall, "camera": camera, "rtt_s": rtt,
                "success": bool(result is not None and result.success),
                "no_response": result is None,
                "error": "" if result is None else result.error_message,
                "node_latency_s": None if result is None else float(result.latency_s),
            })
            pause = rng.uniform(0.5, 1.5) * args.interval
            time.sleep(max(0.0, min(pause, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        Path(args.out).write_text(json.dumps(records))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ----- the run -------------------------------------------------------------------------------------

@dataclass
class StressOptions:
    """Command-line options of a run (see `main`)."""

    cameras: int = 2
    hz: float = 30.0
    seconds: float = 60.0
    clients: int = 4
    malformed_share: float = 0.2
    json_path: str = "stress.json"
    plot_path: str | None = None
    model: str = "builtin:tiny-qwen2-vl"
    budget_tokens: int = 256
    sample_rate_hz: float = 2.0
    width: int = 160
    height: int = 120
    ask_interval: float = 1.0
    max_new_tokens: int = 16
    image_qos: str = "reliable"
    domain: int | None = None
    seed: int = 0
    node_args: list[str] = field(default_factory=list)


def run_stress(opts: StressOptions, log: Any = print) -> dict[str, Any]:
    """Run one stress session and return the summary (also written to `opts.json_path`)."""
    import psutil
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from infinipot_ros.msg import CacheStats
    from infinipot_ros.srv import AskVideo

    # 201..230 by default: disjoint from the test suites' domains (1..200), so a run and tests can overlap.
    domain = opts.domain if opts.domain is not None else 201 + os.getpid() % 30
    cams = [
        _Camera(f"cam{i}", f"/stress/cam{i}/image_raw" + ("/compressed" if i % 2 else ""), bool(i % 2))
        for i in range(opts.cameras)
    ]
    ros_args = [
        "-p", f"cameras:={json.dumps([c.topic for c in cams])}",
        "-p", f"camera_names:={json.dumps([c.name for c in cams])}",
        "-p", f"model:={opts.model}",
        "-p", f"budget_tokens:={opts.budget_tokens}",
        "-p", f"sample_rate_hz:={float(opts.sample_rate_hz)}",
        "-p", "stats_period_s:=0.5",
        "-p", "validate_all_frames:=true",
        "-p", f"image_qos:={opts.image_qos}",
        "-p", "image_qos_depth:=500",
        *opts.node_args,
    ]
    work = Path(tempfile.mkdtemp(prefix="infinipot-stress-"))
    log(f"stress: node on ROS domain {domain}, log {work / 'node.log'}")
    node_proc = NodeProcess(ros_args, domain, log_path=work / "node.log")
    node_ps = psutil.Process(node_proc.pid)

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    ros = rclpy.create_node("infinipot_stress", context=context)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(ros)
    latest: dict[str, Any] = {}
    kv_max: dict[str, int] = {}
    kv_cap: dict[str, int] = {}
    queue_seen = {"max_depth": 0, "bound": 0, "diag_max": 0}

    def on_stats(msg: CacheStats) -> None:
        latest[msg.camera] = msg
        kv_max[msg.camera] = max(kv_max.get(msg.camera, 0), int(msg.kv_bytes))
        kv_cap[msg.camera] = int(msg.kv_cap_bytes)
        queue_seen["max_depth"] = max(queue_seen["max_depth"], int(msg.queue_depth))
        queue_seen["bound"] = int(msg.queue_capacity)

    def on_diag(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "queue_max_depth" in values:
                queue_seen["diag_max"] = max(queue_seen["diag_max"], int(values["queue_max_depth"]))

    ros.create_subscription(CacheStats, "/infinipot/cache_stats", on_stats, 50)
    ros.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    for cam in cams:
        cam.publisher = ros.create_publisher(CompressedImage if cam.compressed else Image, cam.topic, qos)

    frames = _frames(max(8, int(opts.hz * 2)), opts.height, opts.width)
    jpegs = [_encode(f, "JPEG") for f in frames]
    pools = {c.name: _malformed_pool(c.compressed, frames[0], 200, opts.seed + i) for i, c in enumerate(cams)}
    rng = np.random.default_rng(opts.seed)
    client_procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    summary: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    died_during_run = False
    try:
        # ---- wait for the node: service up, subscriptions matched, model loaded ----
        ask = ros.create_client(AskVideo, "/ask_video")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and node_proc.alive():
            executor.spin_once(timeout_sec=0.1)
            ready = ask.service_is_ready() and all(c.publisher.get_subscription_count() for c in cams)
            if ready and latest and all(getattr(m, "token_budget", 0) > 0 for m in latest.values()):
                break
        else:
            raise RuntimeError(f"node not ready within 180 s\n{node_proc.output()[-3000:]}")
        log(f"stress: node ready (pid {node_proc.pid}); {opts.seconds:g}s with {opts.cameras} cameras at "
            f"{opts.hz:g} Hz, {opts.clients} clients, malformed share {opts.malformed_share:g}")

        # ---- clients ----
        for k in range(opts.clients):
            out = work / f"client{k}.json"
            cmd = [sys.executable, "-m", "infinipot_eval.stress", "client",
                   "--cameras", ",".join(c.name for c in cams), "--seconds", str(opts.seconds),
                   "--interval", str(opts.ask_interval), "--max-new-tokens", str(opts.max_new_tokens),
                   "--seed", str(opts.seed * 100 + k), "--out", str(out)]
            client_procs.append((subprocess.Popen(cmd, cwd=REPO, env=ros_env(domain),
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out))

        # ---- publish and sample ----
        t_start = time.monotonic()
        period = 1.0 / opts.hz
        for i, cam in enumerate(cams):
            cam.next_due = t_start + i * period / max(len(cams), 1)
        next_sample = t_start
        while True:
            now = time.monotonic()
            elapsed = now - t_start
            if elapsed >= opts.seconds:
                break
            if not node_proc.alive():
                died_during_run = True
                log("stress: the node process died")
                break
            for cam in cams:
                if now >= cam.next_due:
                    _publish(cam, rng, opts.malformed_share, frames, jpegs, pools[cam.name], Image,
                             CompressedImage)
                    cam.next_due += period
                    if cam.next_due < now - 1.0:  # fell far behind: do not burst to catch up
                        cam.next_due = now + period
            if now >= next_sample:
                samples.append(_sample(elapsed, node_ps, latest))
                next_sample += 1.0
            wait = min(min(c.next_due for c in cams), next_sample) - time.monotonic()
            executor.spin_once(timeout_sec=max(0.0, min(wait, 0.02)))

        # ---- drain: clients finish, the node's counters settle ----
        records: list[dict[str, Any]] = []
        for proc, out in client_procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=10)
            if out.exists():
                records.extend(json.loads(out.read_text() or "[]"))
        settled = _settle(executor, latest, cams, node_proc)
        summary = _summarize(opts, cams, records, samples, latest, kv_max, kv_cap, queue_seen, settled)
    finally:
        for proc, _ in client_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        executor.shutdown(timeout_sec=1.0)
        ros.destroy_node()
        rclpy.try_shutdown(context=context)
        code, stop_s, output = node_proc.stop(signal.SIGINT)
    tracebacks = output.count("Traceback (most recent call last)")
    summary.update(
        crashes=int(died_during_run) + tracebacks + int(code != 0 and not died_during_run),
        node_died_during_run=died_during_run,
        node_exit_code=code,
        node_shutdown_s=round(stop_s, 3),
        tracebacks_in_node_log=tracebacks,
        node_log=str(node_proc.log_path),
    )
    summary["samples"] = samples
    Path(opts.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.json_path).write_text(json.dumps(summary, indent=2))
    if opts.plot_path:
        _plot(summary, opts.plot_path)
    return summary


def _publish(cam: _Camera, rng: np.random.Generator, share: float, frames: list[np.ndarray],
             jpegs: list[bytes], pool: list[dict[str, Any]], Image: Any, CompressedImage: Any) -> None:  # noqa: N803
    """Publish the camera's next message: a valid frame, or with probability `share` a malformed one."""
    now = time.time()
    idx = cam.sent % len(frames)
    malformed = rng.random() < share
    if cam.compressed:
        msg = CompressedImage()
        if malformed:
            fields = pool[int(rng.integers(len(pool)))]
            msg.format, msg.data = fields["format"], fields["data"]
        else:
            msg.format, msg.data = "jpeg", jpegs[idx]
    else:
        msg = Image()
        if malformed:
            fields = pool[int(rng.integers(len(pool)))]
            msg.height, msg.width, msg.step = fields["height"], fields["width"], fields["step"]
            msg.encoding, msg.is_bigendian, msg.data = fields["encoding"], fields["is_bigendian"], fields["data"]
        else:
            rgb = frames[idx]
            msg.height, msg.width, msg.encoding, msg.is_bigendian = rgb.shape[0], rgb.shape[1], "rgb8", 0
            msg.step, msg.data = rgb.shape[1] * 3, rgb.tobytes()
    msg.header.stamp.sec = int(now)
    msg.header.stamp.nanosec = int((now - int(now)) * 1e9)
    msg.header.frame_id = cam.name
    cam.publisher.publish(msg)
    cam.sent += 1
    if malformed:
        cam.malformed += 1
        cam.faults[fields["fault"]] = cam.faults.get(fields["fault"], 0) + 1


def _sample(elapsed: float, node_ps: Any, latest: dict[str, Any]) -> dict[str, Any]:
    try:
        rss = int(node_ps.memory_info().rss)
    except Exception:  # noqa: BLE001 - the process just ended
        rss = 0
    return {
        "t": round(elapsed, 3),
        "rss_bytes": rss,
        "kv_bytes": {k: int(m.kv_bytes) for k, m in latest.items()},
        "queue_depth": {k: int(m.queue_depth) for k, m in latest.items()},
        "tokens_held": {k: int(m.tokens_held) for k, m in latest.items()},
    }


def _settle(executor: Any, latest: dict[str, Any], cams: list[_Camera], node_proc: NodeProcess,
            timeout: float = 20.0) -> bool:
    """Wait until the node's counters stop moving (every sent message handled), up to `timeout`."""
    deadline = time.monotonic() + timeout
    previous, stable = None, 0
    while time.monotonic() < deadline and node_proc.alive():
        executor.spin_once(timeout_sec=0.1)
        key = tuple((c.name, getattr(latest.get(c.name), "frames_received", -1),
                     getattr(latest.get(c.name), "frames_rejected", -1),
                     getattr(latest.get(c.name), "queue_depth", -1)) for c in cams)
        if key == previous:
            stable += 1
            if stable >= 15 and all(getattr(latest.get(c.name), "frames_received", 0) >= c.sent for c in cams):
                return True
            if stable >= 30:  # 3 s without change: some messages never arrived
                return True
        else:
            previous, stable = key, 0
    return False


def _summarize(opts: StressOptions, cams: list[_Camera], records: list[dict[str, Any]],
               samples: list[dict[str, Any]], latest: dict[str, Any], kv_max: dict[str, int],
               kv_cap: dict[str, int], queue_seen: dict[str, int], settled: bool) -> dict[str, Any]:
    answered = [r for r in records if r["success"]]
    refused = [r for r in records if not r["success"]]
    latencies = [r["rtt_s"] for r in answered]
    ratio, window = rss_growth([(s["t"], s["rss_bytes"]) for s in samples if s["rss_bytes"]], opts.seconds)
    frames_sent = sum(c.sent for c in cams)
    received = sum(int(getattr(latest.get(c.name), "frames_received", 0)) for c in cams)
    rejected = sum(int(getattr(latest.get(c.name), "frames_rejected", 0)) for c in cams)
    malformed_sent = sum(c.malformed for c in cams)
    lost = frames_sent - received
    if lost == 0:
        accounting = "no transport loss: every sent message reached the node"
    else:
        accounting = (f"{lost} messages lost in transport (best-effort subscription): malformed_rejected may "
                      f"be lower than malformed_sent by at most that many")
    reasons: dict[str, int] = {}
    for r in refused:
        key = "no response" if r["no_response"] else r["error"].split(":")[0][:60]
        reasons[key] = reasons.get(key, 0) + 1
    faults: dict[str, int] = {}
    for c in cams:
        for k, v in c.faults.items():
            faults[k] = faults.get(k, 0) + v
    return {
        "options": {k: v for k, v in opts.__dict__.items()},
        "crashes": 0,  # completed by run_stress from the node process
        "rss_growth_ratio": ratio,
        "rss_window": window,
        "rss_start_mib": samples[0]["rss_bytes"] / 2**20 if samples else None,
        "rss_end_mib": samples[-1]["rss_bytes"] / 2**20 if samples else None,
        "max_queue_depth": max(queue_seen["max_depth"], queue_seen["diag_max"]),
        "queue_bound": queue_seen["bound"],
        "kv_bytes_max": max(kv_max.values(), default=0),
        "kv_cap_bytes": max(kv_cap.values(), default=0),
        "kv_bytes_max_per_camera": kv_max,
        "kv_cap_bytes_per_camera": kv_cap,
        "requests": len(records),
        "answered": len(answered),
        "refused": len(refused),
        "no_response": sum(1 for r in records if r["no_response"]),
        "refusal_reasons": reasons,
        "frames_sent": frames_sent,
        "frames_received": received,
        "transport_lost": lost,
        "malformed_sent": malformed_sent,
        "malformed_rejected": rejected,
        "malformed_kinds": faults,
        "malformed_accounting": accounting,
        "counters_settled": settled,
        "frames_ingested": sum(int(getattr(latest.get(c.name), "frames_ingested", 0)) for c in cams),
        "frames_dropped": sum(int(getattr(latest.get(c.name), "frames_dropped", 0)) for c in cams),
        "compressions": sum(int(getattr(latest.get(c.name), "compressions", 0)) for c in cams),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_max_s": max(latencies, default=None),
        "requests_timeline": [
            {"t": r["t"], "rtt_s": round(r["rtt_s"], 4), "success": r["success"]} for r in records
        ],
    }


def _plot(summary: dict[str, Any], path: str) -> None:
    """Four panels over time: node RSS, KV bytes vs cap, queue depth vs bound, answer latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = summary["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [s["rss_bytes"] / 2**20 for s in samples])
    axes[0].set_ylabel("node RSS (MiB)")
    axes[0].set_title(
        f"infinipot-stress: {summary['options']['cameras']} cameras @ {summary['options']['hz']:g} Hz, "
        f"{summary['options']['clients']} clients, malformed {summary['options']['malformed_share']:g}"
    )
    cameras = sorted({k for s in samples for k in s["kv_bytes"]})
    for cam in cameras:
        axes[1].plot(t, [s["kv_bytes"].get(cam, 0) / 2**10 for s in samples], label=cam)
        axes[2].plot(t, [s["queue_depth"].get(cam, 0) for s in samples], label=cam)
    axes[1].axhline(summary["kv_cap_bytes"] / 2**10, color="r", ls="--", label="cap")
    axes[1].set_ylabel("KV bytes (KiB)")
    axes[1].legend(loc="lower right")
    axes[2].axhline(summary["queue_bound"], color="r", ls="--", label="bound")
    axes[2].set_ylabel("queue depth")
    axes[2].legend(loc="lower right")
    timeline = summary["requests_timeline"]
    if timeline:
        t0 = min(r["t"] for r in timeline)
        offset = samples[0]["t"] if samples else 0.0
        ok = [(r["t"] - t0 + offset, r["rtt_s"]) for r in timeline if r["success"]]
        bad = [(r["t"] - t0 + offset, r["rtt_s"]) for r in timeline if not r["success"]]
        if ok:
            axes[3].scatter(*zip(*ok), s=6, label="answered")
        if bad:
            axes[3].scatter(*zip(*bad), s=10, marker="x", color="r", label="refused")
        axes[3].legend(loc="upper right")
    axes[3].set_ylabel("round-trip latency (s)")
    axes[3].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `infinipot-stress` (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "client":
        return run_client(argv[1:])
    parser = argparse.ArgumentParser(
        prog="infinipot-stress",
        description="Run the infinipot node under camera load, malformed input and concurrent questions.",
    )
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--hz", type=float, default=30.0, help="messages per second per camera")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=4, help="client processes calling /ask_video")
    parser.add_argument("--malformed-share", type=float, default=0.2)
    parser.add_argument("--json", default="stress.json", help="summary output path")
    parser.add_argument("--plot", default=None, help="PNG path (default: the JSON path with .png)")
    parser.add_argument("--model", default="builtin:tiny-qwen2-vl")
    parser.add_argument("--budget-tokens", type=int, default=256)
    parser.add_argument("--sample-rate-hz", type=float, default=2.0,
                        help="node's sample_rate_hz per camera (every message is validated regardless)")
    parser.add_argument("--ask-interval", type=float, default=1.0, help="mean pause between a client's questions")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--image-qos", choices=("reliable", "sensor_data"), default="reliable",
                        help="the node's image_qos: reliable (default) lets every message reach the node, so "
                             "malformed_rejected can equal malformed_sent; sensor_data measures the live-camera "
                             "set-up, where messages can be lost in transport")
    parser.add_argument("--domain", type=int, default=None, help="ROS domain id (default: from the pid)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--node-arg", action="append", default=[],
                        help="extra `-p name:=value` for the node (repeatable), e.g. --node-arg queue_size:=8")
    args = parser.parse_args(argv)
    if args.cameras < 1 or args.hz <= 0 or args.seconds <= 0 or args.clients < 0:
        parser.error("--cameras >= 1, --hz > 0, --seconds > 0 and --clients >= 0 are required")
    if not 0.0 <= args.malformed_share <= 1.0:
        parser.error("--malformed-share must be in [0, 1]")
    opts = StressOptions(
        cameras=args.cameras, hz=args.hz, seconds=args.seconds, clients=args.clients,
        malformed_share=args.malformed_share, json_path=args.json,
        plot_path=args.plot or str(Path(args.json).with_suffix(".png")), model=args.model,
        budget_tokens=args.budget_tokens, sample_rate_hz=args.sample_rate_hz, width=args.width,
        height=args.height, ask_interval=args.ask_interval, max_new_tokens=args.max_new_tokens,
        image_qos=args.image_qos, domain=args.domain, seed=args.seed,
        node_args=[x for a in args.node_arg for x in ("-p", a)],
    )
    summary = run_stress(opts)
    keys = ("crashes", "rss_growth_ratio", "rss_window", "max_queue_depth", "queue_bound", "kv_bytes_max",
            "kv_cap_bytes", "requests", "answered", "refused", "malformed_sent", "malformed_rejected",
            "transport_lost", "latency_p50_s", "latency_p95_s")
    for k in keys:
        print(f"{k}: {summary.get(k)}")
    print(f"wrote {opts.json_path} and {opts.plot_path}")
    return 0 if summary.get("crashes") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
