"""Contract tests of the SmolVLM adapter on a tiny random checkpoint of the real architecture.

The oracles are transformers itself: the official PIL image processor for preprocessing, the model's own
multimodal forward (image placeholder tokens + pixel values) for the embedding path, and one full forward
without a cache for streamed prefill, eviction and greedy decoding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, SmolVLMForConditionalGeneration
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

from infinipot.adapters.base import VLMAdapter
from infinipot.adapters.smolvlm import (
    MODEL_TYPES,
    TINY_NAME,
    SmolVLMAdapter,
    build_tiny_checkpoint,
)
from infinipot.errors import FrameError
from infinipot.tiny_models import TINY_BUILDERS

TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-smolvlm"))


@pytest.fixture(scope="module")
def adapter(checkpoint: Path) -> SmolVLMAdapter:
    return SmolVLMAdapter.from_pretrained(checkpoint)


def _frames(count: int, seed: int, size: tuple[int, int] = (48, 80)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def _ids(ids: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long, device=device)


def _stream_inputs(adapter: SmolVLMAdapter) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Prefix, two visual chunks and a question as (embeds (n, hidden), positions (1, n)) pieces."""
    pieces = []
    start = 0
    prefix = _ids(adapter.prefix_token_ids(), adapter.device)
    pos, start = adapter.text_positions(start, len(prefix))
    pieces.append((adapter.text_embeds(prefix), pos))
    for count, seed in ((2, 1), (1, 2)):
        chunk = adapter.encode_frames(_frames(count, seed))
        pos, start = adapter.visual_positions(start, chunk)
        pieces.append((chunk.embeds, pos))
    question = _ids(adapter.question_token_ids("What colour was the cube?"), adapter.device)
    pos, start = adapter.text_positions(start, len(question))
    pieces.append((adapter.text_embeds(question), pos))
    return pieces


# ---------------------------------------------------------------------- loading / checkpoint
def test_tiny_checkpoint_loads_real_architecture(checkpoint: Path, adapter: SmolVLMAdapter) -> None:
    assert (checkpoint / "model.safetensors").is_file()
    assert isinstance(adapter, VLMAdapter)
    assert isinstance(adapter.model, SmolVLMForConditionalGeneration)
    assert adapter.model.config.model_type in MODEL_TYPES
    assert TINY_BUILDERS[TINY_NAME] is build_tiny_checkpoint
    geometry = adapter.geometry
    assert (geometry.num_layers, geometry.num_kv_heads, geometry.head_dim) == (2, 2, 16)
    assert geometry.bytes_per_token == 2 * 2 * 2 * 16 * 4
    eou = adapter.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert eou in adapter.eos_token_ids


def test_tiny_checkpoint_is_deterministic(checkpoint: Path, tmp_path: Path) -> None:
    again = SmolVLMForConditionalGeneration.from_pretrained(build_tiny_checkpoint(tmp_path / "again"))
    first = SmolVLMForConditionalGeneration.from_pretrained(checkpoint)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_from_pretrained_rejects_other_model_types(tmp_path: Path) -> None:
    LlamaConfig(num_hidden_layers=1, hidden_size=8, intermediate_size=8, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="llama"):
        SmolVLMAdapter.from_pretrained(tmp_path)


# ---------------------------------------------------------------------- text
def test_prompt_uses_smolvlm_chat_tokens(adapter: SmolVLMAdapter) -> None:
    tokens = adapter.tokenizer.convert_ids_to_tokens(adapter.prefix_token_ids())
    assert tokens[:3] == ["<|im_start|>", "user", ":"]
    question = adapter.tokenizer.convert_ids_to_tokens(adapter.question_token_ids("  Which shape?  "))
    assert question == ["which", "shape", "?", "<end_of_utterance>", "assistant", ":"]
    unk = adapter.tokenizer.unk_token_id
    assert unk not in adapter.prefix_token_ids()
    template = adapter.tokenizer.convert_ids_to_tokens(adapter.question_token_ids(""))
    assert template == ["<end_of_utterance>", "assistant", ":"]  # the session sizes its reserve with this


