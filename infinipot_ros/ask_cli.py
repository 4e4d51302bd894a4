"""`infinipot-ask`: ask the node a question from the command line (like `ros2 service call`, but readable).

Exit codes, for scripts: 0 answered; 1 the node refused or failed (success=false) or gave no answer in
time; 2 no /ask_video service found within --wait seconds; 64 bad arguments (EX_USAGE; e.g. a negative
--max-tokens), reported before anything is sent.

`--wait 0` tries once: a node that is already running is found (DDS discovery of a running node took
0.25-2.3 s here, so the client always allows `DISCOVERY_S` for it), but the client does not wait for one to
start. A larger --wait waits that long for the service to appear.
"""
from __future__ import annotations

import argparse
import math
import sys

import rclpy
from rclpy.node import Node

from infinipot_ros.srv import AskVideo

__all__ = ["main", "format_response", "DISCOVERY_S", "USAGE_ERROR"]

#: Seconds any call allows DDS discovery to find a node that is already running (--wait 0 included).
DISCOVERY_S = 3.0
#: Exit status for bad arguments (sysexits.h EX_USAGE); 2 already means "no service".
USAGE_ERROR = 64
#: AskVideo.max_new_tokens is a uint32
_MAX_TOKENS = 2**32 - 1


class _Parser(argparse.ArgumentParser):
    """argparse with the EX_USAGE exit status (argparse's own 2 would read as "no service")."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.max_tokens <= _MAX_TOKENS:
        parser.error(f"--max-tokens must be between 0 (the node's max_answer_tokens) and {_MAX_TOKENS}, "
                     f"got {args.max_tokens}")
    if not 0 <= args.max_evidence <= _MAX_TOKENS:
        parser.error(f"--max-evidence must be between 0 (the node's max_evidence) and {_MAX_TOKENS} (the node clamps "
                     f"large values), got {args.max_evidence}")
    if not (math.isfinite(args.wait) and args.wait >= 0):
        parser.error(f"--wait must be a number of seconds >= 0, got {args.wait}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if not args.service.strip():
        parser.error("--service must name a service")


def _stamp(t: object) -> float:
    return t.sec + t.nanosec * 1e-9  # type: ignore[attr-defined]


def _ago(seconds: float) -> str:
    """"12.3 s ago" / "4.0 s ahead" (a camera clock ahead of ours) relative to now."""
    return f"{seconds:.1f} s ago" if seconds >= 0 else f"{-seconds:.1f} s ahead"


def format_evidence(response: AskVideo.Response, now: float) -> list[str]:
    """One line per evidence frame, strongest first: time relative to `now` (seconds, the same clock as
    the camera stamps), absolute stamp, and weight."""
    lines = []
    for rank, (stamp, weight) in enumerate(zip(response.evidence_stamps, response.evidence_weights), 1):
        t = _stamp(stamp)
        lines.append(f"  {rank}. {_ago(now - t)} (stamp {stamp.sec}.{stamp.nanosec:09d}), weight {weight:.2f}")
    return lines


def format_response(question: str, response: AskVideo.Response, now: float | None = None) -> str:
    """Human-readable lines for one response; `now` (seconds) places the evidence in time (default: the
    newest frame in memory)."""
    if not response.success:
        return f"Q: {question}\nrefused: {response.error_message}"
    start, end = _stamp(response.memory_start), _stamp(response.memory_end)
    text = (
        f"Q: {question}\nA: {response.answer}\n"
        f"latency {response.latency_s:.3f}s (first token {response.time_to_first_token_s:.3f}s), "
        f"{response.tokens_used} tokens attended, memory spans {start:.3f}s .. {end:.3f}s "
        f"({end - start:.1f}s of stream time)"
    )
    evidence = format_evidence(response, end if now is None else now)
    if evidence:
        text += "\nevidence (strongest first):\n" + "\n".join(evidence)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="infinipot-ask", description="Ask the infinipot node about what its camera saw.")
    parser.add_argument("question")
    parser.add_argument("--camera", default="", help="camera name (default: the node's first camera)")
    parser.add_argument("--max-tokens", type=int, default=0, help="answer length limit (0 = node default)")
    parser.add_argument("--max-evidence", type=int, default=0,
                        help="evidence frames to list (0 = node default; the node clamps large values)")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for the service to appear; 0 = try once (a running node is still "
                             f"found: discovery gets {DISCOVERY_S:g} s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    parser.add_argument("--service", default="/ask_video")
    argv = sys.argv[1:] if argv is None else argv
    ros_args = rclpy.utilities.remove_ros_args(["infinipot-ask", *argv])[1:]
    args = parser.parse_args(ros_args)
    _validate(parser, args)

    rclpy.init(args=["infinipot-ask", *argv])
    node = Node("infinipot_ask")
    try:
        client = node.create_client(AskVideo, args.service)
        waited = max(args.wait, DISCOVERY_S)
        if not client.wait_for_service(timeout_sec=waited):
            print(f"no service {args.service} within {waited:g}s (is the node running, same "
                  f"ROS_DOMAIN_ID?)", file=sys.stderr)
            return 2
        request = AskVideo.Request(
            question=args.question, camera=args.camera, max_new_tokens=args.max_tokens,
            max_evidence=args.max_evidence,
        )
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done() or future.result() is None:
            print(f"no answer within {args.timeout:g}s", file=sys.stderr)
            return 1
        response = future.result()
        now = node.get_clock().now().nanoseconds * 1e-9
        print(format_response(args.question, response, now))
        return 0 if response.success else 1
    except KeyboardInterrupt:
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
