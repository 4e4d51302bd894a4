"""The one thread that owns the model.

Why one thread: the model, its KV caches and the streaming sessions are not thread-safe, and one CPU/GPU
cannot run two prefills faster than one after the other anyway. ROS callbacks only convert, sample and
enqueue (`frame_queue.WorkQueues`); this worker takes questions first, then frames, and publishes nothing
itself: publishers read `snapshot()`, a copy made under a lock after each step.

Failure policy: every exception is caught, logged and counted; a pending question gets ``success=False``
with the reason; the loop keeps running. An exception from a *model call* (a session's `add_frame` or
`ask` failing with anything but the engine's input errors, e.g. ``torch.cuda.OutOfMemoryError``) is a model
error: it is counted separately (the node reports ERROR on /diagnostics for a while) and the camera's
memory, whose state may be half-written, is handled as the `on_model_error` parameter says (reset it,
reset it with half the token budget, or keep it). Frames the engine rejects (`FrameError`) are counted and, by the
engine's contract, leave the cache unchanged. Questions that waited longer than their deadline are
answered ``success=False`` without running, so one slow answer cannot make all later ones hang.

This module has no rclpy import: it is plain threading around the ROS-free engine, so it can be driven by
the node, a test or the live-replay tool alike.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from .frame_queue import WorkQueues
from .parameters import NodeSettings

__all__ = [
    "AskRequest",
    "AskResult",
    "FrameItem",
    "InferenceWorker",
    "MemoryRequest",
    "MemoryResult",
    "ResetRequest",
    "WorkerSnapshot",
]


class Logger(Protocol):
    """What the worker needs of a logger (rclpy's and Python's loggers both fit)."""

    def info(self, message: str) -> Any: ...

    def warning(self, message: str) -> Any: ...

    def error(self, message: str) -> Any: ...


@dataclass
class FrameItem:
    """A sampled, converted frame on its way to the model."""

    camera: str
    rgb: np.ndarray
    stamp: float
    #: The camera's stamps jumped back (more than stamp_restart_s) before this frame: start its memory afresh.
    restarted: bool = False


@dataclass
class AskResult:
    """The worker's answer to one question (fields mirror AskVideo's response)."""

    success: bool
    answer: str = ""
    error_message: str = ""
    memory_start: float | None = None
    memory_end: float | None = None
    latency_s: float = 0.0
    ttft_s: float = 0.0
    tokens_used: int = 0
    #: (start stamp, weight) of each evidence frame, strongest first (infinipot.session.Answer.evidence)
    evidence: list[tuple[float, float]] = field(default_factory=list)


class _Pending:
    """A result slot one caller waits on; the first `finish` wins, later ones are ignored."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self.cancelled = False

    def finish(self, result: Any) -> bool:
        with self._lock:
            if self._done.is_set():
                return False
            self._result = result
            self._done.set()
            return True

    def wait(self, timeout: float | None) -> Any:
        """The result, or None when `timeout` passed first."""
        return self._result if self._done.wait(timeout) else None

    def cancel(self) -> None:
        """The caller stopped waiting: the worker skips the request if it has not started it."""
        self.cancelled = True


class AskRequest(_Pending):
    """A question for one camera's memory, with the monotonic time it arrived and its deadline."""

    def __init__(self, camera: str, question: str, max_new_tokens: int, timeout_s: float,
                 max_evidence: int | None = None) -> None:
        super().__init__()
        self.camera = camera
        self.question = question
        self.max_new_tokens = max_new_tokens
        self.max_evidence = max_evidence  # None = the session's default
        self.received = time.monotonic()
        self.deadline = self.received + timeout_s

    def fail(self, message: str) -> bool:
        return self.finish(
            AskResult(success=False, error_message=message, latency_s=time.monotonic() - self.received)
        )


class ResetRequest(_Pending):
    """Clear the memory of every camera (result: (success, message))."""


@dataclass
class MemoryResult:
    """What one camera's memory holds (fields mirror GetMemory's response)."""

    success: bool
    error_message: str = ""
    #: (start stamp, end stamp, tokens kept) per held frame, oldest first
    frames: list[tuple[float, float, float]] = field(default_factory=list)
    tokens_held: int = 0
    prefix_tokens: int = 0


class MemoryRequest(_Pending):
    """List the frames one camera's memory holds (result: MemoryResult). Answered on the worker thread,
    between model calls, so the view is consistent."""

    def __init__(self, camera: str) -> None:
        super().__init__()
        self.camera = camera

    def fail(self, message: str) -> bool:
        return self.finish(MemoryResult(success=False, error_message=message))


