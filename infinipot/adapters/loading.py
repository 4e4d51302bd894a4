"""`load_adapter`: model id or path -> the right `VLMAdapter`, chosen by the checkpoint's `model_type`.

Why a registry: the session must not know architectures, and each adapter module (Qwen here, SmolVLM or
LLaVA-OneVision in their own files) registers the model types it handles plus its tiny test model, so adding
an architecture never edits this file. `builtin:<tiny-name>` ids build a tiny random checkpoint once into a
cache folder and then load it through `from_pretrained` like any other path, so the same code path is used
in tests, the benchmark and on a robot.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .base import VLMAdapter
from ..shipped import shipped_model_path

__all__ = [
    "ADAPTER_REGISTRY",
    "BUILTIN_PREFIX",
    "register_adapter",
    "load_adapter",
    "builtin_checkpoint",
    "cache_dir",
    "known_model_types",
]

BUILTIN_PREFIX = "builtin:"

#: model_type -> loader(model_id_or_path, dtype, device, trust_remote_code) -> VLMAdapter
ADAPTER_REGISTRY: dict[str, Callable[..., VLMAdapter]] = {}

#: modules that register further adapters when imported; missing ones are simply skipped
_OPTIONAL_ADAPTER_MODULES = ("infinipot.adapters.smolvlm", "infinipot.adapters.qwen3_vl", "infinipot.adapters.llava_onevision")


def register_adapter(model_types: str | tuple[str, ...], loader: Callable[..., VLMAdapter]) -> None:
    """Route checkpoints whose config `model_type` is one of `model_types` to `loader`."""
    for model_type in (model_types,) if isinstance(model_types, str) else model_types:
        ADAPTER_REGISTRY[model_type] = loader


_builtin_registered = False


def _register_builtin() -> None:
    """Register the Qwen adapters and import the optional adapter modules (which register themselves)."""
    global _builtin_registered
    if _builtin_registered:
        return
    _builtin_registered = True
    from .qwen2_vl import Qwen2VLAdapter

    register_adapter(Qwen2VLAdapter.SUPPORTED_MODEL_TYPES, Qwen2VLAdapter.from_pretrained)
    for module in _OPTIONAL_ADAPTER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # the module exists but one of its imports is broken: say so
                raise


def known_model_types() -> list[str]:
    """Config model types `load_adapter` can handle."""
    _register_builtin()
    return sorted(ADAPTER_REGISTRY)


def cache_dir() -> Path:
    """Where builtin tiny checkpoints live: `$INFINIPOT_CACHE`, else ~/.cache/infinipot."""
    root = os.environ.get("INFINIPOT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "infinipot"


def builtin_checkpoint(name: str) -> Path:
    """Path of the tiny checkpoint `name`, building it on first use (atomically, so parallel users are safe)."""
    from ..tiny_models import TINY_BUILDERS, build_tiny_checkpoint

    known_model_types()  # imports optional adapter modules, which register their tiny builders
    if name not in TINY_BUILDERS:
        raise ValueError(f"unknown builtin model {name!r}; known: {sorted(TINY_BUILDERS)}")
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build_tiny_checkpoint(name, staging)
        try:
            staging.rename(target)
        except OSError:  # someone else finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _model_type(path: Path) -> str:
    config_file = path / "config.json"
    try:
        return str(json.loads(config_file.read_text())["model_type"])
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} has no config.json; is it a transformers checkpoint folder?") from None
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} has no readable model_type: {error}") from None


def load_adapter(
    model_id_or_path: str | os.PathLike,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> VLMAdapter:
    """Load a checkpoint (local folder, hub id, a shipped model's name such as "infinipot-tiny-qwen2vl",
    `builtin:<tiny-name>`, or `random:<published-name>`, e.g. random:qwen2-vl-2b, a random-weight model of a
    published size built in memory: see infinipot/random_models.py) and wrap it in its adapter.

    Raises FileNotFoundError for a missing local path, ValueError for an unknown builtin name or a model
    type no adapter handles.
    """
    known_model_types()
    source = str(model_id_or_path)
    if source.startswith("random:"):  # a published size with random weights, built in memory (benchmarks)
        from ..random_models import RANDOM_PREFIX, build_random_adapter

        return build_random_adapter(source[len(RANDOM_PREFIX):], dtype=dtype, device=device)
    shipped = shipped_model_path(source)
    if source.startswith(BUILTIN_PREFIX):
        path: Path | None = builtin_checkpoint(source[len(BUILTIN_PREFIX):])
    elif shipped is not None:
        path = shipped
    else:
        candidate = Path(source).expanduser()
        looks_local = candidate.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1
        if looks_local and not candidate.exists():
            raise FileNotFoundError(f"model path {source!r} does not exist")
        path = candidate if candidate.exists() else None
    if path is not None:
        model_type = _model_type(path)
        source = str(path)
    else:  # a hub id: let transformers resolve it (offline machines fail here with its own clear error)
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).model_type
    loader = ADAPTER_REGISTRY.get(model_type)
    if loader is None:
        raise ValueError(
            f"no adapter for model_type {model_type!r} ({source}); supported: {sorted(ADAPTER_REGISTRY)}"
        )
    return loader(source, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