# ---------------------------------------------------------------------- vision
def test_preprocess_matches_official_image_processor(checkpoint: Path, adapter: SmolVLMAdapter) -> None:
    official = SmolVLMImageProcessorPil.from_pretrained(checkpoint)
    for side in (64, 100):  # square frames: the official processor then neither pads nor splits
        frame = _frames(1, seed=side, size=(side, side))[0]
        expected = official(images=[[frame]], return_tensors="np")["pixel_values"][0, 0]
        ours = adapter.preprocess([frame])[0, 0].numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_encode_frames_shapes_and_grid(adapter: SmolVLMAdapter) -> None:
    assert adapter.frames_per_step == 1
    assert adapter.frame_grid == (4, 4)  # 64 px / 8 px patches = 8x8, pixel shuffle 2 -> 4x4
    frames = _frames(2, seed=3) + _frames(1, seed=4, size=(120, 90))  # any size: resized
    chunk = adapter.encode_frames(frames)
    per_frame = adapter.tokens_per_frame
    assert chunk.num_frames == 3 and chunk.frame_grid == (4, 4)
    assert chunk.embeds.shape == (3 * per_frame, adapter.model.config.text_config.hidden_size)
    assert chunk.embeds.dtype == adapter.dtype
    assert chunk.frame_offset.tolist() == [f for f in range(3) for _ in range(per_frame)]
    assert chunk.patch_index.tolist() == list(range(per_frame)) * 3
    # frames are encoded independently: a batch equals its frames one by one
    single = adapter.encode_frames(frames[2:])
    torch.testing.assert_close(chunk.embeds[2 * per_frame:], single.embeds, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(chunk.embeds[:per_frame], chunk.embeds[per_frame:2 * per_frame])


def test_pixel_shuffle_output_is_row_major_over_the_token_grid(adapter: SmolVLMAdapter) -> None:
    """The documented patch_index layout: token (r, c) holds the s x s patch block at block row r, col c."""
    patches = adapter.image_size // adapter.model.config.vision_config.patch_size
    scale = adapter.model.config.scale_factor
    ids = torch.arange(patches * patches, dtype=torch.float32).reshape(1, -1, 1)
    shuffled = adapter.model.model.connector.pixel_shuffle(ids, scale)[0]  # (tokens, scale*scale)
    rows, cols = adapter.frame_grid
    for token in range(rows * cols):
        r, c = divmod(token, cols)
        block = {(r * scale + i) * patches + c * scale + j for i in range(scale) for j in range(scale)}
        assert set(shuffled[token].long().tolist()) == block


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((32, 32, 3), dtype=np.float32),
        np.zeros((32, 32, 4), dtype=np.uint8),
        np.zeros((32, 32), dtype=np.uint8),
        np.zeros((0, 32, 3), dtype=np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float", "rgba", "gray", "empty", "list"],
)
def test_bad_frames_raise_frame_error(adapter: SmolVLMAdapter, bad: object) -> None:
    with pytest.raises(FrameError):
        adapter.encode_frames(_frames(1, seed=0) + [bad])


def test_no_frames_raise_frame_error(adapter: SmolVLMAdapter) -> None:
    with pytest.raises(FrameError):
        adapter.encode_frames([])
    with pytest.raises(FrameError):
        adapter.encode_frames(_frames(1, seed=0)[0])  # a bare frame, not a sequence


# ---------------------------------------------------------------------- positions
def test_positions_continue_the_logical_counter(adapter: SmolVLMAdapter) -> None:
    ids, nxt = adapter.text_positions(5, 3)
    assert ids.tolist() == [[5, 6, 7]] and nxt == 8
    chunk = adapter.encode_frames(_frames(2, seed=5))
    ids, after = adapter.visual_positions(nxt, chunk)
    assert ids.shape == (1, chunk.num_tokens)
    assert ids.tolist() == [list(range(8, 8 + chunk.num_tokens))] and after == 8 + chunk.num_tokens
    ids, same = adapter.text_positions(after, 0)
    assert ids.shape == (1, 0) and same == after


# ---------------------------------------------------------------------- forward
def test_adapter_embedding_path_equals_model_multimodal_forward(adapter: SmolVLMAdapter) -> None:
    """Prefix + <image> placeholders + question through the model's own forward == our embeds path."""
    frames = _frames(2, seed=6)
    chunk = adapter.encode_frames(frames)
    prefix, question = adapter.prefix_token_ids(), adapter.question_token_ids("How many cubes?")
    image_id = adapter.model.config.image_token_id
    input_ids = _ids(prefix + [image_id] * chunk.num_tokens + question, adapter.device).unsqueeze(0)
    with torch.no_grad():
        expected = adapter.model(input_ids=input_ids, pixel_values=adapter.preprocess(frames)).logits
    embeds = torch.cat([adapter.text_embeds(_ids(prefix, adapter.device)), chunk.embeds,
                        adapter.text_embeds(_ids(question, adapter.device))])
    positions, _ = adapter.text_positions(0, embeds.shape[0])
    ours = adapter.forward(embeds.unsqueeze(0), positions, DynamicCache())
    assert ours.shape == (1, embeds.shape[0], adapter.model.config.text_config.vocab_size)
    torch.testing.assert_close(ours, expected, atol=TOL, rtol=0)


def test_streamed_prefill_in_two_chunks_equals_one_full_forward(adapter: SmolVLMAdapter) -> None:
    pieces = _stream_inputs(adapter)
    embeds = torch.cat([e for e, _ in pieces]).unsqueeze(0)
    positions = torch.cat([p for _, p in pieces], dim=-1)
    full = adapter.forward(embeds, positions, DynamicCache())

    cache = DynamicCache()
    split = pieces[0][0].shape[0] + pieces[1][0].shape[0]  # prefix + first visual chunk, then the rest
    first = adapter.forward(embeds[:, :split], positions[:, :split], cache)
    assert cache.get_seq_length() == split
    second = adapter.forward(embeds[:, split:], positions[:, split:], cache)
    assert cache.get_seq_length() == embeds.shape[1]
    streamed = torch.cat([first, second], dim=1)
    assert (streamed - full).abs().max().item() <= TOL
    last = adapter.forward(embeds[:, -1:], positions[:, -1:], DynamicCache())
    assert not torch.allclose(last[0, -1], full[0, -1], atol=TOL)  # the cache really carried the context


def test_explicit_positions_survive_eviction(adapter: SmolVLMAdapter) -> None:
    """Evict tokens from the cache after prefill and continue from the logical counter. Oracle: one full
    forward over every token where the later tokens may not attend to the evicted ones (a custom 4-D mask
    given to the text model). Compacted positions (what a cache-length default would give) must differ."""
    pieces = _stream_inputs(adapter)
    embeds = torch.cat([e for e, _ in pieces]).unsqueeze(0)
    positions = torch.cat([p for _, p in pieces], dim=-1)
    total = embeds.shape[1]
    question_len = pieces[-1][0].shape[0]
    context = total - question_len

    cache = DynamicCache()
    adapter.forward(embeds[:, :context], positions[:, :context], cache)
    keep = torch.tensor([i for i in range(context) if i < 15 or i % 3 == 0], device=adapter.device)
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(-2, keep)
        layer.values = layer.values.index_select(-2, keep)
    streamed = adapter.forward(embeds[:, context:], positions[:, context:], cache)
    assert cache.get_seq_length() == len(keep) + question_len

    allowed = torch.ones(total, total, dtype=torch.bool).tril()
    evicted = torch.ones(context, dtype=torch.bool)
    evicted[keep] = False
    allowed[context:, :context] &= ~evicted
    mask = torch.zeros(1, 1, total, total, dtype=adapter.dtype)
    mask.masked_fill_(~allowed, torch.finfo(adapter.dtype).min)
    with torch.no_grad():
        hidden = adapter.model.model.text_model(
            inputs_embeds=embeds, position_ids=positions, attention_mask=mask
        ).last_hidden_state
        oracle = adapter.model.lm_head(hidden[:, context:])
    assert (streamed - oracle).abs().max().item() <= TOL

    cache = DynamicCache()
    adapter.forward(embeds[:, :context], positions[:, :context], cache)
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(-2, keep)
        layer.values = layer.values.index_select(-2, keep)
    compact = torch.arange(len(keep), len(keep) + question_len).unsqueeze(0)
    wrong = adapter.forward(embeds[:, context:], compact, cache)
    assert (wrong - oracle).abs().max().item() > TOL


def test_greedy_generation_with_cache_matches_recomputation(adapter: SmolVLMAdapter) -> None:
    pieces = _stream_inputs(adapter)
    embeds = torch.cat([e for e, _ in pieces]).unsqueeze(0)
    positions = torch.cat([p for _, p in pieces], dim=-1)
    next_pos = int(positions[0, -1]) + 1

    cache = DynamicCache()
    logits = adapter.forward(embeds, positions, cache, logits_to_keep=1)
    assert logits.shape[1] == 1
    generated: list[int] = []
    for _ in range(4):
        token = int(logits[0, -1].argmax())
        generated.append(token)
        pos, next_pos = adapter.text_positions(next_pos, 1)
        logits = adapter.forward(adapter.text_embeds(_ids([token], adapter.device)).unsqueeze(0), pos, cache)

    seq = embeds
    oracle: list[int] = []
    for _ in range(4):
        full = adapter.forward(seq, torch.arange(seq.shape[1]).unsqueeze(0), DynamicCache())
        token = int(full[0, -1].argmax())
        oracle.append(token)
        seq = torch.cat([seq, adapter.text_embeds(_ids([token], adapter.device)).view(1, 1, -1)], dim=1)
    assert generated == oracle
    assert all(0 <= t < adapter.model.config.text_config.vocab_size for t in generated)
    assert isinstance(adapter.tokenizer.decode(generated, skip_special_tokens=True), str)


def test_load_adapter_finds_the_builtin_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infinipot.adapters.loading import load_adapter

    monkeypatch.setenv("INFINIPOT_CACHE", str(tmp_path))
    loaded = load_adapter("builtin:" + TINY_NAME)
    assert isinstance(loaded, SmolVLMAdapter)
    assert (tmp_path / TINY_NAME / "config.json").is_file()
    assert loaded.frame_grid == (4, 4)
