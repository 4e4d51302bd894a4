"""The session checkpoint file: what a saved `StreamingSession` holds, and how it is written and read.

Why: a robot restarts (power, software update) but its memory of the last hour should not vanish. The
compressed cache is small by construction, so saving it is cheap. Cached keys are only meaningful for the
model that wrote them (after RoPE, in its head geometry, with its very weights), so reading checks the
adapter's fingerprint (model type, geometry, config and weights hashes) and refuses another model with a
clear error instead of producing nonsense.

Crash safety: `write_checkpoint` writes a temporary file next to the target, fsyncs it, renames it over
the target (atomic on POSIX) and fsyncs the folder. A crash or power loss at any moment leaves either the
previous checkpoint or the new one, never a torn file.

Layering: this module knows the file format only. It imports nothing of the session; `StreamingSession.save`
and `.load` (infinipot/session.py) turn a session into a `SessionCheckpoint` and back.

Format: one `torch.save` file of plain types and tensors only, read back with `weights_only=True` (no
pickled code runs on load).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import os
import tempfile

import numpy as np
import torch

from .errors import SessionStateError

__all__ = ["FORMAT_VERSION", "SessionCheckpoint", "write_checkpoint", "read_checkpoint"]

#: 2: the fingerprint holds the model's identity (config and weights hashes) and the file its name
FORMAT_VERSION = 2


@dataclass
class SessionCheckpoint:
    """Everything a session needs to resume, in plain types (what the file holds)."""

    fingerprint: dict[str, Any]  # the adapter's identity and KV geometry (VLMAdapter.fingerprint())
    config: dict[str, Any]  # SessionConfig as a dict
    store: dict[str, Any]  # FixedKVStore.state_dict()
    counters: dict[str, Any]  # the session's scalar counters by name
    frame_stamps: dict[int, tuple[float, float]]  # temporal frame id -> (first, last) stamp, held frames only
    pending: list[tuple[np.ndarray, float]] = field(default_factory=list)  # frames not yet encoded
    model_name: str = ""  # what the model was loaded from (for messages only; not compared)


def write_checkpoint(checkpoint: SessionCheckpoint, path: str | Path) -> Path:
    """Write `checkpoint` to `path` atomically (parents created); returns the path.

    The file at `path` is replaced only once the new one is complete on disk; on any error it is left as
    it was and the temporary file is removed.
    """
    payload = {
        "format_version": FORMAT_VERSION,
        "fingerprint": checkpoint.fingerprint,
        "config": checkpoint.config,
        "store": checkpoint.store,
        "counters": checkpoint.counters,
        "frame_stamps": [[fid, first, last] for fid, (first, last) in checkpoint.frame_stamps.items()],
        "pending_frames": [torch.from_numpy(frame.copy()) for frame, _ in checkpoint.pending],
        "pending_stamps": [float(stamp) for _, stamp in checkpoint.pending],
        "model_name": str(checkpoint.model_name),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | Path, expected_fingerprint: dict[str, Any]) -> SessionCheckpoint:
    """Read the checkpoint at `path`, written by a model whose fingerprint is `expected_fingerprint`.

    Raises FileNotFoundError for a missing file and SessionStateError if the file is not a session
    checkpoint, has another format version, or was written by a model with another type or KV geometry.
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # corrupt or foreign file
        raise SessionStateError(f"{path} is not a readable session checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise SessionStateError(f"{path} is not a session checkpoint of format version {FORMAT_VERSION}")
    saved = payload["fingerprint"]
    if saved != expected_fingerprint:
        keys = set(saved) | set(expected_fingerprint)
        diff = {k: (saved.get(k), expected_fingerprint.get(k)) for k in keys if saved.get(k) != expected_fingerprint.get(k)}
        raise SessionStateError(
            f"checkpoint {path} was written by another model or model geometry "
            f"(saved by {payload.get('model_name') or 'an unnamed model'}); (saved, this adapter): {diff}"
        )
    return SessionCheckpoint(
        fingerprint=saved,
        config=dict(payload["config"]),
        store=payload["store"],
        counters=dict(payload["counters"]),
        frame_stamps={int(fid): (float(first), float(last)) for fid, first, last in payload["frame_stamps"]},
        pending=[
            (np.ascontiguousarray(frame.numpy()), float(stamp))
            for frame, stamp in zip(payload["pending_frames"], payload["pending_stamps"])
        ],
        model_name=str(payload.get("model_name", "")),
    )
