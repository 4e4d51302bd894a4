"""Qwen2-VL / Qwen2.5-VL adapters, the loader, the tiny tokenizer and the tiny checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, DynamicCache

from infinipot.adapters.loading import load_adapter
from infinipot.adapters.qwen2_vl import MRopePositionRule, Qwen2VLAdapter, _default_frame_size
from infinipot.errors import FrameError
from infinipot.tiny_models import build_tiny_checkpoint
from infinipot.tiny_tokenizer import SPECIAL_TOKENS, UNK_TOKEN, build_tokenizer

QWEN = ["tiny-qwen2-vl", "tiny-qwen2.5-vl"]


@pytest.fixture(scope="module", params=QWEN)
def qwen(request, tiny_cache) -> Qwen2VLAdapter:
    return load_adapter("builtin:" + request.param)


# ---------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip_and_special_tokens(tmp_path):
    tok = build_tokenizer(extra_words=["Robot"])
    text = "<|im_start|>user\n<|vision_start|><|vision_end|>What colour was the first robot? zzz<|im_end|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    for special in ("<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>"):
        assert special in tokens
    assert "robot" in tokens and UNK_TOKEN in tokens  # extra word known, "zzz" unknown but encodable
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert len({again.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}) == len(SPECIAL_TOKENS)
    assert again.decode(ids, skip_special_tokens=True).startswith("user what colour was the first robot?")


# -------------------------------------------------------------------------------------------- positions
def test_position_rule_text_and_visual():
    rule = MRopePositionRule(temporal_step=1.0)
    ids, nxt = rule.text(5, 3)
    assert ids.tolist() == [[5, 6, 7]] * 3 and nxt == 8
    ids, nxt = rule.visual(10, num_frames=2, rows=2, cols=3)
    assert ids[0].tolist() == [10] * 6 + [11] * 6
    assert ids[1].tolist() == [10, 10, 10, 11, 11, 11] * 2
    assert ids[2].tolist() == [10, 11, 12] * 4
    assert nxt == 13  # largest id 12, + 1
    scaled, nxt = MRopePositionRule(temporal_step=4.0).visual(10, num_frames=2, rows=2, cols=2)
    assert scaled[0].tolist() == [10] * 4 + [14] * 4 and nxt == 18  # time-aligned: start + T * step


def test_visual_positions_match_transformers_vision_ids(qwen):
    """Inside a chunk our ids equal transformers' get_vision_position_ids with the model's time interval."""
    chunk = qwen.encode_frames([np.zeros((40, 40, 3), np.uint8)] * 4)  # two temporal frames
    ours, _ = qwen.visual_positions(7, chunk)
    rows, cols = qwen.frame_grid
    m = qwen.merge_size
    grid = torch.tensor([chunk.num_frames, rows * m, cols * m])
    interval = qwen.position_rule.temporal_step
    official = qwen.model.model.get_vision_position_ids(7, grid, 1, m, time_interval=interval)
    assert torch.equal(ours.cpu(), official)


# ----------------------------------------------------------------------------------------------- encoding
def test_encode_frames_shapes_and_block_independence(qwen):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8) for _ in range(4)]
    whole = qwen.encode_frames(frames)
    assert whole.num_frames == 2 and whole.num_tokens == 2 * qwen.tokens_per_frame
    assert whole.frame_offset.tolist() == [0] * qwen.tokens_per_frame + [1] * qwen.tokens_per_frame
    assert whole.patch_index.tolist() == list(range(qwen.tokens_per_frame)) * 2
    first, second = qwen.encode_frames(frames[:2]), qwen.encode_frames(frames[2:])
    # block prefill: encoding temporal frames one at a time gives the same tokens as the whole clip
    torch.testing.assert_close(torch.cat([first.embeds, second.embeds]), whole.embeds, atol=1e-5, rtol=1e-5)
    with pytest.raises(FrameError):
        qwen.encode_frames(frames[:3])
    with pytest.raises(FrameError):
        qwen.encode_frames([np.zeros((10, 10), np.uint8)] * 2)


def test_streamed_forward_equals_official_multimodal_forward(qwen):
    """Prefix, one video block and the question streamed through a cache == the model's own forward over
    input_ids with <|video_pad|> placeholders, pixel_values_videos and the same explicit positions."""
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8) for _ in range(4)]
    chunk = qwen.encode_frames(frames)
    prefix = qwen.prefix_token_ids()
    question = qwen.question_token_ids("how many cubes did you see?")

    cache = DynamicCache()
    pos_p, nxt = qwen.text_positions(0, len(prefix))
    qwen.forward(qwen.text_embeds(torch.tensor(prefix)), pos_p, cache)
    pos_v, nxt = qwen.visual_positions(nxt, chunk)
    qwen.forward(chunk.embeds, pos_v, cache)
    pos_q, _ = qwen.text_positions(nxt, len(question))
    streamed = qwen.forward(qwen.text_embeds(torch.tensor(question)), pos_q, cache)

    from infinipot.adapters.preprocessing import preprocess_qwen2_vl_video

    rows, grid = preprocess_qwen2_vl_video(frames, qwen.frame_size)
    video_id = qwen.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    input_ids = torch.tensor([prefix + [video_id] * chunk.num_tokens + question])
    types = torch.zeros_like(input_ids)
    types[0, len(prefix) : len(prefix) + chunk.num_tokens] = 2
    positions = torch.cat([pos_p, pos_v, pos_q], dim=1).unsqueeze(1)
    with torch.no_grad():
        official = qwen.model(
            input_ids=input_ids,
            pixel_values_videos=torch.from_numpy(rows),
            video_grid_thw=torch.tensor([grid]),
            mm_token_type_ids=types,
            position_ids=positions,
        ).logits
    torch.testing.assert_close(streamed[0], official[0, -len(question) :], atol=1e-4, rtol=1e-4)


def test_chat_template_and_eos(qwen):
    prefix = qwen.tokenizer.convert_ids_to_tokens(qwen.prefix_token_ids())
    assert prefix[0] == "<|im_start|>" and prefix[-1] == "<|vision_start|>" and "user" in prefix
    question = qwen.tokenizer.convert_ids_to_tokens(qwen.question_token_ids("did you see a red ball?"))
    assert question[0] == "<|vision_end|>" and question[-1] == "assistant" and "<|im_end|>" in question
    assert qwen.tokenizer.convert_tokens_to_ids("<|im_end|>") in qwen.eos_token_ids


def test_geometry_and_logits_to_keep(qwen):
    g = qwen.geometry
    text = qwen.model.config.text_config
    assert (g.num_layers, g.num_kv_heads) == (text.num_hidden_layers, text.num_key_value_heads)
    assert g.bytes_per_token == 2 * g.num_layers * g.num_kv_heads * g.head_dim * 4
    ids = torch.tensor(qwen.prefix_token_ids())
    pos, _ = qwen.text_positions(0, len(ids))
    full = qwen.forward(qwen.text_embeds(ids), pos, None)
    last = qwen.forward(qwen.text_embeds(ids), pos, None, logits_to_keep=1)
    assert last.shape[1] == 1 and torch.allclose(full[:, -1:], last, atol=1e-6)


# ------------------------------------------------------------------------------------------------ loading
def test_load_adapter_picks_class_and_model(tiny_cache):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    a = load_adapter("builtin:tiny-qwen2-vl")
    b = load_adapter("builtin:tiny-qwen2.5-vl", dtype="bfloat16")
    assert type(a.model) is Qwen2VLForConditionalGeneration and a.frame_grid == (2, 2)
    assert type(b.model) is Qwen2_5_VLForConditionalGeneration and b.frame_grid == (3, 3)
    assert b.geometry.dtype == torch.bfloat16 and b.position_rule.temporal_step == 2.0


def test_load_adapter_errors(tmp_path, tiny_cache):
    with pytest.raises(FileNotFoundError):
        load_adapter(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown builtin"):
        load_adapter("builtin:no-such-model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="no adapter for model_type 'bert'"):
        load_adapter(tmp_path)
    with pytest.raises(ValueError):
        load_adapter("builtin:tiny-qwen2-vl", dtype="float64")


def test_tiny_checkpoint_is_deterministic_and_loadable(tmp_path):
    first = build_tiny_checkpoint("tiny-qwen2-vl", tmp_path / "a")
    second = build_tiny_checkpoint("tiny-qwen2-vl", tmp_path / "b")
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert json.loads((first / "infinipot.json").read_text())["frame_size"] == [56, 56]
    adapter = load_adapter(first)
    assert adapter.frame_size == (56, 56) and adapter.name == str(first)
    with pytest.raises(ValueError):
        build_tiny_checkpoint("nope", tmp_path / "c")


def test_default_frame_size_rules(tmp_path):
    assert _default_frame_size(None) == (224, 224)
    assert _default_frame_size(tmp_path) == (224, 224)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 256 * 256, "max_pixels": 10**7}))
    assert _default_frame_size(tmp_path) == (280, 280)
    (tmp_path / "infinipot.json").write_text(json.dumps({"frame_size": [28, 56]}))
    assert _default_frame_size(tmp_path) == (28, 56)


# ---------------------------------------------------------------------------------------- position layout
def test_position_layout_is_read_from_infinipot_json(tiny_cache, tmp_path):
    """Real and tiny checkpoints stream in the family's video layout; a checkpoint whose infinipot.json says
    "per_chunk" (the built-in trained model) gets the layout it was trained with; anything else is refused."""
    import shutil

    from infinipot.adapters.loading import builtin_checkpoint

    assert load_adapter("builtin:tiny-qwen2-vl").position_layout == "video"
    assert load_adapter("infinipot-tiny-qwen2vl").position_layout == "per_chunk"
    folder = tmp_path / "ckpt"
    shutil.copytree(builtin_checkpoint("tiny-qwen2-vl"), folder)
    settings = json.loads((folder / "infinipot.json").read_text())
    (folder / "infinipot.json").write_text(json.dumps({**settings, "position_layout": "per_chunk"}))
    legacy = load_adapter(str(folder))
    chunk = legacy.encode_frames([np.zeros((40, 40, 3), np.uint8)] * 2)
    chunk.stream_start, chunk.first_frame, chunk.frame_times = 5, 3, (1.5,)
    ids, nxt = legacy.visual_positions(20, chunk)  # per_chunk: the chunk is its own group at 20
    assert ids.tolist() == [[20] * 4, [20, 20, 21, 21], [20, 21, 20, 21]] and nxt == 22
    (folder / "infinipot.json").write_text(json.dumps({**settings, "position_layout": "sideways"}))
    with pytest.raises(ValueError, match="position_layout"):
        load_adapter(str(folder))


def test_video_layout_places_chunk_in_the_stream(qwen):
    """"video" layout: a chunk placed in the stream shares the video base for h/w; t = base + step."""
    chunk = qwen.encode_frames([np.zeros((40, 40, 3), np.uint8)] * 2)
    chunk.stream_start, chunk.first_frame, chunk.frame_times = 5, 3, (1.5,)
    ids, nxt = qwen.visual_positions(20, chunk)
    rows, cols = qwen.frame_grid
    tps = getattr(qwen.model.config.vision_config, "tokens_per_second", None)
    t = 5 + (3 if qwen.model_type == "qwen2_vl" else int(tps * 1.5))
    assert ids[0].tolist() == [t] * (rows * cols)
    assert ids[1].tolist() == [5 + r for r in range(rows) for _ in range(cols)]
    assert nxt == max(20, t + 1, 5 + max(rows, cols))


def test_tokenizer_encodes_frame_time_text():
    """Per-frame time text (Qwen3-VL "<12.5 seconds>", SmolVLM2 "Frame from 01:05:") is made of known tokens;
    the built-in model's vocabulary (time_text=False) is the one it was trained with."""
    tok = build_tokenizer()
    for text in ("<12.5 seconds>", "<0.0 seconds>", "\nFrame from 01:05:", "<98765.4 seconds>"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
    assert tok.convert_ids_to_tokens(tok("<12.5 seconds>", add_special_tokens=False)["input_ids"]) == [
        "<", "1", "2", ".", "5", "seconds", ">"
    ]
    old = build_tokenizer(time_text=False)
    assert old.unk_token_id in old("<12.5 seconds>", add_special_tokens=False)["input_ids"]
    assert len(tok) == len(old) + 13  # digits 0-9, "<", ">", "seconds"
