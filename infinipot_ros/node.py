"""The `infinipot` node: camera topics in, a compressed video memory, questions answered on /ask_video.

Threading, chosen on purpose:
- each camera subscription has its own mutually exclusive callback group: its callback converts, samples
  and enqueues (cheap, and never touches the model), and cameras do not wait for each other;
- `/ask_video` and `~/reset` share a reentrant group: their callbacks *block* until the worker answers, so
  several questions can wait at once without holding up subscriptions or timers;
- the stats timer has its own group, so statistics keep flowing while questions wait;
- the model itself lives on one `InferenceWorker` thread (see worker.py), fed by bounded queues.
A `BoundedThreadsExecutor` (executor.py) runs the callbacks: rclpy's MultiThreadedExecutor busy-spins once
all its threads are blocked, which starved the cameras under load; `executor_threads` sizes the pool so
the blocking callbacks can never take every thread.

Shutdown on SIGINT/SIGTERM: rclpy's signal handlers shut the context down, `spin` returns, the worker is
stopped (waiting callers are answered), and the process exits within a few seconds without a traceback.
"""
from __future__ import annotations

import os

# Before torch (and its OpenMP runtime) is imported: by default OpenMP threads busy-wait between parallel
# regions, which starves the executor and worker threads of this process on small CPUs (measured here: a
# 2000-token answer took 24 s instead of 1.4 s on 2 cores). Passive waiting costs nothing measurable on
# big models. An explicit OMP_WAIT_POLICY in the environment still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rcl_interfaces.msg import SetParametersResult  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup  # noqa: E402
from rclpy._rclpy_pybind11 import RCLError  # noqa: E402
from rclpy.executors import ExternalShutdownException  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from infinipot_ros.msg import CacheStats, VideoAnswer  # noqa: E402
from infinipot_ros.srv import AskVideo, GetMemory  # noqa: E402

from .conversion import ImageConversionError, message_to_rgb  # noqa: E402
from .executor import BoundedThreadsExecutor  # noqa: E402
from .diagnostics import CameraHealth, camera_status, worker_status  # noqa: E402
from .frame_queue import WorkQueues  # noqa: E402
from .transport import TransportLossCounter  # noqa: E402
from .parameters import CameraConfig, NodeSettings, declare_parameters, validate_update  # noqa: E402
from infinipot.sampling import FrameSampler  # noqa: E402
from .worker import AskRequest, AskResult, FrameItem, InferenceWorker, MemoryRequest, MemoryResult, ResetRequest  # noqa: E402,E501

__all__ = ["InfiniPotNode", "main"]

#: Service requests DDS holds for the node before a callback takes them. rclpy's default service QoS keeps
#: only the last 10, so in a burst of questions the older ones were overwritten in transport and their
#: callers never got a reply (seen with 30 concurrent calls). Deep enough for bursts from many clients;
#: every request that reaches a callback is answered or refused with "busy".
SERVICE_QUEUE_DEPTH = 256
#: Most evidence frames one answer returns; a larger request's max_evidence is clamped to it (bounds the reply).
MAX_EVIDENCE_LIMIT = 256
#: Seconds the worker status stays ERROR after a failed model call.
MODEL_ERROR_HOLD_S = 5.0


