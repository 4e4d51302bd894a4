"""Property-based fuzzing of every input boundary of the node, in process (fast, thousands of cases).

The boundaries are the node's own callbacks, called directly on a real `InfiniPotNode` (real rclpy
context, real worker thread, real tiny Qwen2-VL), only without DDS in between: `_on_image` (what the
camera subscriptions run), `_on_ask` (the /ask_video service callback), and rclpy's own
`set_parameters` service callback (which runs the node's validation callback). Plus the engine entry the
worker uses for frames, `StreamingSession.add_frame`. Every case must end in a counted rejection, a clean
``success=false`` or a valid result, never an exception; rejected input must leave the video memory
bit-identical. The same kinds of message are sent over real DDS in test_fuzz_dds.py.
"""
from __future__ import annotations

import math
import os
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infinipot_ros.conversion import SUPPORTED_ENCODINGS, ImageConversionError, message_to_rgb
from infinipot_ros.parameters import PARAMETERS

#: Examples per boundary: >= 2000 in the default run; more with INFINIPOT_FUZZ_EXAMPLES=20000 (soak).
FUZZ_EXAMPLES = int(os.environ.get("INFINIPOT_FUZZ_EXAMPLES", 2000))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
MAX_PIXELS = 256 * 256


def _store_state(session: Any) -> dict[str, Any]:
    """Everything that makes up a session's memory: the used KV store and the streaming counters.

    Not the store's `next_token_index`: an id allocator that by design never reuses ids, so it moves past
    a question's rolled-back tokens (kv_store.truncate); the session stages its own token ids anyway.
    """
    state = session.store.state_dict()
    state.pop("next_token_index")
    stats = session.stats().as_dict()
    return {"store": state, "stats": stats}


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["stats"] != b["stats"]:
        return False
    for key, value in a["store"].items():
        other = b["store"][key]
        if isinstance(value, torch.Tensor):
            if value.shape != other.shape or not torch.equal(value, other):
                return False
        elif value != other:
            return False
    return True


# ----- the in-process node ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(rel):  # noqa: ANN001, ANN201
    import rclpy
    from rclpy.parameter import Parameter

    from infinipot_ros.node import InfiniPotNode

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=rel.domain_id(71))
    overrides = [
        Parameter("cameras", value=["/fuzz/raw/image_raw", "/fuzz/comp/image_raw/compressed"]),
        Parameter("camera_names", value=["raw", "comp"]),
        Parameter("sample_rate_hz", value=0.0),
        Parameter("budget_tokens", value=256),
        Parameter("max_answer_tokens", value=2),
        Parameter("max_question_chars", value=500),
        Parameter("max_question_tokens", value=48),
        Parameter("max_image_pixels", value=MAX_PIXELS),
    ]
    n = InfiniPotNode(context=context, parameter_overrides=overrides)
    try:
        deadline = time.monotonic() + 120
        while n._worker.snapshot().state == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert n._worker.snapshot().state == "ready", n._worker.snapshot()
        yield n
    finally:
        n.close()
        n.destroy_node()
        rclpy.try_shutdown(context=context)


