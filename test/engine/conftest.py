"""Fixtures of the engine tests.

Two groups: stores filled with a synthetic frame stream (no model needed; used by the KV store, scorer and
selection tests), and the tiny adapters every session test runs against. `ADAPTER_NAMES` lists the builtin
tiny models; a third adapter module (infinipot/adapters/smolvlm.py or llava_onevision.py) joins
automatically when it defines `TINY_NAME`, so the same parametrised session suite covers every
architecture. Checkpoints are built once per test run into a temporary cache.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

import numpy as np
import pytest
import torch

from infinipot.adapters.base import VLMAdapter
from infinipot.adapters.loading import load_adapter
from infinipot.kv_store import FixedKVStore

# The tiny models' matrices are a few KB: one thread is fastest, and on a shared CI machine torch's default
# thread pool oversubscribes the cores (measured here: 20x slower streaming with the default).
torch.set_num_threads(1)


def fill_stream(
    store: FixedKVStore,
    *,
    frames: int,
    frame_grid: tuple[int, int],
    prefix: int = 0,
    generator: torch.Generator | None = None,
    first_frame: int = 0,
) -> None:
    """Write `prefix` text tokens (first time only) and then `frames` frames of random K/V into every layer,
    staging metadata the way the session does: text first, then frame by frame, row-major patches."""
    per_frame = frame_grid[0] * frame_grid[1]
    start = store.length
    frame_id = torch.arange(first_frame, first_frame + frames).repeat_interleave(per_frame)
    patch = torch.arange(per_frame).repeat(frames)
    if prefix:
        frame_id = torch.cat([torch.full((prefix,), -1), frame_id])
        patch = torch.cat([torch.full((prefix,), -1), patch])
    n = int(frame_id.numel())
    next_id = int(store.token_index[0, 0, :start].max()) + 1 if start else 0
    store.stage_tokens(torch.arange(next_id, next_id + n), frame_id, patch)
    for layer in range(store.num_layers):
        shape = (1, store.num_kv_heads, n, store.head_dim)
        keys = torch.randn(shape, generator=generator, dtype=store.dtype)
        values = torch.randn(shape, generator=generator, dtype=store.dtype)
        store.update(keys, values, layer)
    if prefix:
        store.set_prefix_length(prefix)


@pytest.fixture
def stream_store() -> Callable[..., FixedKVStore]:
    """Factory: a FixedKVStore holding a prefix and `frames` frames of random keys/values."""

    def make(
        *,
        layers: int = 2,
        heads: int = 2,
        head_dim: int = 8,
        frames: int = 8,
        frame_grid: tuple[int, int] = (3, 4),
        prefix: int = 3,
        capacity: int | None = None,
        seed: int = 0,
    ) -> FixedKVStore:
        per_frame = frame_grid[0] * frame_grid[1]
        needed = prefix + frames * per_frame
        store = FixedKVStore(layers, heads, head_dim, capacity if capacity is not None else needed)
        fill_stream(store, frames=frames, frame_grid=frame_grid, prefix=prefix,
                    generator=torch.Generator().manual_seed(seed))
        return store

    return make


# ------------------------------------------------------------------------------------- tiny adapters
_QWEN_TINY = ["tiny-qwen2-vl", "tiny-qwen2.5-vl"]
_OPTIONAL_MODULES = ("infinipot.adapters.smolvlm", "infinipot.adapters.qwen3_vl", "infinipot.adapters.llava_onevision")


def _optional_tiny_names() -> list[str]:
    names = []
    for module_name in _OPTIONAL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        tiny = getattr(module, "TINY_NAME", None)
        if tiny:
            names.append(str(tiny))
    return names


ADAPTER_NAMES: list[str] = _QWEN_TINY + _optional_tiny_names()


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh INFINIPOT_CACHE for this test run (tests never touch the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("infinipot-cache")
    previous = os.environ.get("INFINIPOT_CACHE")
    os.environ["INFINIPOT_CACHE"] = str(path)
    yield str(path)
    if previous is None:
        os.environ.pop("INFINIPOT_CACHE", None)
    else:
        os.environ["INFINIPOT_CACHE"] = previous


_ADAPTERS: dict[str, VLMAdapter] = {}


@pytest.fixture(scope="session", params=ADAPTER_NAMES)
def adapter(request: pytest.FixtureRequest, tiny_cache: str) -> VLMAdapter:
    """One loaded tiny adapter per name, shared by the whole run (loading costs ~1 s)."""
    name = request.param
    if name not in _ADAPTERS:
        _ADAPTERS[name] = load_adapter("builtin:" + name)
    return _ADAPTERS[name]


@pytest.fixture()
def make_frames() -> Callable[..., list[np.ndarray]]:
    """make_frames(n, seed=0, size=(48, 64)) -> n random RGB uint8 frames (any size: adapters resize)."""

    def make(n: int, seed: int = 0, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]

    return make


@pytest.fixture
def stream_filler() -> Callable[..., None]:
    """`fill_stream` as a fixture (test modules cannot import conftest under --import-mode=importlib)."""
    return fill_stream
