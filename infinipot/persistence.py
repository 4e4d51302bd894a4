"""Save and resume a `StreamingSession` (store, counters, stamps, config, pending frames).

Why: a robot restarts (power, software update) but its memory of the last hour should not vanish. The
compressed cache is small by construction, so saving it is cheap. Cached keys are only meaningful for the
model that wrote them (after RoPE, in its head geometry), so loading checks the adapter's fingerprint
and refuses a different model type or geometry with a clear error instead of producing nonsense.

Format: one `torch.save` file of plain types and tensors only, read back with `weights_only=True` (no
pickled code runs on load).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from .adapters.base import VLMAdapter
from .errors import SessionStateError

__all__ = ["FORMAT_VERSION", "save_session", "load_session"]

FORMAT_VERSION = 1


def save_session(session, path: str | Path) -> Path:
    """Write `session` (a StreamingSession) to `path`; returns the path."""
    from .session import _Counters  # local: session imports this module lazily too

    counters = session._counters
    scalar = {f.name: getattr(counters, f.name) for f in fields(_Counters) if f.name != "frame_stamps"}
    payload = {
        "format_version": FORMAT_VERSION,
        "fingerprint": session.adapter.fingerprint(),
        "config": session.config.as_dict(),
        "store": session.store.state_dict(),
        "counters": scalar,
        "frame_stamps": [[fid, first, last] for fid, (first, last) in counters.frame_stamps.items()],
        "pending_frames": [torch.from_numpy(frame.copy()) for frame, _ in session._pending],
        "pending_stamps": [float(stamp) for _, stamp in session._pending],
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, target)
    return target


def load_session(path: str | Path, adapter: VLMAdapter):
    """Rebuild the StreamingSession saved at `path` on `adapter`.

    Raises SessionStateError if the file is not a session checkpoint, has another format version, or was
    written by a model with another type or KV geometry.
    """
    from .session import SessionConfig, StreamingSession, _Counters

    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # corrupt or foreign file
        raise SessionStateError(f"{path} is not a readable session checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise SessionStateError(f"{path} is not a session checkpoint of format version {FORMAT_VERSION}")
    saved, current = payload["fingerprint"], adapter.fingerprint()
    if saved != current:
        diff = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current) if saved.get(k) != current.get(k)}
        raise SessionStateError(
            f"checkpoint {path} was written by another model geometry; (saved, this adapter): {diff}"
        )
    known = {f.name for f in fields(SessionConfig)}
    config = SessionConfig(**{k: v for k, v in payload["config"].items() if k in known})
    session = StreamingSession(adapter, config)
    session.store.load_state_dict(payload["store"])
    counters = _Counters(**payload["counters"])
    counters.frame_stamps = {int(fid): (float(first), float(last)) for fid, first, last in payload["frame_stamps"]}
    session._counters = counters
    session._pending = [
        (np.ascontiguousarray(frame.numpy()), float(stamp))
        for frame, stamp in zip(payload["pending_frames"], payload["pending_stamps"])
    ]
    return session