def _wait_idle(node: Any, timeout: float = 60.0) -> None:
    """Until the worker has ingested everything queued (the memory is stable from then on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(node._queues.frames) == 0 and len(node._queues.requests) == 0:
            time.sleep(0.1)  # the item just popped may still be in the model
            if len(node._queues.frames) == 0:
                return
        time.sleep(0.02)
    raise AssertionError("worker never went idle")


_stamp = {"t": 100.0}


def _next_stamp() -> tuple[int, int]:
    _stamp["t"] += 0.01
    sec = int(_stamp["t"])
    return sec, int((_stamp["t"] - sec) * 1e9)


# ----- raw images --------------------------------------------------------------------------------------

_ODD_ENCODINGS = ("", "RGB8", "rgb", "16UC1", "32FC1", "jpeg", "8UC4", "yuv420", "\x00", "rgb8 ", "mono8\n")
_dims = st.one_of(st.integers(0, 24), st.sampled_from([1, 2, 3, 255, 256, 257, 65535, 2**31, 2**32 - 1]))


@st.composite
def raw_images(draw: st.DrawFn) -> dict[str, Any]:
    """Image fields: often consistent (so some convert), often subtly or wildly inconsistent."""
    encoding = draw(st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.sampled_from(_ODD_ENCODINGS),
                              st.text(max_size=12)))
    height, width = draw(_dims), draw(_dims)
    bpp = {"mono8": 1, "8UC1": 1, "mono16": 2, "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8,
           "rgba8": 4, "bgra8": 4, "uyvy": 2, "yuv422": 2, "yuyv": 2, "yuv422_yuy2": 2}.get(encoding, 3)
    if encoding.startswith("bayer"):
        bpp = 1
    row = width * bpp
    step = draw(st.one_of(st.just(row), st.just(row + draw(st.integers(1, 8))), st.integers(0, 2**32 - 1),
                          st.just(max(row - 1, 0))))
    step = min(step, 2**32 - 1)
    full = step * height
    if full <= 64 * 1024 and draw(st.booleans()):
        length = full + draw(st.sampled_from([0, 0, 0, 1, -1, 7]))
    else:
        length = draw(st.integers(0, 4096))
    length = max(0, min(length, 64 * 1024))
    data = draw(st.one_of(st.binary(min_size=length, max_size=length), st.just(bytes(length))))
    return dict(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=draw(st.integers(0, 255)), data=data)


def _image_msg(fields: dict[str, Any]) -> Any:
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = _next_stamp()
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def _feed(node: Any, camera: str, msg: Any) -> None:
    """Call the subscription callback; check it counted the message exactly once, one way or the other."""
    cam = node._cameras[camera]
    before = (cam.received, cam.rejected, cam.sampled, node._queues.frames.stats(camera).pushed)
    node._on_image(cam, msg)  # an exception here fails the test: it would escape into the executor
    after = (cam.received, cam.rejected, cam.sampled, node._queues.frames.stats(camera).pushed)
    assert after[0] == before[0] + 1
    rejected = after[1] - before[1]
    accepted = after[2] - before[2]
    assert rejected + accepted == 1, (before, after)
    # A rejected message never reaches the worker, so it cannot touch the memory; an accepted one is queued.
    assert after[3] - before[3] == accepted
    try:
        rgb = message_to_rgb(msg, MAX_PIXELS)
    except ImageConversionError as err:
        assert rejected and str(err)
    else:
        assert accepted and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        if hasattr(msg, "encoding"):
            assert rgb.shape[:2] == (msg.height, msg.width)


def test_fuzz_raw_images_are_rejected_and_counted_or_converted(node) -> None:  # noqa: ANN001
    seen = {"rejected": 0, "accepted": 0}

    @FUZZ
    @given(fields=raw_images())
    def case(fields: dict[str, Any]) -> None:
        cam = node._cameras["raw"]
        r = cam.rejected
        _feed(node, "raw", _image_msg(fields))
        seen["rejected" if cam.rejected > r else "accepted"] += 1

    case()
    print(f"raw images: {seen}")
    assert seen["rejected"] > FUZZ_EXAMPLES // 4 and seen["accepted"] > 10, seen
    _wait_idle(node)
    snap = node._worker.snapshot()
    assert node._worker.alive and snap.state == "ready" and snap.errors == 0, snap
    assert snap.sessions["raw"]["frames_ingested"] > 0


# ----- compressed images ---------------------------------------------------------------------------------

def _encoded(seed: int, fmt: str, size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    PILImage.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


_VALID = [_encoded(1, "JPEG", (16, 24)), _encoded(2, "PNG", (16, 24)), _encoded(3, "JPEG", (1, 1)),
          _encoded(4, "PNG", (9, 5))]
_FORMATS = ("jpeg", "png", "", "jpg", "JPEG", "rgb8; jpeg compressed bgr8", "bgr8; png compressed",
            "16UC1; compressedDepth png", "tiff", "webp", "\x00", "png jpeg")


@st.composite
def compressed_images(draw: st.DrawFn) -> dict[str, Any]:
    """Valid JPEG/PNG, truncated, bit-flipped, spliced, random bytes, with matching or lying formats."""
    fmt = draw(st.one_of(st.sampled_from(_FORMATS), st.text(max_size=20)))
    base = draw(st.sampled_from(_VALID))
    mode = draw(st.sampled_from(["valid", "truncate", "flip", "splice", "random", "empty", "tail"]))
    data = bytearray(base)
    if mode == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mode == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif mode == "splice":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + bytearray(draw(st.binary(max_size=64))) + data[i:]
    elif mode == "random":
        data = bytearray(draw(st.binary(max_size=2048)))
        if draw(st.booleans()):  # keep a valid magic so the header parser is reached
            data = bytearray(base[:8]) + data
    elif mode == "empty":
        data = bytearray()
    elif mode == "tail":  # garbage appended after a complete stream
        data += bytearray(draw(st.binary(max_size=32)))
    return {"format": fmt, "data": bytes(data)}


def test_fuzz_compressed_images_are_rejected_and_counted_or_decoded(node) -> None:  # noqa: ANN001
    from sensor_msgs.msg import CompressedImage

    seen = {"rejected": 0, "accepted": 0}

    @FUZZ
    @given(fields=compressed_images())
    def case(fields: dict[str, Any]) -> None:
        msg = CompressedImage()
        msg.header.stamp.sec, msg.header.stamp.nanosec = _next_stamp()
        msg.format, msg.data = fields["format"], fields["data"]
        cam = node._cameras["comp"]
        r = cam.rejected
        _feed(node, "comp", msg)
        seen["rejected" if cam.rejected > r else "accepted"] += 1

    case()
    print(f"compressed images: {seen}")
    assert seen["rejected"] > FUZZ_EXAMPLES // 4 and seen["accepted"] > 10, seen
    _wait_idle(node)
    snap = node._worker.snapshot()
    assert node._worker.alive and snap.state == "ready" and snap.errors == 0, snap


# ----- frames at the engine entry the worker uses ---------------------------------------------------------

@st.composite
def frames(draw: st.DrawFn) -> tuple[Any, Any]:
    dtype = draw(st.sampled_from([np.uint8, np.uint8, np.uint16, np.float32, np.int8, np.bool_]))
    shape = draw(st.one_of(
        st.tuples(st.integers(0, 20), st.integers(0, 20), st.sampled_from([3, 3, 1, 4, 0])),
        st.tuples(st.integers(0, 20), st.integers(0, 20)),
        st.tuples(st.integers(0, 4)),
        st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8), st.just(3)),
    ))
    rgb = np.zeros(shape, dtype=dtype)
    if draw(st.booleans()) and rgb.ndim == 3 and rgb.size and dtype == np.uint8:
        rgb = np.asfortranarray(rgb)  # non-contiguous but valid
    if draw(st.integers(0, 10)) == 0:
        rgb = draw(st.sampled_from([None, [[1, 2, 3]], "frame", 3.0]))
    stamp = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(None), st.text(max_size=3),
                           st.floats(-1e3, 1e6)))
    return rgb, stamp


def test_fuzz_session_add_frame_rejects_without_touching_memory(node) -> None:  # noqa: ANN001
    """The worker's frame entry: `FrameError` (counted by the worker) with the memory bit-identical, or
    accepted. Run on its own session sharing the node's adapter, so nothing else writes to it."""
    from infinipot.errors import FrameError
    from infinipot.session import SessionConfig, StreamingSession

    _wait_idle(node)
    adapter = next(iter(node._worker._sessions.values())).adapter
    session = StreamingSession(adapter, SessionConfig(policy="infinipot", budget_tokens=256))
    rng = np.random.default_rng(0)
    for i in range(4):
        session.add_frame(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 10.0 + i)
    seen = {"rejected": 0, "accepted": 0}

    @FUZZ
    @given(case=frames())
    def check(case: tuple[Any, Any]) -> None:
        rgb, stamp = case
        before = _store_state(session)
        try:
            session.add_frame(rgb, stamp)
        except FrameError as err:
            assert str(err)
            assert _same_state(before, _store_state(session)), "a rejected frame changed the memory"
            seen["rejected"] += 1
        else:
            assert isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size
            assert math.isfinite(float(stamp))
            seen["accepted"] += 1

    check()
    print(f"engine frames: {seen}")
    assert seen["rejected"] > FUZZ_EXAMPLES // 2
    assert session.stats().kv_bytes <= session.stats().kv_cap_bytes


