"""The node end to end: one node process (real rclpy, real tiny Qwen2-VL session) shared by this module.

Two cameras: `raw` (sensor_msgs/Image) and `comp` (CompressedImage). Sampling is off (every frame is
kept) and the queue holds 2 frames, so the burst test can overflow it. Tests run in file order: the
"before any frame" test must come first.
"""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from PIL import Image as PILImage
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from infinipot_ros.msg import CacheStats, VideoAnswer
from infinipot_ros.srv import AskVideo

QUEUE = 2
#: An answer this long keeps the worker busy for about a second (the untrained model never stops early).
LONG_ANSWER = 2000
NODE_ARGS = [
    # the untrained tiny model: it answers up to max tokens, which the slow-worker tests rely on
    "-p", "model:=builtin:tiny-qwen2-vl",
    "-p", "cameras:=['/test/raw/image_raw', '/test/comp/image_raw/compressed']",
    "-p", "camera_names:=['raw', 'comp']",
    "-p", "sample_rate_hz:=0.0",
    "-p", f"queue_size:={QUEUE}",
    "-p", "budget_tokens:=256",
    "-p", "stats_period_s:=0.25",
    "-p", "max_question_chars:=200",
    "-p", f"max_answer_tokens:={LONG_ANSWER}",
    "-p", "request_timeout_s:=30.0",
    "-p", "max_image_pixels:=4000000",
]


class Rig:
    """The node process plus the test's client endpoints."""

    def __init__(self, harness) -> None:  # noqa: ANN001
        self.domain = harness.domain_id(11)
        self.node = harness.NodeProcess(NODE_ARGS, self.domain)
        self.ros = harness.RosClient(self.domain)
        n = self.ros.node
        self.raw_pub = n.create_publisher(Image, "/test/raw/image_raw", qos_profile_sensor_data)
        self.comp_pub = n.create_publisher(
            CompressedImage, "/test/comp/image_raw/compressed", qos_profile_sensor_data
        )
        self.answers = self.ros.subscribe(VideoAnswer, "/infinipot/answers")
        self.stats = self.ros.subscribe(CacheStats, "/infinipot/cache_stats")
        self.diags = self.ros.subscribe(DiagnosticArray, "/diagnostics")
        self.ask_client = n.create_client(AskVideo, "/ask_video")
        self.reset_client = n.create_client(Trigger, "/infinipot/reset")
        self.param_client = n.create_client(SetParameters, "/infinipot/set_parameters")
        self.stamp = {"raw": 1000.0, "comp": 1000.0}

    # ----- helpers -----
    def next_stamp(self, cam: str) -> tuple[int, int]:
        self.stamp[cam] += 0.1
        sec = int(self.stamp[cam])
        return sec, int(round((self.stamp[cam] - sec) * 1e9))

    def raw(self, rgb: np.ndarray, encoding: str = "rgb8", **override: object) -> Image:
        msg = Image()
        msg.header.stamp.sec, msg.header.stamp.nanosec = self.next_stamp("raw")
        h, w = rgb.shape[:2]
        if encoding == "rgb8":
            data = rgb
        elif encoding == "bgr8":
            data = rgb[..., ::-1]
        elif encoding == "mono8":
            data = rgb[..., 0]
        else:
            data = rgb
        channels = 1 if data.ndim == 2 else data.shape[2]
        msg.height, msg.width, msg.encoding, msg.is_bigendian = h, w, encoding, 0
        msg.step = w * channels
        msg.data = np.ascontiguousarray(data).tobytes()
        for k, v in override.items():
            setattr(msg, k, v)
        return msg

    def compressed(self, rgb: np.ndarray, codec: str = "jpeg", payload: bytes | None = None) -> CompressedImage:
        msg = CompressedImage()
        msg.header.stamp.sec, msg.header.stamp.nanosec = self.next_stamp("comp")
        msg.format = codec
        if payload is None:
            buf = io.BytesIO()
            PILImage.fromarray(rgb).save(buf, format="JPEG" if codec == "jpeg" else "PNG")
            payload = buf.getvalue()
        msg.data = payload
        return msg

    def latest_stats(self, camera: str) -> CacheStats | None:
        for msg in reversed(self.stats):
            if msg.camera == camera:
                return msg
        return None

    def fresh_stats(self, camera: str, predicate=lambda s: True, timeout: float = 20.0) -> CacheStats:  # noqa: ANN001
        """Wait for a stats message of `camera` *stamped* from now on that satisfies `predicate`.

        (Messages still queued from before would otherwise be taken for new ones.)
        """
        since = time.time()

        def found() -> CacheStats | None:
            for msg in reversed(self.stats):
                if _secs(msg.header.stamp) < since:
                    return None
                if msg.camera == camera and predicate(msg):
                    return msg
            return None

        msg = self.ros.spin_until(found, timeout)
        assert msg is not None, f"no matching stats for {camera}; last: {self.latest_stats(camera)}"
        return msg

    def fresh_diag(self, name_part: str, predicate=lambda d: True, timeout: float = 10.0) -> DiagnosticStatus:  # noqa: ANN001
        """The status named like `name_part` from a /diagnostics array stamped from now on."""
        since = time.time()

        def found() -> DiagnosticStatus | None:
            for arr in reversed(self.diags):
                if _secs(arr.header.stamp) < since:
                    return None
                for status in arr.status:
                    if name_part in status.name and predicate(status):
                        return status
            return None

        status = self.ros.spin_until(found, timeout)
        assert status is not None, f"no fresh diagnostics matching {name_part!r}"
        return status

    def ask(self, question: str, camera: str = "", max_new_tokens: int = 8) -> AskVideo.Response:
        return self.ros.call(
            self.ask_client,
            AskVideo.Request(question=question, camera=camera, max_new_tokens=max_new_tokens),
            timeout=60.0,
        )

    def wait_subscribed(self) -> None:
        ok = self.ros.spin_until(
            lambda: self.raw_pub.get_subscription_count() > 0 and self.comp_pub.get_subscription_count() > 0,
            30.0,
        )
        assert ok, "node never subscribed to the test cameras"

    def set_param(self, name: str, value: ParameterValue) -> object:
        req = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)])
        return self.ros.call(self.param_client, req).results[0]


