"""`infinipot-demo` (`make demo`): the node on a synthetic camera, one question, then a clean exit.

Starts `infinipot_node` and `infinipot_synthetic_camera` as separate processes on a fresh ROS domain with
localhost-only discovery (so it cannot disturb, or be disturbed by, anything else on the network). The camera
shows the seeded synthetic world; the demo builds the same world, so it knows what happened: it waits until
two objects have come and gone, asks through /ask_video like any client would about the first of them (seen
a while ago), prints the answer with the right one, the memory statistics, and shuts both processes down.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from infinipot_eval.question_gen import make_questions
from infinipot_eval.questions import Question
from infinipot_eval.scoring import is_correct
from infinipot_eval.world import World

from .synthetic_camera import make_world

__all__ = ["main", "demo_question", "default_model"]

SAMPLE_RATE_HZ = 2.0
CAMERA_SIZE = 112


def default_model() -> str:
    """The node's default model parameter (the shipped trained checkpoint), so the demo shows what users get."""
    from infinipot_ros.parameters import PARAMETERS

    return next(spec.default for spec in PARAMETERS if spec.name == "model")


def demo_question(world: World) -> Question:
    """A colour question about the first object, asked in the quiet stretch after the second one left."""
    first, second = world.events[0], world.events[EVENTS_BEFORE_QUESTION - 1]
    ask_at = second.end + 1.0
    questions = make_questions(world, kinds=("colour",), times=[ask_at], per_checkpoint=1)
    about_first = [q for q in questions if first.colour in q.answers and first.shape in q.question]
    return about_first[0] if about_first else questions[0]

DISCLAIMER = (
    "NOTE: builtin:* models are tiny *untrained* networks of the real architectures that exist to exercise\n"
    "      the code end to end; their answers are meaningless."
)
#: objects that must have come and gone before the demo asks
EVENTS_BEFORE_QUESTION = 2


def _stop(proc: subprocess.Popen, name: str, timeout: float = 8.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"[demo] {name} did not stop on SIGINT; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infinipot-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model(), help="model id or path (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the synthetic world")
    parser.add_argument("--budget-tokens", type=int, default=64,
                        help="KV threshold |M|; small, so the memory is compressed before the question")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    parser.add_argument("--timeout", type=float, default=150.0, help="give up after this many seconds")
    args = parser.parse_args(argv)

    world = make_world(args.seed, args.rate, CAMERA_SIZE)
    question = demo_question(world)
    frames_needed = int(question.time * SAMPLE_RATE_HZ)

    domain = str(os.getpid() % 100 + 1)
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    os.environ.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    # Imported after the environment is set: rclpy reads it at init.
    import rclpy
    from rclpy.node import Node

    from diagnostic_msgs.msg import DiagnosticArray

    from infinipot_ros.msg import CacheStats
    from infinipot_ros.srv import AskVideo

    from infinipot_ros.ask_cli import format_response

    print(f"[demo] ROS_DOMAIN_ID={domain}, localhost discovery; model {args.model}")
    if args.model.startswith("builtin:"):
        print(DISCLAIMER)
    py = [sys.executable, "-m"]
    node = subprocess.Popen(
        [*py, "infinipot_ros.node", "--ros-args", "-p", f"model:={args.model}",
         "-p", f"budget_tokens:={args.budget_tokens}", "-p", f"sample_rate_hz:={SAMPLE_RATE_HZ}",
         "-p", "cameras:=['/camera/image_raw']", "-p", "stats_period_s:=0.5"],
        env=env,
    )
    # The camera starts only once the model is loaded, so the stream's start is not lost to loading time.
    camera: subprocess.Popen | None = None
    camera_cmd = [*py, "infinipot_eval.synthetic_camera", "--ros-args", "-p", f"rate_hz:={args.rate}",
                  "-p", f"seed:={args.seed}", "-p", f"size:={CAMERA_SIZE}"]
    deadline = time.monotonic() + args.timeout
    rclpy.init()
    client_node = Node("infinipot_demo")
    latest: dict[str, CacheStats] = {}
    client_node.create_subscription(
        CacheStats, "/infinipot/cache_stats", lambda m: latest.__setitem__(m.camera, m), 10
    )
    worker_state: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "infinipot: worker":
                worker_state.update({kv.key: kv.value for kv in status.values})

    client_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    code = 1
    try:
        print(f"[demo] the camera shows {EVENTS_BEFORE_QUESTION} objects one after another; the question comes "
              f"at stream time {question.time:.1f} s ({frames_needed} frames at {SAMPLE_RATE_HZ:g} Hz)")
        while time.monotonic() < deadline:
            rclpy.spin_once(client_node, timeout_sec=0.2)
            if node.poll() is not None or (camera is not None and camera.poll() is not None):
                print("[demo] a process exited early", file=sys.stderr)
                return 1
            stats = latest.get("camera")
            if camera is None and worker_state.get("state") == "ready":
                camera = subprocess.Popen(camera_cmd, env=env)
            if stats is not None and stats.frames_ingested >= frames_needed:
                break
        else:
            print("[demo] timed out waiting for frames", file=sys.stderr)
            return 1
        client = client_node.create_client(AskVideo, "/ask_video")
        if not client.wait_for_service(timeout_sec=max(deadline - time.monotonic(), 1.0)):
            print("[demo] /ask_video did not appear", file=sys.stderr)
            return 1
        future = client.call_async(AskVideo.Request(question=question.question, camera="", max_new_tokens=16))
        rclpy.spin_until_future_complete(client_node, future, timeout_sec=max(deadline - time.monotonic(), 1.0))
        response = future.result()
        if response is None:
            print("[demo] no answer in time", file=sys.stderr)
            return 1
        print()
        print(format_response(question.question, response))
        verdict = "correct" if response.success and is_correct(question, response.answer) else "wrong"
        print(f"right answer: {' / '.join(question.answers)}  -> the model's answer is {verdict}")
        # One fresh stats message after the question (asking must not change the memory).
        latest.clear()
        while "camera" not in latest and time.monotonic() < deadline:
            rclpy.spin_once(client_node, timeout_sec=0.2)
        s = latest.get("camera", stats)
        print(
            f"cache: {s.tokens_held}/{s.token_budget} tokens, {s.kv_bytes}/{s.kv_cap_bytes} bytes KV "
            f"({s.policy}); frames received {s.frames_received}, sampled {s.frames_sampled}, "
            f"ingested {s.frames_ingested}, dropped {s.frames_dropped}, rejected {s.frames_rejected}; "
            f"{s.compressions} compressions evicted {s.tokens_evicted} tokens"
        )
        if args.model.startswith("builtin:"):
            print(f"(reminder: {args.model} is untrained; the answer above is meaningless text)")
        code = 0 if response.success else 1
    except KeyboardInterrupt:
        code = 130
    finally:
        client_node.destroy_node()
        rclpy.try_shutdown()
        if camera is not None:
            _stop(camera, "camera")
        _stop(node, "node")
    print(f"[demo] done (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