@dataclass
class WorkerSnapshot:
    """A consistent copy of the worker's state for publishers (never touched by the worker again)."""

    state: str = "loading"  # loading | ready | error | stopped
    state_message: str = ""
    load_s: float = 0.0
    #: camera → `SessionStats.as_dict()` (empty until the engine is ready)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: camera → frames the engine refused (bad shape/stamp)
    frames_rejected: dict[str, int] = field(default_factory=dict)
    #: camera → frames thrown away because the engine was not available, or still pending (not yet
    #: encoded) when the memory was started afresh
    frames_discarded: dict[str, int] = field(default_factory=dict)
    #: camera → stream restarts (stamps jumped back)
    restarts: dict[str, int] = field(default_factory=dict)
    requests_answered: int = 0
    requests_failed: int = 0
    requests_timed_out: int = 0
    errors: int = 0
    last_error: str = ""
    #: failed model calls, the last one, when (monotonic seconds) and what was done about it
    model_errors: int = 0
    last_model_error: str = ""
    last_model_error_at: float | None = None
    last_recovery: str = ""
    busy_s: float = 0.0
    last_ask_s: float = 0.0
    #: periodic snapshots of the memories to session_path: how many were written, what the last one cost
    #: the worker (copying the caches: ingestion waits this long) and the writer thread (file, fsync)
    snapshots: int = 0
    snapshot_errors: int = 0
    last_snapshot_stall_s: float = 0.0
    last_snapshot_write_s: float = 0.0
    last_snapshot_bytes: int = 0


