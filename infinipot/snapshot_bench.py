"""What a periodic snapshot of a video memory costs (`session_save_period_s`): copy and write, measured.

    python -m infinipot.snapshot_bench [--dir /path/on/the/robot/disk]

Why: the node's worker pauses ingestion only while it copies each changed cache (`StreamingSession.checkpoint`);
a writer thread then writes the file atomically (temp file, fsync, rename). This prints both for the
shipped model's real session and for full stores of a Qwen2-VL-2B-sized KV geometry (28 layers, 2 KV heads,
head_dim 128, bfloat16: 28 KiB per token), next to the shipped model's own time to ingest one block of
frames (the baseline: what a copy costs in frames of stall).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .kv_store import FixedKVStore
from .persistence import SessionCheckpoint, write_checkpoint

__all__ = ["main", "measure_store"]


def _best(fn, repeat: int = 3) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_store(store: FixedKVStore, directory: Path) -> tuple[float, float, int]:
    """(copy seconds, write seconds, file bytes) for one snapshot of `store`."""
    def copy() -> SessionCheckpoint:
        return SessionCheckpoint(fingerprint={}, config={}, store=store.state_dict(), counters={}, frame_stamps={})

    checkpoint = copy()
    path = directory / "bench.session"
    return _best(copy), _best(lambda: write_checkpoint(checkpoint, path)), path.stat().st_size


def _full_store(layers: int, heads: int, head_dim: int, tokens: int, dtype: torch.dtype) -> FixedKVStore:
    store = FixedKVStore(layers, heads, head_dim, tokens, dtype=dtype)
    store.stage_tokens(torch.arange(tokens), torch.arange(tokens) // 64, torch.arange(tokens) % 64)
    for layer in range(layers):
        kv = torch.randn((1, heads, tokens, head_dim)).to(dtype)
        store.update(kv, kv, layer)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infinipot.snapshot_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="folder to write to (default: a temp folder)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from .adapters.loading import load_adapter
    from .session import SessionConfig, StreamingSession
    from .shipped import DEFAULT_MODEL

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        adapter = load_adapter(DEFAULT_MODEL)
        session = StreamingSession(adapter, SessionConfig(budget_tokens=1024))
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(400)]
        t0 = time.perf_counter()
        for i, frame in enumerate(frames):
            session.add_frame(frame, 0.5 * i)
        block_s = (time.perf_counter() - t0) / (len(frames) / adapter.frames_per_step)
        rows = [(f"{DEFAULT_MODEL} session, |M|=1024", session.store, session.checkpoint)]
        print(f"baseline: {DEFAULT_MODEL} ingests one block of {adapter.frames_per_step} frames in "
              f"{block_s * 1e3:.1f} ms on this CPU")
        print("| memory | KV bytes | copy (ingestion waits) | copy / block | write + fsync (writer thread) | file |")
        print("| --- | --- | --- | --- | --- | --- |")
        copy_s = _best(session.checkpoint)
        path = directory / "s.session"
        write_s = _best(lambda: session.save(path))
        print(f"| {rows[0][0]} | {session.store.nbytes_used:,} | {copy_s * 1e3:.2f} ms | {copy_s / block_s:.2f} | "
              f"{write_s * 1e3:.1f} ms | {path.stat().st_size:,} B |")
        for tokens in (2048, 8192):
            store = _full_store(28, 2, 128, tokens, torch.bfloat16)
            copy_s, write_s, size = measure_store(store, directory)
            print(f"| Qwen2-VL-2B geometry (bf16), {tokens} tokens | {store.nbytes_used:,} | {copy_s * 1e3:.1f} ms "
                  f"| {copy_s / block_s:.2f} | {write_s * 1e3:.1f} ms | {size:,} B |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
