"""Model adapters: everything architecture-specific about streaming video into a VLM.

`load_adapter` picks the adapter from a checkpoint's `model_type`; adapter modules register themselves
with `register_adapter`. Heavy modules are imported lazily (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import KVGeometry, StreamBlock, VisualChunk, VLMAdapter

_LAZY = {
    "load_adapter": "infinipot.adapters.loading",
    "register_adapter": "infinipot.adapters.loading",
    "known_model_types": "infinipot.adapters.loading",
    "Qwen2VLAdapter": "infinipot.adapters.qwen2_vl",
    "MRopePositionRule": "infinipot.adapters.qwen2_vl",
    "VideoPositionRule": "infinipot.adapters.qwen2_vl",
    "Qwen3VLAdapter": "infinipot.adapters.qwen3_vl",
}

__all__ = ["KVGeometry", "StreamBlock", "VisualChunk", "VLMAdapter", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'infinipot.adapters' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
