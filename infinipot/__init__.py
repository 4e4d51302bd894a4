"""infinipot: the ROS-free engine (streaming session, fixed KV store, InfiniPot-V compression, adapters).

Public names are imported lazily (PEP 562) so `import infinipot.errors` from light-weight code (the ROS
conversion helpers, CLIs printing --help) does not pay for importing torch and transformers.
"""
from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    BudgetError,
    CacheCapacityError,
    FrameError,
    InfiniPotError,
    PolicyError,
    QuestionError,
    SessionStateError,
)

__version__ = "0.1.0"

_LAZY = {
    "StreamingSession": "infinipot.session",
    "SessionConfig": "infinipot.session",
    "SessionStats": "infinipot.session",
    "Answer": "infinipot.session",
    "load_adapter": "infinipot.adapters.loading",
    "register_adapter": "infinipot.adapters.loading",
    "VLMAdapter": "infinipot.adapters.base",
    "KVGeometry": "infinipot.adapters.base",
    "VisualChunk": "infinipot.adapters.base",
    "FixedKVStore": "infinipot.kv_store",
    "CacheBudget": "infinipot.budget",
    "resolve_budget": "infinipot.budget",
    "make_policy": "infinipot.policies",
    "POLICY_NAMES": "infinipot.policies",
    "compress_store": "infinipot.selection",
    "save_session": "infinipot.session",
    "load_session": "infinipot.session",
    "build_tiny_checkpoint": "infinipot.tiny_models",
    "build_tokenizer": "infinipot.tiny_tokenizer",
    "FrameSampler": "infinipot.sampling",
    "SampleDecision": "infinipot.sampling",
}

__all__ = [
    "InfiniPotError",
    "FrameError",
    "BudgetError",
    "PolicyError",
    "QuestionError",
    "SessionStateError",
    "CacheCapacityError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'infinipot' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
