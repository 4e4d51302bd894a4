"""`infinipot-demo` (`make demo`): the node on a synthetic camera, one question, then a clean exit.

Starts `infinipot_node` and `infinipot_synthetic_camera` as separate processes on a fresh ROS domain with
localhost-only discovery (so it cannot disturb, or be disturbed by, anything else on the network), waits
until frames reach the video memory, asks through /ask_video like any client would, prints the answer and
the memory statistics, and shuts both processes down with SIGINT.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

__all__ = ["main"]

DISCLAIMER = (
    "NOTE: the default model builtin:tiny-qwen2-vl is a tiny *untrained* Qwen2-VL that exists to exercise\n"
    "      the real architecture end to end; its answers are meaningless. Pass --model with a real\n"
    "      checkpoint (e.g. Qwen/Qwen2-VL-2B-Instruct) for real answers."
)


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
    parser.add_argument("--model", default="builtin:tiny-qwen2-vl")
    parser.add_argument("--question", default="What colour was the cube?")
    parser.add_argument("--budget-tokens", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8, help="frames to ingest before asking")
    parser.add_argument("--timeout", type=float, default=150.0, help="give up after this many seconds")
    args = parser.parse_args(argv)

    domain = str(os.getpid() % 100 + 1)
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    os.environ.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    # Imported after the environment is set: rclpy reads it at init.
    import rclpy
    from rclpy.node import Node

    from infinipot_ros.msg import CacheStats
    from infinipot_ros.srv import AskVideo

    from .ask_cli import format_response

    print(f"[demo] ROS_DOMAIN_ID={domain}, localhost discovery; model {args.model}")
    if args.model.startswith("builtin:"):
        print(DISCLAIMER)
    py = [sys.executable, "-m"]
    node = subprocess.Popen(
        [*py, "infinipot_ros.node", "--ros-args", "-p", f"model:={args.model}",
         "-p", f"budget_tokens:={args.budget_tokens}", "-p", "sample_rate_hz:=4.0",
         "-p", "cameras:=['/camera/image_raw']", "-p", "stats_period_s:=0.5"],
        env=env,
    )
    camera = subprocess.Popen(
        [*py, "infinipot_ros.synthetic_camera", "--ros-args", "-p", "rate_hz:=10.0"], env=env
    )
    deadline = time.monotonic() + args.timeout
    rclpy.init()
    client_node = Node("infinipot_demo")
    latest: dict[str, CacheStats] = {}
    client_node.create_subscription(
        CacheStats, "/infinipot/cache_stats", lambda m: latest.__setitem__(m.camera, m), 10
    )
    code = 1
    try:
        print(f"[demo] waiting for {args.frames} frames in the video memory ...")
        while time.monotonic() < deadline:
            rclpy.spin_once(client_node, timeout_sec=0.2)
            if node.poll() is not None or camera.poll() is not None:
                print("[demo] a process exited early", file=sys.stderr)
                return 1
            stats = latest.get("camera")
            if stats is not None and stats.frames_ingested >= args.frames:
                break
        else:
            print("[demo] timed out waiting for frames", file=sys.stderr)
            return 1
        client = client_node.create_client(AskVideo, "/ask_video")
        if not client.wait_for_service(timeout_sec=max(deadline - time.monotonic(), 1.0)):
            print("[demo] /ask_video did not appear", file=sys.stderr)
            return 1
        future = client.call_async(AskVideo.Request(question=args.question, camera="", max_new_tokens=16))
        rclpy.spin_until_future_complete(client_node, future, timeout_sec=max(deadline - time.monotonic(), 1.0))
        response = future.result()
        if response is None:
            print("[demo] no answer in time", file=sys.stderr)
            return 1
        print()
        print(format_response(args.question, response))
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
        _stop(camera, "camera")
        _stop(node, "node")
    print(f"[demo] done (exit {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