class InferenceWorker:
    """Owns the adapter and one `StreamingSession` per camera; runs on its own (daemon) thread."""

    def __init__(
        self,
        settings: NodeSettings,
        queues: WorkQueues,
        logger: Logger,
        engine_loader: Callable[[NodeSettings, Logger], dict[str, Any]] | None = None,
    ) -> None:
        """`engine_loader(settings, logger) -> {camera: session}` builds the sessions on the worker thread;
        the default loads `settings.model` with `infinipot.adapters.loading.load_adapter`."""
        self._settings = settings
        self._queues = queues
        self._log = logger
        self._loader = engine_loader or load_sessions
        self._sessions: dict[str, Any] = {}
        #: camera → frames ingested by memories since started afresh (so frames_ingested never restarts)
        self._ingested_before: dict[str, int] = {}
        #: cameras whose memory changed since the last snapshot (guarded by _lock: the writer re-adds)
        self._dirty: set[str] = set()
        self._next_snapshot = 0.0
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        cams = [c.name for c in settings.cameras]
        self._snap = WorkerSnapshot(
            frames_rejected=dict.fromkeys(cams, 0),
            frames_discarded=dict.fromkeys(cams, 0),
            restarts=dict.fromkeys(cams, 0),
        )
        self._thread = threading.Thread(target=self._run, name="infinipot-worker", daemon=True)
        #: the question being answered right now (read by `stop` from another thread)
        self._current: AskRequest | None = None
        self._stopping = threading.Event()

    # ----- API for the node (any thread) ----------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> bool:
        """Ask the loop to finish (answering waiting requests) and join; False if it did not in time.

        The thread is a daemon: a generation that cannot be interrupted does not keep the process alive.
        """
        self._stopping.set()  # a generation in progress stops at its next model call (see _interruptible)
        self._queues.close()
        current = self._current
        if current is not None:  # its caller need not wait for a generation that may outlive the process
            current.fail("node is shutting down")
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def snapshot(self) -> WorkerSnapshot:
        with self._lock:
            snap = self._snap
            return WorkerSnapshot(
                **{
                    **snap.__dict__,
                    "sessions": {k: dict(v) for k, v in snap.sessions.items()},
                    "frames_rejected": dict(snap.frames_rejected),
                    "frames_discarded": dict(snap.frames_discarded),
                    "restarts": dict(snap.restarts),
                }
            )

    # ----- the loop (worker thread only) ----------------------------------------------------------
    def _run(self) -> None:
        self._load()
        while True:
            work = self._queues.get(timeout=0.2)
            self._maybe_snapshot()
            if work is None:
                if self._queues.closed:
                    break
                continue
            kind, item = work
            started = time.monotonic()
            try:
                if isinstance(item, ResetRequest):
                    self._reset(item)
                elif isinstance(item, MemoryRequest):
                    self._memory(item)
                elif kind == "request":
                    self._answer(item)
                else:
                    camera, frame = item
                    self._ingest(camera, frame)
            except _Interrupted:  # stop() during a model call; the engine rolled the cache back
                if isinstance(item, (AskRequest, MemoryRequest)):
                    item.fail("node is shutting down")
                elif isinstance(item, ResetRequest):
                    item.finish((False, "node is shutting down"))
            except Exception as err:  # noqa: BLE001 - the worker must survive anything the engine does
                self._record_error(f"{type(err).__name__}: {err}", traceback.format_exc())
                if isinstance(item, (AskRequest, MemoryRequest)):
                    item.fail(f"internal error: {type(err).__name__}: {err}")
                elif isinstance(item, ResetRequest):
                    item.finish((False, f"reset failed: {err}"))
            finally:
                with self._lock:
                    self._snap.busy_s += time.monotonic() - started
        self._shutdown()

    def _load(self) -> None:
        t0 = time.monotonic()
        try:
            self._sessions = self._loader(self._settings, self._log)
        except Exception as err:  # noqa: BLE001
            message = f"cannot load model {self._settings.model!r}: {type(err).__name__}: {err}"
            self._log.error(message)
            with self._lock:
                self._snap.state, self._snap.state_message = "error", message
                self._snap.errors += 1
                self._snap.last_error = message
            return
        adapters = {id(a): a for a in (getattr(x, "adapter", None) for x in self._sessions.values()) if a}
        for adapter in adapters.values():
            _interruptible(adapter, self._stopping)
        with self._lock:
            self._snap.state = "ready"
            self._snap.state_message = f"model {self._settings.model} loaded"
            self._snap.load_s = time.monotonic() - t0
        self._refresh()
        self._log.info(
            f"model {self._settings.model} ready in {time.monotonic() - t0:.1f}s "
            f"({len(self._sessions)} camera memories)"
        )

    def _ready(self) -> bool:
        return bool(self._sessions)

    def _answer(self, req: AskRequest) -> None:
        if req.cancelled or time.monotonic() > req.deadline:
            req.fail("timed out waiting for the model (request_timeout_s)")
            with self._lock:
                self._snap.requests_timed_out += 1
            return
        if not self._ready():
            with self._lock:
                reason = self._snap.state_message or "model is still loading"
                self._snap.requests_failed += 1
            req.fail(f"model not available: {reason}")
            return
        from infinipot.errors import InfiniPotError

        session = self._sessions[req.camera]
        t_start = time.monotonic()
        self._current = req
        try:
            ans = session.ask(req.question, max_new_tokens=req.max_new_tokens, max_evidence=req.max_evidence)
        except InfiniPotError as err:  # a question the engine refuses (too long, no frames yet, ...)
            req.fail(str(err))
            with self._lock:
                self._snap.requests_failed += 1
            return
        except Exception as err:  # noqa: BLE001 - the model call itself failed (OOM, driver error, ...)
            action = self._model_failed(req.camera, "answering", err)
            req.fail(f"model error while answering: {type(err).__name__}: {err} ({action})")
            with self._lock:
                self._snap.requests_failed += 1
            return
        finally:
            self._current = None
        done = time.monotonic()
        ok = req.finish(
            AskResult(
                success=True,
                answer=str(ans.text),
                memory_start=ans.memory_start,
                memory_end=ans.memory_end,
                latency_s=done - req.received,
                ttft_s=(t_start - req.received) + float(ans.ttft_s),
                tokens_used=int(ans.tokens_used),
                evidence=[(float(e.start), float(e.weight)) for e in ans.evidence],
            )
        )
        with self._lock:
            self._snap.last_ask_s = done - t_start
            if ok:
                self._snap.requests_answered += 1
            else:  # the caller's timeout fired while the model was generating
                self._snap.requests_timed_out += 1

    def _ingest(self, camera: str, frame: Any) -> None:
        if not self._ready():
            with self._lock:
                self._snap.frames_discarded[camera] = self._snap.frames_discarded.get(camera, 0) + 1
            return
        from infinipot.errors import FrameError

        session = self._sessions[camera]
        if frame.restarted:
            self._start_afresh(camera)
            self._log.warning(
                f"camera {camera}: stamps jumped back to {frame.stamp:.3f}s (more than stamp_restart_s); its "
                "video memory starts afresh"
            )
            with self._lock:
                self._snap.restarts[camera] = self._snap.restarts.get(camera, 0) + 1
        try:
            session.add_frame(frame.rgb, frame.stamp)
        except FrameError as err:
            with self._lock:
                self._snap.frames_rejected[camera] = self._snap.frames_rejected.get(camera, 0) + 1
            self._log.warning(f"camera {camera}: frame at {frame.stamp:.3f}s rejected by the engine: {err}")
        except Exception as err:  # noqa: BLE001 - the model call failed while ingesting
            self._model_failed(camera, "ingesting a frame", err)
        self._refresh(camera)

    def _model_failed(self, camera: str, during: str, err: Exception) -> str:
        """Log and count a failed model call, then recover the camera's memory as `on_model_error` says.

        Returns what was done, for the caller's error message. Never raises: a recovery that fails too is
        logged, and the next model error tries again.
        """
        message = f"camera {camera}: model call failed while {during}: {type(err).__name__}: {err}"
        self._log.error(f"{message}\n{traceback.format_exc()}")
        _release_device_memory()
        mode = self._settings.on_model_error
        try:
            action = self._recover(camera, mode)
        except Exception as rec_err:  # noqa: BLE001
            action = f"recovery '{mode}' failed: {type(rec_err).__name__}: {rec_err}"
            self._log.error(f"camera {camera}: {action}")
        else:
            self._log.warning(f"camera {camera}: after the model error: {action}")
        try:
            self._refresh(camera)  # publishers must see the reset memory at once
        except Exception:  # noqa: BLE001 - a half-recovered session: its stats are refreshed next time
            pass
        with self._lock:
            self._snap.errors += 1
            self._snap.last_error = message
            self._snap.model_errors += 1
            self._snap.last_model_error = message
            self._snap.last_model_error_at = time.monotonic()
            self._snap.last_recovery = action
        return action

    def _recover(self, camera: str, mode: str) -> str:
        session = self._sessions[camera]
        if mode == "keep":
            return "memory kept as it was (on_model_error=keep)"
        if mode == "lower_budget":
            budget = getattr(session, "budget", None)
            if budget is not None:
                from dataclasses import replace

                from infinipot.errors import BudgetError

                lower = int(budget.threshold_tokens) // 2
                config = replace(session.config, budget_tokens=lower, budget_mb=None)
                self._count_forgotten(camera, session)
                # The old session stays alive until the new (half-size) one exists, as the fallback.
                try:
                    self._sessions[camera] = type(session)(session.adapter, config)
                except BudgetError as err:  # already as small as the model allows
                    self._sessions[camera] = session
                    session.reset()  # counted above
                    return f"memory reset; budget kept at {budget.threshold_tokens} tokens ({err})"
                except BaseException:
                    self._sessions[camera] = session  # never leave the camera without a memory
                    session.reset()  # counted above
                    raise
                del session
                _release_device_memory()
                return f"memory reset with the budget lowered from {budget.threshold_tokens} to {lower} tokens"
            self._start_afresh(camera)
            return "memory reset (uncapped memory: no budget to lower)"
        self._start_afresh(camera)
        return "memory reset (on_model_error=reset)"

    def _memory(self, req: MemoryRequest) -> None:
        if not self._ready():
            with self._lock:
                reason = self._snap.state_message or "model is still loading"
            req.fail(f"model not available: {reason}")
            return
        session = self._sessions.get(req.camera)
        if session is None:
            req.fail(f"unknown camera {req.camera!r}")
            return
        stats = session.stats()
        req.finish(MemoryResult(
            success=True,
            frames=[(h.start, h.end, h.tokens) for h in session.held_frames()],
            tokens_held=int(stats.tokens_held),
            prefix_tokens=int(session.store.prefix_length),
        ))

    def _reset(self, req: ResetRequest) -> None:
        dropped = self._queues.frames.clear()
        for camera in self._sessions:
            self._start_afresh(camera)
        self._refresh()
        req.finish((True, f"cleared {len(self._sessions)} camera memories and {dropped} queued frames"))

    def _count_forgotten(self, camera: str, session: Any) -> None:
        """Before a memory is started afresh: keep its frame counts (frames_ingested counts over the node's
        life, like the node's own counters; frames still pending are lost and counted as discarded)."""
        stats = session.stats()
        self._ingested_before[camera] = self._ingested_before.get(camera, 0) + int(stats.frames_ingested)
        with self._lock:
            self._snap.frames_discarded[camera] = (
                self._snap.frames_discarded.get(camera, 0) + int(stats.frames_pending)
            )

    def _start_afresh(self, camera: str) -> None:
        """Reset one camera's memory, keeping its counters consistent."""
        session = self._sessions[camera]
        self._count_forgotten(camera, session)
        session.reset()

    def _refresh(self, camera: str | None = None) -> None:
        names = list(self._sessions) if camera is None else [camera]
        stats = {name: self._sessions[name].stats().as_dict() for name in names}
        for name, values in stats.items():
            values["frames_ingested"] = int(values["frames_ingested"]) + self._ingested_before.get(name, 0)
        with self._lock:
            self._dirty.update(names)
            self._snap.sessions.update(stats)

    def _record_error(self, message: str, trace: str) -> None:
        self._log.error(f"worker error: {message}\n{trace}")
        with self._lock:
            self._snap.errors += 1
            self._snap.last_error = message

    def _shutdown(self) -> None:
        for req in self._queues.requests.drain():
            if isinstance(req, (AskRequest, MemoryRequest)):
                req.fail("node is shutting down")
            elif isinstance(req, ResetRequest):
                req.finish((False, "node is shutting down"))
        if self._writer is not None:
            self._writer.join()  # a snapshot in flight finishes before the final save replaces it
        if self._settings.session_path and self._sessions:
            save_sessions(self._sessions, Path(self._settings.session_path), self._log)
        with self._lock:
            self._snap.state = "stopped"

    # ----- periodic snapshots (worker thread; the file is written by a short-lived writer thread) -----
    def _maybe_snapshot(self) -> None:
        """Every `session_save_period_s`, snapshot the memories that changed to `session_path`.

        Why this split: the worker only copies each changed cache (`StreamingSession.checkpoint`, a memcpy of
        at most the capped store), which is all that ingestion waits for; a writer thread then writes the
        files atomically (temp file, fsync, rename). A snapshot still being written when the next is due
        delays that one. After `kill -9` the node restarts from the last complete snapshot.
        """
        period = self._settings.session_save_period_s
        if not self._settings.session_path or period <= 0 or not self._sessions:
            return
        now = time.monotonic()
        if now < self._next_snapshot or (self._writer is not None and self._writer.is_alive()):
            return
        self._next_snapshot = now + period
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        started = time.perf_counter()
        checkpoints: dict[str, Any] = {}
        for camera in sorted(dirty):
            try:
                checkpoints[camera] = self._sessions[camera].checkpoint()
            except Exception as err:  # noqa: BLE001 - a memory that cannot be copied now: next period
                self._snapshot_failed(camera, err)
        stall = time.perf_counter() - started
        self._writer = threading.Thread(
            target=self._write_snapshot, args=(checkpoints, stall), name="infinipot-snapshot", daemon=True
        )
        self._writer.start()

    def _write_snapshot(self, checkpoints: dict[str, Any], stall_s: float) -> None:
        from infinipot.persistence import write_checkpoint

        directory = Path(self._settings.session_path)
        started = time.perf_counter()
        written = 0
        for camera, checkpoint in checkpoints.items():
            try:
                path = write_checkpoint(checkpoint, _session_file(directory, camera))
                written += path.stat().st_size
            except Exception as err:  # noqa: BLE001 - full disk, permissions: log, retry next period
                self._snapshot_failed(camera, err)
        with self._lock:
            self._snap.snapshots += 1
            self._snap.last_snapshot_stall_s = stall_s
            self._snap.last_snapshot_write_s = time.perf_counter() - started
            self._snap.last_snapshot_bytes = written

    def _snapshot_failed(self, camera: str, err: Exception) -> None:
        self._log.error(f"camera {camera}: cannot snapshot video memory to {self._settings.session_path}: {err}")
        with self._lock:
            self._dirty.add(camera)
            self._snap.snapshot_errors += 1


