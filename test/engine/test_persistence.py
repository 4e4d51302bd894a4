"""Saved sessions: atomic writes, the model's identity in the fingerprint, rebuilding under new parameters."""
from __future__ import annotations

import shutil

import pytest
import torch

from infinipot.adapters.loading import builtin_checkpoint, load_adapter
from infinipot.errors import SessionStateError
from infinipot.persistence import read_checkpoint, write_checkpoint
from infinipot.session import SessionConfig, StreamingSession

QUESTION = "what colour was the first cube?"


def _budget(adapter, frames: int) -> int:
    """|M| for `frames` temporal frames with their frame text (timestamps, wrappers)."""
    return len(adapter.prefix_token_ids()) + frames * (adapter.tokens_per_frame + adapter.max_frame_text_tokens)


def _stream(session: StreamingSession, frames, start: float = 0.0) -> None:
    for i, frame in enumerate(frames):
        session.add_frame(frame, stamp=start + 0.5 * i)


def _fine_tuned_copy(tmp_path, name: str = "tiny-qwen2-vl"):
    """The tiny checkpoint with every weight nudged: same architecture and geometry, other weights."""
    from safetensors.torch import load_file, save_file

    target = tmp_path / f"{name}-finetuned"
    shutil.copytree(builtin_checkpoint(name), target)
    for file in target.glob("*.safetensors"):
        tensors = load_file(file)
        gen = torch.Generator().manual_seed(1)
        tuned = {k: (v + 1e-3 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if v.is_floating_point() else v)
                 for k, v in tensors.items()}
        save_file(tuned, file, metadata={"format": "pt"})
    return load_adapter(target)


def test_checkpoint_of_another_model_with_the_same_geometry_is_refused(tiny_cache, make_frames, tmp_path):
    adapter = load_adapter("builtin:tiny-qwen2-vl")
    session = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter, 6)))
    _stream(session, make_frames(adapter.frames_per_step * 3))
    path = session.save(tmp_path / "s.session")
    tuned = _fine_tuned_copy(tmp_path)
    assert tuned.geometry == adapter.geometry and tuned.model_type == adapter.model_type
    with pytest.raises(SessionStateError, match="weights_sha256"):
        StreamingSession.load(path, tuned)
    # The same checkpoint copied elsewhere is the same model: it loads.
    copy = tmp_path / "copy"
    shutil.copytree(builtin_checkpoint("tiny-qwen2-vl"), copy)
    assert StreamingSession.load(path, load_adapter(copy)).stats().tokens_held == session.stats().tokens_held


def test_a_failed_write_leaves_the_previous_checkpoint_whole(adapter, make_frames, tmp_path):
    session = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter, 6)))
    _stream(session, make_frames(adapter.frames_per_step * 3))
    path = session.save(tmp_path / "s.session")
    good = path.read_bytes()
    broken = read_checkpoint(path, adapter.fingerprint())
    broken.counters["not_serialisable"] = lambda: None  # torch.save fails part-way through the payload
    with pytest.raises(Exception):
        write_checkpoint(broken, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["s.session"]  # no temporary file left behind
    assert read_checkpoint(path, adapter.fingerprint()).counters["frames_added"] == adapter.frames_per_step * 3


@pytest.mark.parametrize("policy", ["infinipot", "sliding_window"])
def test_rebuilt_follows_a_smaller_budget_and_another_policy(adapter, make_frames, tmp_path, policy):
    saved = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter, 10)))
    _stream(saved, make_frames(adapter.frames_per_step * 9, seed=3))
    before = saved.stats()
    loaded = StreamingSession.load(saved.save(tmp_path / "s.session"), adapter)
    config = SessionConfig(budget_tokens=_budget(adapter, 4), policy=policy)
    session = loaded.rebuilt(config)
    after = session.stats()
    assert session.config == config and after.policy == policy
    assert after.token_budget == _budget(adapter, 4) < before.token_budget
    assert after.tokens_held <= session.budget.target_tokens < before.tokens_held
    assert after.kv_cap_bytes < before.kv_cap_bytes and after.kv_bytes <= after.kv_cap_bytes
    assert after.memory_end == before.memory_end and after.frames_ingested == before.frames_ingested
    assert after.compressions == before.compressions + 1
    assert session.ask(QUESTION, max_new_tokens=2).memory_end == before.memory_end
    _stream(session, make_frames(adapter.frames_per_step * 4, seed=4), start=100.0)  # and streams on
    assert session.stats().tokens_held <= session.budget.threshold_tokens


def test_rebuilt_into_a_bigger_budget_keeps_the_cache_bit_identical(adapter, make_frames):
    small = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter, 6)))
    _stream(small, make_frames(adapter.frames_per_step * 7, seed=5))
    big = small.rebuilt(SessionConfig(budget_tokens=_budget(adapter, 20)))
    assert big.store.length == small.store.length and big.stats().compressions == small.stats().compressions
    for layer in range(small.store.num_layers):
        for a, b in zip(small.store.view(layer), big.store.view(layer)):
            assert torch.equal(a, b)
    assert big.ask(QUESTION, max_new_tokens=3).text == small.ask(QUESTION, max_new_tokens=3).text


def test_rebuilt_uncapped_and_back(adapter, make_frames):
    capped = StreamingSession(adapter, SessionConfig(budget_tokens=_budget(adapter, 6)))
    _stream(capped, make_frames(adapter.frames_per_step * 9, seed=6))
    full = capped.rebuilt(SessionConfig(policy="full"))
    assert full.budget is None and full.stats().tokens_held == capped.stats().tokens_held
    _stream(full, make_frames(adapter.frames_per_step * 6, seed=7), start=100.0)  # the uncapped store grows
    assert full.stats().tokens_held > capped.budget.threshold_tokens
    again = full.rebuilt(SessionConfig(budget_tokens=_budget(adapter, 6), policy="uniform"))
    assert again.stats().tokens_held <= again.budget.target_tokens
    assert again.stats().memory_end == full.stats().memory_end
