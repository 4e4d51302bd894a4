"""Malformed input over real DDS to a real node process: counted, survived, and the node still answers.

A smaller batch than the in-process fuzzing (test_fuzz_inputs.py) because every message crosses a real
transport: malformed raw and compressed images from the same generators the stress tool uses, hostile
questions, and wrong parameter updates through the parameter service. Ends with SIGINT (clean, < 5 s).
"""
from __future__ import annotations

import signal
import time

import numpy as np
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage, Image

from infinipot_eval.malformed import malformed_compressed_fields, malformed_image_fields
from infinipot_eval.stress import _encode, _malformed_pool

BATCH = 80  # per camera


def test_malformed_batch_over_dds(rel) -> None:  # noqa: ANN001
    # reliable image QoS: this test counts every message, so none may be dropped in transport
    rig = rel.NodeRig(rel, 81, ["-p", "budget_tokens:=256", "-p", "max_question_chars:=300",
                                "-p", "image_qos:=reliable"], compressed=True)
    try:
        rig.wait_ready()
        deadline = time.monotonic() + 30.0  # messages published before the subscriptions match are lost
        while (rig.raw_pub.get_subscription_count() < 1 or rig.comp_pub.get_subscription_count() < 1) \
                and time.monotonic() < deadline:
            rig.ros.spin_for(0.05)
        base = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        raw_pool = _malformed_pool(False, base, BATCH, seed=1)
        comp_pool = _malformed_pool(True, base, BATCH, seed=2)
        for i in range(BATCH):
            f = raw_pool[i]
            msg = Image(height=f["height"], width=f["width"], encoding=f["encoding"], step=f["step"],
                        is_bigendian=f["is_bigendian"], data=f["data"])
            msg.header.stamp.sec = 2000 + i
            rig.raw_pub.publish(msg)
            c = comp_pool[i]
            cmsg = CompressedImage(format=c["format"], data=c["data"])
            cmsg.header.stamp.sec = 2000 + i
            rig.comp_pub.publish(cmsg)
            rig.ros.spin_for(0.02)
        raw = rig.fresh_stats("raw", lambda s: s.frames_received >= BATCH, timeout=30)
        comp = rig.fresh_stats("comp", lambda s: s.frames_received >= BATCH, timeout=30)
        assert (raw.frames_received, comp.frames_received) == (BATCH, BATCH), "transport lost messages"
        assert raw.frames_rejected == BATCH and comp.frames_rejected == BATCH
        assert raw.frames_ingested == 0 and comp.frames_ingested == 0
        assert rig.node.alive()

        # Hostile questions over the wire: each a clean success=false.
        for q in ["", " \t", "\x00", "x" * 301, "\u202e" * 301, "a\x00b" * 200, "🤖" * 400]:
            resp = rig.ask(q, camera="raw")
            assert not resp.success and resp.error_message
        assert not rig.ask("Where?", camera="nope").success
        assert not rig.ask("Anything?", camera="raw").success  # no frame accepted yet

        # Wrong parameter updates through the real parameter service.
        bad = [("sample_rate_hz", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float("nan"))),
               ("sample_rate_hz", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="fast")),
               ("request_timeout_s", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=-1.0)),
               ("max_image_pixels", ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=2**62)),
               ("on_model_error", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="ignore")),
               ("budget_tokens", ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=1)),
               ("no_such_param", ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=True))]
        req = SetParameters.Request(parameters=[ParameterMsg(name=n, value=v) for n, v in bad])
        results = rig.ros.call(rig.param_client, req).results
        assert len(results) == len(bad) and not any(r.successful for r in results)
        assert all(r.reason for r in results)

        # Still alive, still ingesting good frames and answering.
        rig.send_frames(4)
        rig.fresh_stats("raw", lambda s: s.frames_ingested >= 4)
        assert rig.ask("What now?", camera="raw").success
        assert rig.fresh_stats("raw").frames_rejected == BATCH
    finally:
        code, elapsed, out = rig.close(signal.SIGINT)
    assert code == 0 and elapsed < 5.0, f"exit {code} after {elapsed:.1f}s\n{out[-3000:]}"
    assert "Traceback" not in out, out[-5000:]
    assert "malformed image dropped" in out  # logged (throttled), not only counted


def test_generators_only_make_unconvertible_messages() -> None:
    from types import SimpleNamespace

    import pytest

    from infinipot_ros.conversion import ImageConversionError, message_to_rgb

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    jpeg, png = _encode(rgb, "JPEG"), _encode(rgb, "PNG")
    for _ in range(300):
        f = malformed_image_fields(rng, 30, 40)
        with pytest.raises(ImageConversionError):
            message_to_rgb(SimpleNamespace(**{k: v for k, v in f.items() if k != "fault"}))
        c = malformed_compressed_fields(rng, jpeg, png)
        with pytest.raises(ImageConversionError):
            message_to_rgb(SimpleNamespace(format=c["format"], data=c["data"]))