# ----- questions -------------------------------------------------------------------------------------------

_NASTY = st.sampled_from([
    "", " ", "\t\n\r", "\x00", "\x00what?", "what\x00?", "\u200b", "\ufeff?", "\u202eevil", "🤖" * 50,
    "a" * 500, "a" * 501, "x" * 100_000, "\x1b[2J", "?" * 49, "Ω" * 499, "\U0010ffff", "\r\n" * 200,
])
_questions = st.one_of(
    _NASTY,
    st.text(st.characters(exclude_categories=("Cs",)), max_size=80),  # any Unicode but lone surrogates
    st.text(st.characters(min_codepoint=0, max_codepoint=31), max_size=40),  # control characters
    st.text(max_size=600).map(lambda s: s * 3),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(100, 30_000)),
)


def test_fuzz_questions_end_in_answers_or_clean_refusals(node) -> None:  # noqa: ANN001
    """/ask_video's callback with hostile text, cameras and lengths; the memory never changes (asking rolls
    back by contract, refusing never starts)."""
    from infinipot_ros.srv import AskVideo

    rng = np.random.default_rng(1)
    for name in ("raw", "comp"):
        if node._worker.snapshot().sessions[name]["frames_ingested"] == 0:
            for _ in range(4):
                _feed_valid(node, name, rng)
    _wait_idle(node)
    sessions = node._worker._sessions
    assert all(s.stats().frames_ingested > 0 for s in sessions.values())
    before = {name: _store_state(s) for name, s in sessions.items()}
    seen = {"answered": 0, "refused": 0}

    @FUZZ
    @given(question=_questions,
           camera=st.one_of(st.sampled_from(["", "raw", "comp", "nope", "RAW", "raw ", "\x00"]), st.text(max_size=8)),
           max_new=st.one_of(st.integers(0, 4), st.integers(0, 2**32 - 1)))
    def ask(question: str, camera: str, max_new: int) -> None:
        request = AskVideo.Request(question=question, camera=camera, max_new_tokens=max_new)
        response = node._on_ask(request, AskVideo.Response())
        if response.success:
            assert response.error_message == "" and response.tokens_used > 0
            seen["answered"] += 1
        else:
            assert response.error_message and response.answer == ""
            seen["refused"] += 1

    ask()
    print(f"questions: {seen}")
    assert seen["answered"] > FUZZ_EXAMPLES // 20 and seen["refused"] > FUZZ_EXAMPLES // 5, seen
    for name, s in sessions.items():
        assert _same_state(before[name], _store_state(s)), f"questions changed the memory of {name}"
    snap = node._worker.snapshot()
    assert node._worker.alive and snap.errors == 0, snap.last_error