def _secs(stamp: object) -> float:
    return stamp.sec + stamp.nanosec * 1e-9  # type: ignore[attr-defined]


def scene(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8)
    y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
    img[y : y + 12, x : x + 12] = rng.integers(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def rig(harness):  # noqa: ANN001, ANN201
    r = Rig(harness)
    try:
        assert r.ros.spin_until(lambda: r.ask_client.service_is_ready(), 60.0), r.node.output()
        r.wait_subscribed()
        r.fresh_diag("worker", lambda d: d.level == DiagnosticStatus.OK, timeout=90.0)
        yield r
    finally:
        r.ros.close()
        code, elapsed, out = r.node.stop(signal.SIGINT)
        r.shutdown_result = (code, elapsed, out)
        assert code == 0 and elapsed < 5.0, f"exit {code} after {elapsed:.1f}s\n{out}"
        assert "Traceback" not in out, out


def test_question_before_any_frame_is_refused(rig: Rig) -> None:
    resp = rig.ask("What is there?", camera="raw")
    assert not resp.success and "no frames" in resp.error_message
    msg = rig.ros.spin_until(lambda: [a for a in rig.answers if a.question == "What is there?"], 5.0)
    assert msg and not msg[0].success and msg[0].error_message == resp.error_message


@pytest.mark.parametrize(
    ("question", "camera", "reason"),
    [("", "", "empty"), ("   ", "raw", "empty"), ("x" * 201, "", "too long"),
     ("what?", "nope", "unknown camera")],
)
def test_bad_questions_are_refused(rig: Rig, question: str, camera: str, reason: str) -> None:
    resp = rig.ask(question, camera=camera)
    assert not resp.success and reason in resp.error_message and resp.answer == ""


def test_frames_of_every_kind_reach_memory_and_questions_are_answered(rig: Rig) -> None:
    for i, enc in enumerate(["rgb8", "bgr8", "mono8", "rgb8"] * 2):
        rig.raw_pub.publish(rig.raw(scene(i), enc))
        rig.ros.spin_for(0.05)
    for i, codec in enumerate(["jpeg", "png"] * 3):
        rig.comp_pub.publish(rig.compressed(scene(100 + i), codec))
        rig.ros.spin_for(0.05)
    raw_stats = rig.fresh_stats("raw", lambda s: s.frames_ingested >= 4)
    comp_stats = rig.fresh_stats("comp", lambda s: s.frames_ingested >= 4)
    for s in (raw_stats, comp_stats):
        assert s.frames_rejected == 0 and s.policy == "infinipot"
        assert 0 < s.tokens_held <= s.token_budget == 256
        assert 0 < s.kv_bytes <= s.kv_cap_bytes and s.queue_capacity == QUEUE

    for camera in ("raw", "comp"):
        question = f"What colour is the square on {camera}?"
        resp = rig.ask(question, camera=camera, max_new_tokens=50)
        assert resp.success, resp.error_message
        assert resp.error_message == "" and resp.tokens_used > 0
        assert 0 < resp.time_to_first_token_s <= resp.latency_s < 30
        start = resp.memory_start.sec + resp.memory_start.nanosec * 1e-9
        end = resp.memory_end.sec + resp.memory_end.nanosec * 1e-9
        assert 1000.0 < start <= end <= rig.stamp[camera] + 1e-6
        published = rig.ros.spin_until(lambda: [a for a in rig.answers if a.question == question], 5.0)
        assert published and published[0].success and published[0].answer == resp.answer
        assert published[0].camera == camera

    # Asking does not change the memory.
    after = rig.fresh_stats("raw")
    assert after.tokens_held == raw_stats.tokens_held or after.frames_ingested != raw_stats.frames_ingested


def test_diagnostics_report_cameras_and_worker(rig: Rig) -> None:
    rig.raw_pub.publish(rig.raw(scene(7)))
    worker = rig.fresh_diag("worker")
    names = {s.name for s in rig.diags[-1].status}
    assert names == {"infinipot: camera raw", "infinipot: camera comp", "infinipot: worker"}
    values = {kv.key: kv.value for kv in worker.values}
    assert worker.level == DiagnosticStatus.OK and values["state"] == "ready"
    assert int(values["requests_answered"]) >= 2, values
    camera = rig.fresh_diag("camera raw")
    cam_values = {kv.key: kv.value for kv in camera.values}
    assert camera.level == DiagnosticStatus.OK, camera.message
    assert int(cam_values["frames_ingested"]) >= 4 and cam_values["topic"] == "/test/raw/image_raw"


def test_malformed_images_are_counted_and_node_keeps_answering(rig: Rig) -> None:
    before_raw = rig.fresh_stats("raw").frames_rejected
    before_comp = rig.fresh_stats("comp").frames_rejected
    good = scene(3)
    bad_raw = [
        rig.raw(good, step=10),  # step < width * 3
        rig.raw(good, data=bytes(100)),  # data shorter than step * height
        rig.raw(good, encoding="weird42"),  # unknown encoding
        rig.raw(good, height=0, width=0, step=0, data=b""),  # zero size
        rig.raw(good, height=100000, width=100000, step=300000),  # absurd size
    ]
    jpeg = rig.compressed(good, "jpeg").data.tobytes()
    bad_comp = [
        rig.compressed(good, payload=b"\xff\xd8\xff\xe0garbage garbage"),  # corrupt JPEG
        rig.compressed(good, payload=jpeg[: len(jpeg) // 2]),  # truncated JPEG
        rig.compressed(good, payload=b""),  # empty
    ]
    for msg in bad_raw:
        rig.raw_pub.publish(msg)
        rig.ros.spin_for(0.05)
    for msg in bad_comp:
        rig.comp_pub.publish(msg)
        rig.ros.spin_for(0.05)
    raw = rig.fresh_stats("raw", lambda s: s.frames_rejected >= before_raw + len(bad_raw))
    comp = rig.fresh_stats("comp", lambda s: s.frames_rejected >= before_comp + len(bad_comp))
    assert raw.frames_rejected == before_raw + len(bad_raw)
    assert comp.frames_rejected == before_comp + len(bad_comp)
    # The period in which frames were rejected is reported as WARN (published before `raw` was read).
    assert any(
        st.level == DiagnosticStatus.WARN and "rejected" in st.message
        for arr in rig.diags for st in arr.status if st.name == "infinipot: camera raw"
    )
    assert rig.node.alive()
    # A good frame after the bad ones is still ingested, and questions are still answered.
    ingested = raw.frames_ingested
    rig.raw_pub.publish(rig.raw(scene(4)))
    rig.raw_pub.publish(rig.raw(scene(5)))
    rig.fresh_stats("raw", lambda s: s.frames_ingested > ingested)
    assert rig.ask("Still there?", camera="raw").success


def test_queue_stays_bounded_under_a_burst(rig: Rig) -> None:
    """Frames far faster than ingestion: the queue never exceeds its capacity and drops are counted.

    The slow worker is real: a question with a long answer occupies it (questions go before frames) while
    a paced burst of frames arrives. Pacing keeps the transport from dropping them before the node.
    """
    for i in range(2):  # something to talk about (self-contained when run alone)
        rig.raw_pub.publish(rig.raw(scene(20 + i)))
        rig.ros.spin_for(0.05)
    before = rig.fresh_stats("raw", lambda s: s.frames_ingested > 0 and s.queue_depth == 0)
    future = rig.ask_client.call_async(
        AskVideo.Request(question="Describe everything.", camera="raw", max_new_tokens=LONG_ANSWER)
    )
    rig.ros.spin_for(0.1)
    frame = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    sent = 0
    t0 = time.monotonic()
    while sent < 40 and not future.done():
        rig.raw_pub.publish(rig.raw(frame))
        sent += 1
        rig.ros.spin_for(0.01)
    rig.ros.spin_until(future.done, 60.0)
    long_answer = future.result()
    assert long_answer is not None and long_answer.success, long_answer
    settled = rig.fresh_stats(
        "raw",
        lambda s: s.queue_depth == 0 and s.frames_received > before.frames_received,
        timeout=30.0,
    )
    received = settled.frames_received - before.frames_received
    dropped = settled.frames_dropped - before.frames_dropped
    ingested = settled.frames_ingested - before.frames_ingested
    print(f"burst: {sent} sent in {time.monotonic() - t0:.2f}s, {received} received, {dropped} dropped")
    assert received > QUEUE + 1, f"only {received} of {sent} frames arrived"
    assert dropped >= received - QUEUE - 1, f"{received} received, {dropped} dropped, {ingested} ingested"
    # with sample_rate_hz 0 nothing is thinned on purpose: every drop is an overflow (the model fell behind)
    assert settled.frames_skipped == before.frames_skipped == 0
    assert settled.frames_overflowed - before.frames_overflowed == dropped
    assert settled.frames_skipped + settled.frames_overflowed == settled.frames_dropped
    assert max(s.queue_depth for s in rig.stats if s.camera == "raw") <= QUEUE
    diag = {kv.key: kv.value for kv in rig.fresh_diag("camera raw").values}
    assert int(diag["queue_max_depth"]) <= QUEUE and int(diag["queue_capacity"]) == QUEUE
    assert int(diag["frames_overflowed"]) >= settled.frames_overflowed
    assert rig.ask("After the burst?", camera="raw").success


def test_runtime_parameter_updates_are_validated(rig: Rig) -> None:
    bad = rig.set_param("sample_rate_hz", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0))
    assert not bad.successful and bad.reason
    wrong_type = rig.set_param(
        "sample_rate_hz", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="fast")
    )
    assert not wrong_type.successful and wrong_type.reason
    read_only = rig.set_param("model", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="x"))
    assert not read_only.successful and "read-only" in read_only.reason.lower()
    ok = rig.set_param("request_timeout_s", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=20.0))
    assert ok.successful


