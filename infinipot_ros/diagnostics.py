"""`/diagnostics` statuses for the node: one per camera and one for the model worker.

Why separate from the node: the rules that turn counters into OK / WARN / ERROR are policy worth reading
(and testing) on their own, and the same rules could feed an aggregator config. The functions here take
plain numbers and return `diagnostic_msgs/DiagnosticStatus` messages (a message package, not rclpy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["CameraHealth", "TRANSPORT_LOSS_WARN_SHARE", "camera_status", "worker_status"]

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

#: A camera with no frame for this long (wall time) is reported stale.
STALE_AFTER_S = 5.0
#: WARN when more than this share of the frames the camera's publishers sent in the last stats period was
#: lost in transport (`frames_lost_in_transport`, from their sequence numbers). 5 %: a live camera on the
#: sensor-data QoS loses a few frames now and then; one in twenty means the link or the node cannot keep
#: up (use a reliable `image_qos`, a lower camera rate or a smaller image).
TRANSPORT_LOSS_WARN_SHARE = 0.05


def _kv(values: Mapping[str, Any]) -> list[KeyValue]:
    def text(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "" if v is None else str(v)

    return [KeyValue(key=k, value=text(v)) for k, v in values.items()]


@dataclass(frozen=True)
class CameraHealth:
    """Inputs of one camera's status: node-side counters, queue counters and the engine's stats."""

    name: str
    topic: str
    frames_received: int
    frames_sampled: int
    frames_dropped: int
    frames_overflowed: int  # part of frames_dropped: sampled, but lost because the model fell behind
    frames_rejected: int
    rejected_since_last: int
    seconds_since_frame: float | None  # None: no frame yet
    queue_depth: int
    queue_capacity: int
    queue_max_depth: int
    ingest_fps: float
    session: Mapping[str, Any]  # SessionStats.as_dict(), empty before the model is ready
    frames_lost_in_transport: int = 0  # sent by the publishers, never received (sequence-number gaps)
    lost_since_last: int = 0  # of those, in the last stats period
    received_since_last: int = 0  # frames received in the last stats period

    @property
    def loss_share_since_last(self) -> float:
        """Share of the frames sent in the last period that were lost in transport (0 when none sent)."""
        sent = self.lost_since_last + self.received_since_last
        return self.lost_since_last / sent if sent else 0.0


def camera_status(h: CameraHealth, hardware_id: str, worker_ok: bool) -> DiagnosticStatus:
    """OK while frames flow into the memory; WARN when none came yet, they stopped, more than
    TRANSPORT_LOSS_WARN_SHARE of them were lost in transport, or some were malformed; ERROR when the
    worker cannot ingest them."""
    if not worker_ok:
        level, message = ERROR, "model worker not running"
    elif h.seconds_since_frame is None:
        level, message = WARN, f"no frames received on {h.topic}"
    elif h.seconds_since_frame > STALE_AFTER_S:
        level, message = WARN, f"no frames for {h.seconds_since_frame:.1f}s"
    elif h.loss_share_since_last > TRANSPORT_LOSS_WARN_SHARE:
        level, message = WARN, (
            f"{h.lost_since_last} of {h.lost_since_last + h.received_since_last} frames lost in transport "
            f"({100 * h.loss_share_since_last:.0f} % > {100 * TRANSPORT_LOSS_WARN_SHARE:.0f} %)"
        )
    elif h.rejected_since_last:
        level, message = WARN, f"{h.rejected_since_last} malformed frames rejected"
    else:
        level, message = OK, "streaming"
    s = h.session
    values: dict[str, Any] = {
        "topic": h.topic,
        "frames_received": h.frames_received,
        "frames_sampled": h.frames_sampled,
        "frames_dropped": h.frames_dropped,
        "frames_overflowed": h.frames_overflowed,
        "frames_rejected": h.frames_rejected,
        "frames_lost_in_transport": h.frames_lost_in_transport,
        "frames_ingested": s.get("frames_ingested", 0),
        "ingest_fps": h.ingest_fps,
        "queue_depth": h.queue_depth,
        "queue_capacity": h.queue_capacity,
        "queue_max_depth": h.queue_max_depth,
        "policy": s.get("policy", ""),
        "tokens_held": s.get("tokens_held", 0),
        "token_budget": s.get("token_budget", 0),
        "kv_bytes": s.get("kv_bytes", 0),
        "kv_cap_bytes": s.get("kv_cap_bytes", 0),
        "compressions": s.get("compressions", 0),
        "memory_start": s.get("memory_start"),
        "memory_end": s.get("memory_end"),
    }
    return DiagnosticStatus(
        level=level, name=f"infinipot: camera {h.name}", message=message,
        hardware_id=hardware_id, values=_kv(values),
    )


def worker_status(
    snapshot: Any, alive: bool, errors_since_last: int, hardware_id: str, model: str
) -> DiagnosticStatus:
    """OK when the model is ready; WARN while loading or after new errors; ERROR when it failed or died."""
    if not alive and snapshot.state != "stopped":
        level, message = ERROR, "worker thread died"
    elif snapshot.state == "error":
        level, message = ERROR, snapshot.state_message
    elif snapshot.state == "loading":
        level, message = WARN, f"loading {model}"
    elif errors_since_last:
        level, message = WARN, f"{errors_since_last} errors: {snapshot.last_error}"
    else:
        level, message = OK, snapshot.state
    values = {
        "state": snapshot.state,
        "model": model,
        "load_s": snapshot.load_s,
        "requests_answered": snapshot.requests_answered,
        "requests_failed": snapshot.requests_failed,
        "requests_timed_out": snapshot.requests_timed_out,
        "errors": snapshot.errors,
        "last_error": snapshot.last_error,
        "busy_s": snapshot.busy_s,
        "last_ask_s": snapshot.last_ask_s,
        "snapshots": snapshot.snapshots,
        "snapshot_errors": snapshot.snapshot_errors,
        "last_snapshot_stall_s": snapshot.last_snapshot_stall_s,
        "last_snapshot_write_s": snapshot.last_snapshot_write_s,
        "last_snapshot_bytes": snapshot.last_snapshot_bytes,
    }
    return DiagnosticStatus(
        level=level, name="infinipot: worker", message=message, hardware_id=hardware_id,
        values=_kv(values),
    )