def seconds_to_time(seconds: float | None) -> Time:
    """Stream seconds → builtin_interfaces/Time (zero when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return Time()
    sec = int(seconds)
    nanosec = int(round((seconds - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


@dataclass
class _CameraState:
    """Node-side state of one camera: its sampler and counters (touched by its own callback group only)."""

    config: CameraConfig
    sampler: FrameSampler
    received: int = 0
    sampled: int = 0
    sampler_dropped: int = 0
    out_of_order: int = 0
    rejected: int = 0
    last_frame_wall: float | None = None
    transport: TransportLossCounter = field(default_factory=TransportLossCounter)
    # stats-timer bookkeeping
    prev_rejected: int = 0
    prev_received: int = 0
    prev_lost: int = 0
    prev_ingested: int = 0
    prev_time: float = field(default_factory=time.monotonic)


class InfiniPotNode(Node):
    """Streams camera frames into per-camera InfiniPot-V video memories and answers questions about them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("infinipot", **kwargs)
        declare_parameters(self)
        self.settings = NodeSettings.from_node(self)  # ValueError on inconsistent values
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        s = self.settings
        self._queues: WorkQueues = WorkQueues(s.queue_size, s.max_pending_questions)
        self._cameras = {
            c.name: _CameraState(config=c, sampler=FrameSampler(s.sample_rate_hz, stamp_restart_s=s.stamp_restart_s))
            for c in s.cameras
        }
        self._worker = InferenceWorker(s, self._queues, self.get_logger())
        self._prev_errors = 0

        for cam in self._cameras.values():
            msg_type = CompressedImage if cam.config.compressed else Image
            self.create_subscription(
                msg_type,
                cam.config.topic,
                # two arguments: rclpy passes the MessageInfo too (publisher sequence numbers)
                lambda msg, info, cam=cam: self._on_image(cam, msg, info),
                _image_qos(s.image_qos, s.image_qos_depth),
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        waiting = ReentrantCallbackGroup()
        service_qos = QoSProfile(depth=SERVICE_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                                 history=HistoryPolicy.KEEP_LAST)
        self.create_service(AskVideo, "/ask_video", self._on_ask, qos_profile=service_qos, callback_group=waiting)
        self.create_service(Trigger, "~/reset", self._on_reset, qos_profile=service_qos, callback_group=waiting)
        self.create_service(GetMemory, "~/memory", self._on_memory, qos_profile=service_qos, callback_group=waiting)
        self._answers_pub = self.create_publisher(VideoAnswer, "~/answers", 10)
        self._stats_pub = self.create_publisher(CacheStats, "~/cache_stats", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._stats_timer = self.create_timer(
            s.stats_period_s, self._publish_stats, callback_group=self._timer_group
        )
        self._worker.start()
        self.get_logger().info(
            f"listening to {', '.join(f'{c.name}={c.topic}' for c in s.cameras)}; model {s.model} "
            f"(policy {s.policy}, budget "
            f"{'none: uncapped (policy full)' if s.policy == 'full' else f'{s.budget_mb} MiB' if s.budget_mb else f'{s.budget_tokens} tokens'})"
        )

    # ----- parameters ---------------------------------------------------------------------------
    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        return validate_update(params)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        """Runtime-changeable parameters only (the others are read-only)."""
        for p in params:
            if p.name == "sample_rate_hz":
                for cam in self._cameras.values():
                    cam.sampler.rate_hz = p.value
            elif p.name == "stamp_restart_s":
                for cam in self._cameras.values():
                    cam.sampler.stamp_restart_s = p.value
            elif p.name == "stats_period_s":
                self._stats_timer.cancel()
                self.destroy_timer(self._stats_timer)
                self._stats_timer = self.create_timer(
                    p.value, self._publish_stats, callback_group=self._timer_group
                )
            if hasattr(self.settings, p.name):
                setattr(self.settings, p.name, p.value)

    # ----- frames -------------------------------------------------------------------------------
    def _on_image(self, cam: _CameraState, msg: Image | CompressedImage, info: dict | None = None) -> None:
        """Count transport loss, sample by header stamp, convert, enqueue. Never blocks on the model."""
        cam.received += 1
        cam.transport.observe(info)
        cam.last_frame_wall = time.monotonic()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        decision = cam.sampler.peek(stamp)
        if not decision.keep and not self.settings.validate_all_frames:
            self._not_sampled(cam, stamp, decision)
            return
        try:
            rgb = message_to_rgb(msg, self.settings.max_image_pixels)
        except ImageConversionError as err:
            # Not committed to the sampler: a malformed frame must not take a good frame's slot.
            cam.rejected += 1
            self.get_logger().warning(
                f"camera {cam.config.name}: malformed image dropped: {err}", throttle_duration_sec=2.0
            )
            return
        if not decision.keep:  # validated only (validate_all_frames), not sampled
            self._not_sampled(cam, stamp, decision)
            return
        cam.sampler.commit(stamp, decision)
        cam.sampled += 1
        self._queues.frames.push(
            cam.config.name, FrameItem(cam.config.name, rgb, stamp, restarted=decision.restarted)
        )

    @staticmethod
    def _not_sampled(cam: _CameraState, stamp: float, decision: Any) -> None:
        """Record a frame the sampler does not keep: thinned (skipped) or a little earlier (out of order)."""
        cam.sampler.commit(stamp, decision)
        if decision.out_of_order:
            cam.out_of_order += 1
        else:
            cam.sampler_dropped += 1

    # ----- questions ----------------------------------------------------------------------------
    def _check_question(self, request: AskVideo.Request) -> tuple[str, str]:
        """(camera name, error message or "")."""
        cameras = self._cameras
        name = request.camera or next(iter(cameras))
        if name not in cameras:
            return name, f"unknown camera {name!r}; known cameras: {', '.join(cameras)}"
        if not request.question.strip():
            return name, "empty question"
        if len(request.question) > self.settings.max_question_chars:
            return name, (
                f"question too long: {len(request.question)} characters > max_question_chars "
                f"{self.settings.max_question_chars}"
            )
        snap = self._worker.snapshot()
        held = snap.sessions.get(name, {}).get("frames_added", 0)
        if cameras[name].sampled == 0 and not held:
            return name, f"no frames received yet from camera {name!r} ({cameras[name].config.topic})"
        if snap.state == "error":
            return name, f"model not available: {snap.state_message}"
        return name, ""

    def _on_ask(self, request: AskVideo.Request, response: AskVideo.Response) -> AskVideo.Response:
        arrived = time.monotonic()
        camera, problem = self._check_question(request)
        if problem:
            result = AskResult(success=False, error_message=problem, latency_s=time.monotonic() - arrived)
        else:
            limit = self.settings.max_answer_tokens
            max_new = min(request.max_new_tokens or limit, limit)
            timeout = self.settings.request_timeout_s
            req = AskRequest(camera, request.question, max_new, timeout,
                             max_evidence=self._evidence_count(request.max_evidence))
            result = self._submit(req, "questions", "answer")
        response.success = result.success
        response.answer = result.answer
        response.error_message = result.error_message
        response.memory_start = seconds_to_time(result.memory_start)
        response.memory_end = seconds_to_time(result.memory_end)
        response.latency_s = float(result.latency_s)
        response.time_to_first_token_s = float(result.ttft_s)
        response.tokens_used = int(result.tokens_used)
        response.evidence_stamps = [seconds_to_time(start) for start, _ in result.evidence]
        response.evidence_weights = [float(weight) for _, weight in result.evidence]
        if self.context.ok():  # at shutdown a waiting question is answered after the context is gone
            try:
                self._publish_answer(camera, request.question, response)
            except Exception as err:  # noqa: BLE001 - the context went down between the check and here
                self.get_logger().debug(f"answer not published: {err}")
        if not result.success:
            self.get_logger().info(f"question refused ({camera}): {result.error_message}")
        return response

    def _publish_answer(self, camera: str, question: str, response: AskVideo.Response) -> None:
        msg = VideoAnswer()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.camera = camera
        msg.question = question
        msg.answer = response.answer
        msg.success = response.success
        msg.error_message = response.error_message
        msg.memory_start = response.memory_start
        msg.memory_end = response.memory_end
        msg.latency_s = response.latency_s
        msg.evidence_stamps = list(response.evidence_stamps)
        msg.evidence_weights = list(response.evidence_weights)
        self._answers_pub.publish(msg)

    def _submit(self, req: AskRequest | MemoryRequest, waiting: str, reply: str) -> Any:
        """Queue `req` for the worker and wait for its result; refused at once when the worker is gone or
        the queue is full, failed after request_timeout_s (the worker then skips it)."""
        timeout = self.settings.request_timeout_s
        if not self._worker.alive:
            req.fail("model worker is not running")
        elif not self._queues.requests.push(req):
            req.fail(f"busy: {self.settings.max_pending_questions} {waiting} already waiting (max_pending_questions)")
        result = req.wait(timeout)
        if result is None:
            req.cancel()
            req.fail(f"no {reply} within request_timeout_s={timeout:g}s")
            result = req.wait(0)
        return result

    def _evidence_count(self, requested: int) -> int:
        """Evidence frames for one answer: the request's number clamped to MAX_EVIDENCE_LIMIT, 0 = the node's
        max_evidence; nothing when the node has evidence off (max_evidence 0)."""
        default = self.settings.max_evidence
        if default <= 0:
            return 0
        return min(int(requested) or default, MAX_EVIDENCE_LIMIT)

    def _on_memory(self, request: GetMemory.Request, response: GetMemory.Response) -> GetMemory.Response:
        """Each frame the camera's memory still holds, with its stamps and the tokens kept of it."""
        camera = request.camera or next(iter(self._cameras))
        response.camera = camera
        if camera not in self._cameras:
            result = MemoryResult(False, f"unknown camera {camera!r}; known cameras: {', '.join(self._cameras)}")
        else:
            result = self._submit(MemoryRequest(camera), "requests", "reply")
        response.success = result.success
        response.error_message = result.error_message
        response.frame_stamps = [seconds_to_time(start) for start, _, _ in result.frames]
        response.frame_end_stamps = [seconds_to_time(end) for _, end, _ in result.frames]
        response.frame_tokens = [float(tokens) for _, _, tokens in result.frames]
        response.tokens_held = int(result.tokens_held)
        response.prefix_tokens = int(result.prefix_tokens)
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        req = ResetRequest()
        if not self._worker.alive or not self._queues.requests.push(req):
            response.success, response.message = False, "worker not running or busy"
            return response
        result = req.wait(self.settings.request_timeout_s)
        if result is None:
            req.cancel()
            response.success, response.message = False, "reset timed out"
            return response
        for cam in self._cameras.values():
            cam.sampler.reset()  # the next frame starts the new memory at once
        response.success, response.message = result
        self.get_logger().info(f"reset: {response.message}")
        return response

    # ----- statistics ---------------------------------------------------------------------------
    def _publish_stats(self) -> None:
        snap = self._worker.snapshot()
        stamp = self.get_clock().now().to_msg()
        now = time.monotonic()
        hardware_id = self.get_fully_qualified_name()
        diag = DiagnosticArray()
        diag.header.stamp = stamp
        worker_ok = self._worker.alive and snap.state != "error"
        for name, cam in self._cameras.items():
            session = snap.sessions.get(name, {})
            q = self._queues.frames.stats(name)
            ingested = int(session.get("frames_ingested", 0))
            dt = max(now - cam.prev_time, 1e-6)
            fps = max(ingested - cam.prev_ingested, 0) / dt
            rejected = cam.rejected + snap.frames_rejected.get(name, 0)
            overflowed = q.dropped + snap.frames_discarded.get(name, 0)
            dropped = cam.sampler_dropped + overflowed + cam.out_of_order

            msg = CacheStats()
            msg.header.stamp = stamp
            msg.camera = name
            msg.policy = str(session.get("policy", self.settings.policy))
            msg.tokens_held = int(session.get("tokens_held", 0))
            msg.token_budget = int(session.get("token_budget", 0))
            msg.kv_bytes = int(session.get("kv_bytes", 0))
            msg.kv_cap_bytes = int(session.get("kv_cap_bytes", 0))
            msg.frames_received = cam.received
            msg.frames_sampled = cam.sampled
            msg.frames_dropped = dropped
            msg.frames_rejected = rejected
            msg.frames_ingested = ingested
            msg.frames_skipped = cam.sampler_dropped
            msg.frames_overflowed = overflowed
            msg.frames_lost_in_transport = cam.transport.lost
            msg.frames_out_of_order = cam.out_of_order
            msg.stream_restarts = snap.restarts.get(name, 0)
            msg.compressions = int(session.get("compressions", 0))
            msg.tokens_evicted = int(session.get("tokens_evicted", 0))
            msg.last_compression_s = float(session.get("last_compression_s", 0.0))
            msg.mean_compression_s = float(session.get("mean_compression_s", 0.0))
            msg.ingest_fps = fps
            msg.memory_start = seconds_to_time(session.get("memory_start"))
            msg.memory_end = seconds_to_time(session.get("memory_end"))
            msg.queue_depth = q.depth
            msg.queue_capacity = q.capacity
            self._stats_pub.publish(msg)

            health = CameraHealth(
                name=name, topic=cam.config.topic, frames_received=cam.received,
                frames_sampled=cam.sampled, frames_dropped=dropped, frames_overflowed=overflowed,
                frames_rejected=rejected,
                rejected_since_last=rejected - cam.prev_rejected,
                seconds_since_frame=None if cam.last_frame_wall is None else now - cam.last_frame_wall,
                queue_depth=q.depth, queue_capacity=q.capacity, queue_max_depth=q.max_depth_seen,
                ingest_fps=fps, session=session,
                frames_lost_in_transport=cam.transport.lost, lost_since_last=cam.transport.lost - cam.prev_lost,
                received_since_last=cam.received - cam.prev_received,
            )
            diag.status.append(camera_status(health, hardware_id, worker_ok))
            cam.prev_rejected, cam.prev_ingested, cam.prev_time = rejected, ingested, now
            cam.prev_received, cam.prev_lost = cam.received, cam.transport.lost
        status = worker_status(snap, self._worker.alive, snap.errors - self._prev_errors, hardware_id,
                               self.settings.model)
        if snap.last_model_error_at is not None and now - snap.last_model_error_at < MODEL_ERROR_HOLD_S:
            # A failed model call is an ERROR (not a WARN like a refused question), held for a while so a
            # diagnostics aggregator sampling slower than stats_period_s still sees it.
            status.level = DiagnosticStatus.ERROR
            status.message = f"model error: {snap.last_model_error} -> {snap.last_recovery}"
        status.values.append(KeyValue(key="model_errors", value=str(snap.model_errors)))
        status.values.append(KeyValue(key="last_recovery", value=snap.last_recovery))
        diag.status.append(status)
        self._prev_errors = snap.errors
        self._diag_pub.publish(diag)

    # ----- lifecycle ----------------------------------------------------------------------------
    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker (waiting questions get success=false; sessions saved if configured)."""
        if not self._worker.stop(timeout):
            self.get_logger().warning("worker still busy at shutdown; leaving it behind")


def executor_threads(cameras: int, max_pending_questions: int) -> int:
    """Threads of the node's executor: enough that the callbacks that block can never take them all.

    /ask_video and ~/reset callbacks block while the worker answers; at most max_pending_questions wait in the
    queue plus one being answered (more are refused at once, see `_on_ask`). On top: one thread per camera
    (each camera's callback group runs one callback at a time), one for the stats timer and one for the
    quick replies (refusals, parameter services). With fewer, questions could starve the cameras.
    """
    return max_pending_questions + 1 + cameras + 2


def _image_qos(kind: str, depth: int) -> QoSProfile:
    """Camera subscription QoS: the sensor-data profile, or reliable with `depth` (bag replay, tests)."""
    if kind == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    return qos_profile_sensor_data


def main(args: list[str] | None = None) -> int:
    """Entry point of `infinipot_node` (`ros2 run infinipot_ros infinipot_node --ros-args ...`)."""
    rclpy.init(args=args)
    try:
        node = InfiniPotNode()
    except Exception as err:  # bad parameters: one clear line instead of a traceback
        print(f"[infinipot] cannot start: {type(err).__name__}: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = BoundedThreadsExecutor(num_threads=executor_threads(len(node.settings.cameras), node.settings.max_pending_questions))
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # A signal can shut the context down while the executor is building its next wait set; that is a
        # normal shutdown, not an error. Anything else is re-raised.
        if rclpy.ok():
            raise
    finally:
        node.close()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
