"""Evidence and memory through the node (real rclpy process, the built-in trained model, InfiniPot-V capped).

The stream is a synthetic world with exactly one object (shown once, ~7-12 s); after it, asking about the
object must point at it: the strongest evidence stamp lies inside the object's span (one sampling period
of slack), the weights are sorted and sum to at most 1. `~/memory` must list exactly the frames the
compressed memory still holds, with token counts that add up to tokens_held minus the prefix. A huge
max_evidence is clamped, never refused.
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy

from infinipot_eval.world import World, WorldConfig
from infinipot_ros.msg import CacheStats, VideoAnswer
from infinipot_ros.srv import AskVideo, GetMemory

from sensor_msgs.msg import Image

BASE = 1000.0  # header stamp of the first frame
PERIOD = 0.5  # seconds between frames (every frame is kept: sample_rate_hz 0)
BUDGET = 52  # prefix (12) + 10 temporal frames of 4 tokens: compresses several times over 24 frames
NODE_ARGS = [
    "-p", "cameras:=['/test/ev/image_raw']",
    "-p", "camera_names:=['ev']",
    "-p", "sample_rate_hz:=0.0",
    "-p", "queue_size:=64",
    "-p", "image_qos:=reliable",
    "-p", "image_qos_depth:=100",
    "-p", "policy:=infinipot",
    "-p", f"budget_tokens:={BUDGET}",
    "-p", "max_evidence:=3",
    "-p", "stats_period_s:=0.2",
]


def _secs(t: object) -> float:
    return t.sec + t.nanosec * 1e-9  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def world() -> World:
    config = WorldConfig(lead_in_seconds=(6.0, 8.0), event_seconds=(4.0, 5.0), gap_seconds=(100.0, 100.0))
    w = World(seed=3, seconds=24.0, fps=1.0 / PERIOD, size=112, config=config)
    assert len(w.events) == 1
    return w


@pytest.fixture(scope="module")
def rig(harness, world):  # noqa: ANN001, ANN201
    domain = harness.domain_id(37)
    node = harness.NodeProcess(NODE_ARGS, domain)
    ros = harness.RosClient(domain)
    n = ros.node
    pub = n.create_publisher(Image, "/test/ev/image_raw", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    stats = ros.subscribe(CacheStats, "/infinipot/cache_stats")
    answers = ros.subscribe(VideoAnswer, "/infinipot/answers")
    ask = n.create_client(AskVideo, "/ask_video")
    memory = n.create_client(GetMemory, "/infinipot/memory")
    try:
        assert ros.spin_until(lambda: ask.service_is_ready() and memory.service_is_ready(), 60.0), node.output()
        assert ros.spin_until(lambda: pub.get_subscription_count() > 0, 30.0), node.output()
        frames = world.num_frames
        for i, (t, rgb) in enumerate(world.iter_frames()):
            msg = Image()
            stamp = BASE + t
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int(round((stamp - int(stamp)) * 1e9))
            msg.height, msg.width, msg.encoding, msg.step = rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3
            msg.data = rgb.tobytes()
            pub.publish(msg)
            ros.spin_for(0.02)
        done = ros.spin_until(lambda: [s for s in stats if s.frames_ingested == frames], 90.0)
        assert done, f"node ingested {stats[-1].frames_ingested if stats else 0} of {frames}\n{node.output()}"
        yield ros, ask, memory, answers, stats, domain
    finally:
        ros.close()
        code, _elapsed, out = node.stop(signal.SIGINT)
        assert code == 0 and "Traceback" not in out, out


def test_strongest_evidence_is_the_object_and_huge_max_evidence_is_clamped(rig, world) -> None:  # noqa: ANN001
    ros, ask, memory, answers, _stats, _domain = rig
    event = world.events[0]
    question = f"What colour was the {event.shape}?"
    resp = ros.call(ask, AskVideo.Request(question=question, max_new_tokens=4, max_evidence=2**32 - 1), timeout=60)
    assert resp.success, resp.error_message
    held = ros.call(memory, GetMemory.Request(camera=""), timeout=30)
    assert held.success, held.error_message
    weights = list(resp.evidence_weights)
    assert len(resp.evidence_stamps) == len(weights) == len(held.frame_stamps) > 1  # clamped: every held frame
    assert weights == sorted(weights, reverse=True) and sum(weights) <= 1.0 + 1e-5
    assert sum(weights) == pytest.approx(1.0, abs=1e-4)  # all held frames: the whole visual attention
    strongest = _secs(resp.evidence_stamps[0]) - BASE
    assert event.start - PERIOD <= strongest <= event.end + PERIOD, (strongest, event, weights[:3])
    assert {_secs(s) for s in resp.evidence_stamps} == {_secs(s) for s in held.frame_stamps}

    default = ros.call(ask, AskVideo.Request(question=question, max_new_tokens=4), timeout=60)
    assert len(default.evidence_weights) == 3  # the node's max_evidence
    assert [_secs(s) for s in default.evidence_stamps] == [_secs(s) for s in resp.evidence_stamps[:3]]
    published = ros.spin_until(lambda: [a for a in answers if a.question == question], 5.0)
    assert published and list(published[0].evidence_weights) == pytest.approx(weights)


def test_memory_lists_only_held_frames_and_their_tokens(rig, world) -> None:  # noqa: ANN001
    ros, _ask, memory, _answers, stats, _domain = rig
    held = ros.call(memory, GetMemory.Request(camera="ev"), timeout=30)
    assert held.success and held.camera == "ev"
    latest = stats[-1]
    assert held.tokens_held == latest.tokens_held and latest.tokens_held <= BUDGET
    assert sum(held.frame_tokens) == pytest.approx(held.tokens_held - held.prefix_tokens, abs=1e-3)
    assert held.prefix_tokens > 0 and all(t > 0 for t in held.frame_tokens)
    starts = [_secs(s) - BASE for s in held.frame_stamps]
    ends = [_secs(s) - BASE for s in held.frame_end_stamps]
    published = [world.time(i) for i in range(world.num_frames)]
    pairs = list(zip(published[0::2], published[1::2]))  # Qwen2-VL: a temporal frame is two raw frames
    assert starts == sorted(starts) and len(starts) < len(pairs)  # compressed: some frames are gone
    for start, end in zip(starts, ends):
        assert any(abs(start - a) < 1e-6 and abs(end - b) < 1e-6 for a, b in pairs), (start, end)
    assert ends[-1] == pytest.approx(published[-1], abs=1e-6)  # the newest frame is always kept
    unknown = ros.call(memory, GetMemory.Request(camera="nope"), timeout=30)
    assert not unknown.success and "unknown camera" in unknown.error_message


def test_ask_cli_prints_evidence_relative_and_absolute(rig, world, harness) -> None:  # noqa: ANN001
    domain = rig[-1]
    event = world.events[0]
    done = subprocess.run(
        [sys.executable, "-m", "infinipot_ros.ask_cli", f"What colour was the {event.shape}?", "--max-evidence", "2",
         "--max-tokens", "4"],
        cwd=harness.REPO, env=harness.ros_env(domain), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("  ") and "weight" in line]
    assert "evidence (strongest first):" in done.stdout and len(lines) == 2, done.stdout
    # the stamps are from 1970 (BASE = 1000 s), so relative to the CLI's wall clock they are decades ago
    ago = float(lines[0].split(". ", 1)[1].split(" s ago")[0])
    stamp = float(lines[0].split("(stamp ")[1].split(")")[0])
    assert event.start - PERIOD <= stamp - BASE <= event.end + PERIOD
    assert ago > 1e9 and abs(ago - (__import__("time").time() - stamp)) < 120