def test_reset_clears_memory(rig: Rig) -> None:
    before = {cam: rig.fresh_stats(cam) for cam in ("raw", "comp")}
    assert before["raw"].frames_ingested > 0
    resp = rig.ros.call(rig.reset_client, Trigger.Request())
    assert resp.success, resp.message
    for cam in ("raw", "comp"):  # the memory is empty; frame counters count over the node's life
        now = rig.fresh_stats(cam)
        assert now.tokens_held < before[cam].tokens_held and now.memory_end.sec == 0, now
        assert now.frames_ingested == before[cam].frames_ingested
    ingested = rig.fresh_stats("raw").frames_ingested
    refused = rig.ask("Anything?", camera="raw")
    assert not refused.success and refused.error_message
    rig.raw_pub.publish(rig.raw(scene(8)))
    rig.raw_pub.publish(rig.raw(scene(9)))
    rig.fresh_stats("raw", lambda s: s.frames_ingested >= ingested + 2)
    assert rig.ask("And now?", camera="raw").success


def test_ask_cli(rig: Rig, harness) -> None:  # noqa: ANN001
    cmd = [sys.executable, "-m", "infinipot_ros.ask_cli", "What happened?", "--camera", "raw", "--wait", "20"]
    done = subprocess.run(cmd, cwd=harness.REPO, env=harness.ros_env(rig.domain), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "A: " in done.stdout and "latency" in done.stdout and "memory spans" in done.stdout
    refused = subprocess.run([*cmd[:3], "", "--wait", "20"], cwd=harness.REPO,
                             env=harness.ros_env(rig.domain), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "empty question" in refused.stdout
    # --wait 0 tries once: the running node is still found (discovery), and answers
    once = subprocess.run([*cmd[:4], "--camera", "raw", "--wait", "0"], cwd=harness.REPO,
                          env=harness.ros_env(rig.domain), capture_output=True, text=True, timeout=60)
    assert once.returncode == 0 and "A: " in once.stdout, once.stdout + once.stderr