def _feed_valid(node: Any, camera: str, rng: np.random.Generator) -> None:
    from sensor_msgs.msg import CompressedImage

    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    if camera == "comp":
        msg = CompressedImage()
        msg.format, msg.data = "png", _encoded(int(rng.integers(1000)), "PNG", (24, 32))
    else:
        msg = _image_msg(dict(height=24, width=32, encoding="rgb8", step=96, is_bigendian=0, data=rgb.tobytes()))
    msg.header.stamp.sec, msg.header.stamp.nanosec = _next_stamp()
    node._on_image(node._cameras[camera], msg)


# ----- parameters ------------------------------------------------------------------------------------------

_NAMES = [p.name for p in PARAMETERS]
_BY_NAME = {p.name: p for p in PARAMETERS}


@st.composite
def parameter_msgs(draw: st.DrawFn) -> Any:
    """A wire-format rcl_interfaces/Parameter: known or unknown name, any type, any value of that type."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterValue

    name = draw(st.one_of(st.sampled_from(_NAMES), st.sampled_from(["", "nope", "qos_overrides.x", "use_sim_time"]),
                          st.text(max_size=10)))
    value = ParameterValue(type=draw(st.integers(0, 9)))
    value.bool_value = draw(st.booleans())
    value.integer_value = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-5, 100_000)))
    value.double_value = draw(st.one_of(st.floats(), st.floats(-10, 5000)))
    value.string_value = draw(st.one_of(st.sampled_from(["reset", "keep", "lower_budget", "full", "cuda"]),
                                        st.text(st.characters(exclude_categories=("Cs",)), max_size=20)))
    value.byte_array_value = [bytes([b]) for b in draw(st.binary(max_size=4))]
    value.bool_array_value = draw(st.lists(st.booleans(), max_size=3))
    value.integer_array_value = draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3))
    value.double_array_value = draw(st.lists(st.floats(), max_size=3))
    value.string_array_value = draw(st.lists(st.text(max_size=5), max_size=3))
    return ParameterMsg(name=name, value=value)


@st.composite
def plausible_updates(draw: st.DrawFn) -> Any:
    """A runtime parameter with the right type and a value near (inside or just outside) its range."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue

    spec = draw(st.sampled_from([p for p in PARAMETERS if not p.read_only]))
    if spec.choices:
        value = ParameterValue(type=ParameterType.PARAMETER_STRING,
                               string_value=draw(st.one_of(st.sampled_from(spec.choices), st.text(max_size=6))))
    elif isinstance(spec.default, bool):
        value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=draw(st.booleans()))
    elif isinstance(spec.default, float):
        lo, hi = float(spec.min_value), float(spec.max_value)
        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=draw(st.one_of(
            st.floats(lo, hi), st.sampled_from([lo, hi, lo - 1e-9, hi * 1.0001, math.nan, math.inf, -0.0]))))
    else:
        lo, hi = int(spec.min_value), int(spec.max_value)
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=draw(st.one_of(
            st.integers(lo, hi), st.sampled_from([lo - 1, hi + 1, -(2**63), 2**63 - 1]))))
    return ParameterMsg(name=spec.name, value=value)