class _Interrupted(BaseException):
    """Raised inside a model call once the worker is stopping. A BaseException so that no `except
    Exception` on the way (engine or worker) takes it for a model error; the engine's own clean-up
    (`except BaseException: roll back; raise` and `finally: truncate`) still runs."""


def _interruptible(adapter: Any, stopping: threading.Event) -> None:
    """Make the adapter's `forward` raise `_Interrupted` once `stopping` is set.

    Why: an answer of thousands of tokens cannot otherwise be stopped, and a process that exits while
    the worker thread is inside torch aborts ("terminate called without an active exception"). Checking
    between forward calls stops generation within one step and leaves the memory consistent, so it can
    still be saved."""
    original = adapter.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if stopping.is_set():
            raise _Interrupted()
        return original(*args, **kwargs)

    adapter.forward = forward


def _release_device_memory() -> None:
    """Give cached CUDA blocks back after a failure (an OOM often leaves the allocator fragmented)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        try:
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort; the device may be in a bad state
            pass


# ----- engine construction and persistence (worker thread) ------------------------------------------

def _session_file(directory: Path, camera: str) -> Path:
    return directory / f"{camera}.session"


def load_sessions(settings: NodeSettings, logger: Logger | None = None) -> dict[str, Any]:
    """Load the adapter once and make (or restore from `session_path`) one session per camera."""
    from infinipot.adapters.loading import load_adapter
    from infinipot.session import SessionConfig, StreamingSession

    adapter = load_adapter(
        settings.model,
        dtype=settings.dtype,
        device=settings.device,
        trust_remote_code=settings.trust_remote_code,
    )
    if os.environ.get("INFINIPOT_FAULT_INJECTION"):  # reliability tests only (see fault_injection.py)
        from .fault_injection import install_from_env

        adapter = install_from_env(adapter, logger)
    config = SessionConfig(**settings.session_config_kwargs())
    sessions: dict[str, Any] = {}
    directory = Path(settings.session_path) if settings.session_path else None
    if directory is not None:
        adapter.fingerprint()  # hashes the weights once now, not in the first snapshot's stall
    for cam in settings.cameras:
        path = _session_file(directory, cam.name) if directory else None
        restored = None
        if path is not None:
            for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write cut short by a crash
                stale.unlink(missing_ok=True)
            if path.exists():
                restored = restore_session(path, adapter, config, cam.name, logger)
        sessions[cam.name] = restored if restored is not None else StreamingSession(adapter, config)
    return sessions


def restore_session(path: Path, adapter: Any, config: Any, camera: str, logger: Logger | None) -> Any:
    """The session saved at `path`, made to follow `config`; None (and the file kept aside) if impossible.

    Never silent: a memory saved under other budget or policy parameters is rebuilt for the node's
    parameters (`StreamingSession.rebuilt`) with a WARN line naming every change; one written by another
    model (type, geometry, config or weights: the fingerprint) or unreadable is refused with a WARN line,
    and the file is renamed to `<name>.refused-<unix time>` so that the next snapshot does not overwrite it.
    """
    from dataclasses import asdict

    from infinipot.session import StreamingSession

    def refuse(reason: str) -> None:
        aside = path.with_name(f"{path.name}.refused-{int(time.time())}")
        try:
            path.rename(aside)
            kept = f"kept as {aside}"
        except OSError as err:
            kept = f"could not be moved aside: {err}"
        if logger:
            logger.warning(f"camera {camera}: video memory in {path} not restored: {reason}; {kept}; starting empty")

    try:
        saved = StreamingSession.load(path, adapter)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - another model, a corrupt or foreign file: refuse it
        refuse(str(err))
        return None
    before, wanted = asdict(saved.config), asdict(config)
    changes = {k: (before.get(k), v) for k, v in wanted.items() if before.get(k) != v}
    stats = saved.stats()
    if not changes:
        if logger:
            logger.info(f"camera {camera}: video memory restored from {path} ({stats.tokens_held} tokens, "
                        f"{stats.frames_ingested} frames)")
        return saved
    text = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())
    try:
        session = saved.rebuilt(config)
    except Exception as err:  # noqa: BLE001 - e.g. a budget this model cannot run with
        refuse(f"saved with other parameters ({text}) and cannot be rebuilt for this node's: {err}")
        return None
    if logger:
        logger.warning(
            f"camera {camera}: video memory restored from {path} and rebuilt for this node's parameters "
            f"({text}): {stats.tokens_held} -> {session.stats().tokens_held} tokens held"
        )
    return session


def save_sessions(sessions: dict[str, Any], directory: Path, logger: Logger) -> None:
    """Save every camera's memory atomically (at shutdown) so the next start can restore it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        logger.error(f"cannot create session_path {directory}: {err}")
        return
    for name, session in sessions.items():
        try:
            session.save(_session_file(directory, name))
        except Exception as err:  # noqa: BLE001
            logger.error(f"camera {name}: cannot save video memory: {err}")