def test_fuzz_parameter_updates_are_validated(node) -> None:  # noqa: ANN001
    """rclpy's own set_parameters service callback (what `ros2 param set` reaches), with any wire value:
    it must return a result, never raise; accepted values are in range and reach the node's settings."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    service = node._parameter_service
    original = {n: node.get_parameter(n).value for n in _NAMES}
    seen = {"accepted": 0, "refused": 0}

    @FUZZ
    @given(params=st.lists(st.one_of(parameter_msgs(), plausible_updates()), min_size=1, max_size=3))
    def update(params: list[Any]) -> None:
        before = {p.name: node.get_parameter(p.name).value for p in params if p.name in _BY_NAME}
        response = service._set_parameters_callback(SetParameters.Request(parameters=params),
                                                    SetParameters.Response())
        assert len(response.results) == len(params)
        for p, result in zip(params, response.results):
            if result.successful:
                seen["accepted"] += 1
                spec = _BY_NAME[p.name]
                value = node.get_parameter(p.name).value
                assert not spec.read_only and spec.check(value) is None, (p.name, value)
                if isinstance(value, float):
                    assert math.isfinite(value), (p.name, value)
                assert getattr(node.settings, p.name) == value
            else:
                seen["refused"] += 1
                assert result.reason
        for name, value in before.items():
            if not any(p.name == name for p, r in zip(params, response.results) if r.successful):
                now = node.get_parameter(name).value
                assert now == value or (isinstance(value, float) and math.isnan(value) and math.isnan(now))

    try:
        update()
    finally:
        node.set_parameters([Parameter(n, value=original[n]) for n in _NAMES
                             if not _BY_NAME[n].read_only])
    print(f"parameter updates: {seen}")
    assert seen["accepted"] > 20 and seen["refused"] > FUZZ_EXAMPLES // 2, seen
    assert node._worker.alive
