"""Conformance: a full-cache stream answers exactly like the stock transformers model run on the same frames.

The stock side is independent of the engine's position code: it runs the model's own multimodal forward
(`XForConditionalGeneration.__call__` with `input_ids`, `pixel_values_videos`, `video_grid_thw`,
`mm_token_type_ids`) over the frames as ONE video, laid out as the family's processor does it:

* Qwen2-VL / Qwen2.5-VL. The processor class cannot be built here (its video processor needs torchvision),
  so the prompt follows `transformers/models/qwen2_vl/processing_qwen2_vl.py` (`Qwen2VLProcessor.__call__`:
  each `<|video_pad|>` expands to `video_grid_thw.prod() // merge_size**2` copies, between
  `<|vision_start|>` and `<|vision_end|>`) inside Qwen's chat template; the pixels come from one call of
  `preprocess_qwen2_vl_video` over all frames (checked equal to the official video processor, see
  test_preprocessing.py). Vision position ids come from the model's own `get_vision_position_ids` with
  `time_interval = tokens_per_second * second_per_grid_ts` (Qwen2.5-VL; `second_per_grid_ts =
  temporal_patch_size / fps` as in `processing_qwen2_5_vl.py`). Text after the video follows Qwen's
  released rule (largest vision id + 1), NOT installed transformers 5.24's `get_rope_index` (start +
  max(h, w)); `test_transformers_5_text_after_video_departs_from_released_rule` pins that difference.

Checks: first-answer-token logits equal to 1e-4 relative (max |delta| / max |stock|) in float32, and the
same greedy answer. `test_per_chunk_layout_is_not_conformant` keeps the comparison honest: the engine's old
per-frame-base layout (still used for the built-in trained model) must FAIL it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from infinipot.adapters.loading import load_adapter
from infinipot.adapters.preprocessing import preprocess_qwen2_vl_video
from infinipot.session import SessionConfig, StreamingSession

QUESTION = "what colour was the first cube?"
ANSWER_TOKENS = 4
REL_TOL = 1e-4


def relative_difference(ours: torch.Tensor, stock: torch.Tensor) -> float:
    """max |ours - stock| / max |stock| over the vocabulary, in float64."""
    ours, stock = ours.double(), stock.double()
    return float((ours - stock).abs().max() / stock.abs().max())


def _frames(n: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(n)]


def stream_first_logits(adapter, frames, stamps, question: str = QUESTION) -> tuple[torch.Tensor, str, list[int]]:
    """Full-cache session over `frames`: (first-answer-token logits, answer text, greedy ids)."""
    captured: list[torch.Tensor] = []
    original = adapter.forward

    def spy(embeds, position_ids, cache, logits_to_keep=0):
        logits = original(embeds, position_ids, cache, logits_to_keep=logits_to_keep)
        captured.append(logits[0, -1].detach().clone())
        return logits

    session = StreamingSession(adapter, SessionConfig(policy="full", max_new_tokens=ANSWER_TOKENS))
    for frame, stamp in zip(frames, stamps):
        session.add_frame(frame, stamp)
    before = len(captured)
    adapter.forward = spy
    try:
        answer = session.ask(question, max_new_tokens=ANSWER_TOKENS)
    finally:
        del adapter.forward
    steps = captured[before:]
    ids = [int(torch.argmax(step)) for step in steps]
    return steps[0], answer.text, ids


# --------------------------------------------------------------------------------------- Qwen2-VL / 2.5-VL
def qwen_stock_inputs(adapter, frames, fps: float, question: str = QUESTION):
    """input_ids, model kwargs and released-rule position ids of the stock model's one-video prompt."""
    tok = adapter.tokenizer
    m = adapter.merge_size
    rows, grid = preprocess_qwen2_vl_video(frames, adapter.frame_size, adapter.patch_size, adapter.frames_per_step, m)
    grid_thw = torch.tensor([grid])
    n_video = int(grid_thw.prod()) // (m * m)
    encode = lambda text: list(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    before = encode(f"<|im_start|>system\n{adapter.system_prompt}<|im_end|>\n<|im_start|>user\n<|vision_start|>")
    after = encode(f"<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n")
    video_pad = tok.convert_tokens_to_ids("<|video_pad|>")
    input_ids = torch.tensor([before + [video_pad] * n_video + after])
    types = torch.zeros_like(input_ids)
    types[0, len(before) : len(before) + n_video] = 2
    kwargs = dict(pixel_values_videos=torch.from_numpy(rows), video_grid_thw=grid_thw, mm_token_type_ids=types)
    interval = 1.0
    if adapter.model_type == "qwen2_5_vl":
        second_per_grid = adapter.frames_per_step / fps
        kwargs["second_per_grid_ts"] = torch.tensor([second_per_grid])
        interval = adapter.model.config.vision_config.tokens_per_second * second_per_grid
    start = len(before)
    vision = adapter.model.model.get_vision_position_ids(start, grid_thw[0], 1, m, time_interval=interval)
    text_before = torch.arange(start).expand(3, -1)
    after_start = int(vision.max()) + 1  # Qwen's released rule
    text_after = torch.arange(after_start, after_start + len(after)).expand(3, -1)
    positions = torch.cat([text_before, vision, text_after], dim=1)
    return input_ids, kwargs, positions


def stock_greedy(model, input_ids, kwargs, positions, steps: int, eos: set[int]) -> tuple[torch.Tensor, list[int]]:
    """The stock forward over the whole prompt into a DynamicCache, then greedy steps through the same
    forward (each new token embedded by the model). Returns (first logits, ids).

    positions: the prompt's position ids, each new token one position after the last; None = the model
    computes its own (SmolVLM: 1-D from the cache length; Qwen3-VL: its `get_rope_index` and, decoding, its
    rope deltas)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    ids: list[int] = []
    with torch.no_grad():
        prompt_positions = {} if positions is None else {"position_ids": positions.unsqueeze(1)}
        logits = model(input_ids=input_ids, cache=cache, use_cache=True, **prompt_positions, **kwargs).logits[0, -1]
        first = logits.clone()
        position = None if positions is None else int(positions[:, -1].max())
        for _ in range(steps):
            ids.append(int(torch.argmax(logits)))
            if ids[-1] in eos or len(ids) == steps:
                break
            embeds = model.get_input_embeddings()(torch.tensor([[ids[-1]]]))
            step_positions = {}
            if position is not None:
                position += 1
                shape = (3, 1, 1) if positions.dim() == 2 and positions.shape[0] == 3 else (1, 1)
                step_positions = {"position_ids": torch.full(shape, position, dtype=torch.long)}
            logits = model(inputs_embeds=embeds, cache=cache, use_cache=True, **step_positions).logits[0, -1]
    return first, ids


def assert_conformant(label: str, adapter, ours: torch.Tensor, text: str, our_ids: list[int],
                      stock: torch.Tensor, stock_ids: list[int]) -> None:
    """Same first-answer-token logits (REL_TOL relative), the same greedy ids and the same answer text."""
    difference = relative_difference(ours, stock)
    print(f"{label}: relative first-token logit difference {difference:.2e}")
    assert difference <= REL_TOL
    assert our_ids == stock_ids
    assert text == adapter.decode([i for i in stock_ids if i not in adapter.eos_token_ids])


QWEN_CASES = [
    pytest.param("tiny-qwen2-vl", 2.0, id="qwen2_vl"),
    pytest.param("tiny-qwen2.5-vl", 2.0, id="qwen2_5_vl-2fps"),
    pytest.param("tiny-qwen2.5-vl", 0.75, id="qwen2_5_vl-0.75fps"),
]


@pytest.fixture(scope="module")
def qwen_adapters(tiny_cache):
    return {name: load_adapter("builtin:" + name) for name in ("tiny-qwen2-vl", "tiny-qwen2.5-vl")}


@pytest.mark.parametrize("name, fps", QWEN_CASES)
def test_qwen_stream_matches_stock_model(qwen_adapters, name, fps):
    """12 temporal frames streamed block by block == the stock model on them as one video."""
    adapter = qwen_adapters[name]
    frames = _frames(12 * adapter.frames_per_step)
    stamps = [10.0 + i / fps for i in range(len(frames))]  # header stamps: the stream need not start at 0
    ours, text, our_ids = stream_first_logits(adapter, frames, stamps)
    input_ids, kwargs, positions = qwen_stock_inputs(adapter, frames, fps)
    stock, stock_ids = stock_greedy(adapter.model, input_ids, kwargs, positions, ANSWER_TOKENS, set(adapter.eos_token_ids))
    assert_conformant(f"{name} @ {fps} fps", adapter, ours, text, our_ids, stock, stock_ids)


def test_qwen2_5_vl_sampling_rate_changes_the_layout(qwen_adapters):
    """The two sampling rates above really lay the video out differently (so both cases test something):
    the temporal ids follow the header stamps, not a nominal fps."""
    adapter = qwen_adapters["tiny-qwen2.5-vl"]
    frames = _frames(4 * adapter.frames_per_step)
    firsts = [stream_first_logits(adapter, frames, [i / fps for i in range(len(frames))])[0] for fps in (2.0, 0.75)]
    assert relative_difference(firsts[0], firsts[1]) > 10 * REL_TOL


def test_qwen2_5_vl_irregular_stamps_follow_real_time(qwen_adapters):
    """Irregular stamps: temporal frame k gets t = base + floor(tokens_per_second * (its first stamp - the
    stream's first stamp)); h and w share the video base across all frames."""
    adapter = qwen_adapters["tiny-qwen2.5-vl"]
    stamps = [0.0, 0.4, 1.0, 1.2, 3.7, 3.9, 4.0, 4.5]
    chunks_positions: list[torch.Tensor] = []
    original = adapter.visual_positions

    def spy(start, chunk):
        ids, nxt = original(start, chunk)
        chunks_positions.append(ids)
        return ids, nxt

    adapter.visual_positions = spy
    try:
        session = StreamingSession(adapter, SessionConfig(policy="full"))
        for frame, stamp in zip(_frames(len(stamps)), stamps):
            session.add_frame(frame, stamp)
    finally:
        del adapter.visual_positions
    base = len(adapter.prefix_token_ids())
    tps = adapter.model.config.vision_config.tokens_per_second
    expected_t = [base + int(np.floor(tps * (stamps[2 * k] - stamps[0]) + 1e-6)) for k in range(4)]
    assert [int(p[0, 0]) for p in chunks_positions] == expected_t
    rows, cols = adapter.frame_grid
    for ids in chunks_positions:
        assert ids[1].tolist() == [base + r for r in range(rows) for _ in range(cols)]
        assert ids[2].tolist() == [base + c for _ in range(rows) for c in range(cols)]
    assert session.stats().next_position == max(int(p.max()) for p in chunks_positions) + 1


def test_per_chunk_layout_is_not_conformant(qwen_adapters, tiny_cache):
    """The engine's pre-issue-15 layout (each temporal frame its own base) fails the same comparison."""
    from infinipot.adapters.qwen2_vl import Qwen2VLAdapter

    stock_adapter = qwen_adapters["tiny-qwen2-vl"]
    legacy = Qwen2VLAdapter(stock_adapter.model, stock_adapter.tokenizer, frame_size=stock_adapter.frame_size,
                            position_layout="per_chunk")
    frames = _frames(12 * legacy.frames_per_step)
    ours, _, _ = stream_first_logits(legacy, frames, [0.5 * i for i in range(len(frames))])
    input_ids, kwargs, positions = qwen_stock_inputs(legacy, frames, 2.0)
    stock, _ = stock_greedy(legacy.model, input_ids, kwargs, positions, 1, set())
    difference = relative_difference(ours, stock)
    print(f"per_chunk layout vs stock: relative difference {difference:.2e}")
    assert difference > REL_TOL


def test_transformers_5_text_after_video_departs_from_released_rule(qwen_adapters):
    """Installed transformers' `get_rope_index` starts the text after a video at video start + max(h, w) of
    the merged grid; Qwen's released rule (which the engine and the stock side above follow) starts it at the
    largest vision id + 1. With 12 temporal frames of a 2x2 grid these differ; if transformers changes its
    rule, this test tells us to look again."""
    adapter = qwen_adapters["tiny-qwen2-vl"]
    frames = _frames(12 * adapter.frames_per_step)
    input_ids, kwargs, released = qwen_stock_inputs(adapter, frames, 2.0)
    installed, _ = adapter.model.model.get_rope_index(
        input_ids, kwargs["mm_token_type_ids"], video_grid_thw=kwargs["video_grid_thw"]
    )
    n_text_after = len(adapter.question_token_ids(QUESTION))
    video_start = len(adapter.prefix_token_ids())
    rows, cols = adapter.frame_grid
    # the video itself is laid out identically
    assert torch.equal(installed[:, 0, :-n_text_after], released[:, :-n_text_after])
    assert int(installed[0, 0, -n_text_after]) == video_start + max(rows, cols)
    assert int(released[0, -n_text_after]) == video_start + 11 + 1  # t of the 12th temporal frame + 1


# ------------------------------------------------------------------------------------------------ SmolVLM2
def smolvlm_stock_prompt(adapter, seconds: list[float], question: str = QUESTION) -> str:
    """The prompt SmolVLM2's processor writes for these frames (transformers 5.24
    `models/smolvlm/processing_smolvlm.py`: `DEFAULT_CHAT_TEMPLATE` for a user turn starting with a video,
    `replace_video_token`: per frame `FRAME_TIMESTAMP_MESSAGE` + `_prompt_single_image`, then
    `DEFAULT_MEDIA_OUTTRO`). The processor cannot be built here (its video processor needs torchvision), so
    this follows its source. One documented departure: the intro. The processor's `DEFAULT_VIDEO_INTRO`
    names the frame count and duration, which a stream cannot know when it prefills the intro; both sides use
    the streaming intro (infinipot/adapters/smolvlm.py, "Prompt")."""
    intro = "You are provided the following series of frames from a video.\n"
    frames = ""
    for second in seconds:
        minutes, secs = int(second // 60), int(second % 60)
        image = "<fake_token_around_image><global-img>" + "<image>" * adapter.tokens_per_frame + "<fake_token_around_image>"
        frames += f"\nFrame from {minutes:02d}:{secs:02d}:" + image
    return "<|im_start|>User: " + intro + frames + "\n\n" + question + "<end_of_utterance>\nAssistant:"


def test_smolvlm_stream_matches_stock_model(tiny_cache):
    """8 frames with timestamps past a minute, streamed frame by frame with their wrappers == the stock
    SmolVLM forward over the processor's prompt with all frames' pixel values."""
    adapter = load_adapter("builtin:tiny-smolvlm")
    frames = _frames(8)
    stamps = [100.0 + 13.0 * i for i in range(len(frames))]  # 00:00, 00:13, ... 01:31 after the first
    ours, text, our_ids = stream_first_logits(adapter, frames, stamps)
    prompt = smolvlm_stock_prompt(adapter, [s - stamps[0] for s in stamps])
    input_ids = torch.tensor([adapter.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    assert adapter.tokenizer.unk_token_id not in input_ids[0].tolist()  # timestamps are real tokens
    stock, stock_ids = stock_greedy(adapter.model, input_ids, {"pixel_values": adapter.preprocess(frames)}, None,
                                     ANSWER_TOKENS, set(adapter.eos_token_ids))
    assert_conformant("smolvlm", adapter, ours, text, our_ids, stock, stock_ids)


# ------------------------------------------------------------------------------------------------ Qwen3-VL
def qwen3_stock_inputs(adapter, frames, stamps, question: str = QUESTION):
    """input_ids and kwargs of the stock Qwen3-VL prompt for these frames as ONE video. The processor class
    cannot be built here (its video processor needs torchvision); the text follows
    `models/qwen3_vl/processing_qwen3_vl.py` (`replace_video_token`: per temporal patch `<{t:.1f} seconds>` +
    `<|vision_start|>` + `<|video_pad|>` * (h*w / merge^2) + `<|vision_end|>`, t from `_calculate_timestamps`:
    the mean time of the patch's two frames). Positions are left to the stock model (`get_rope_index`, which
    splits the video grid per patch; with t = 1 per group its text rule equals Qwen's released one)."""
    tok = adapter.tokenizer
    m = adapter.merge_size
    rows, grid = preprocess_qwen2_vl_video(frames, adapter.frame_size, adapter.patch_size, adapter.frames_per_step, m,
                                           mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    per_patch = grid[1] * grid[2] // (m * m)
    step = adapter.frames_per_step
    times = [(stamps[k * step] + stamps[(k + 1) * step - 1]) / 2 - stamps[0] for k in range(grid[0])]
    video = "".join(f"<{t:.1f} seconds><|vision_start|>" + "<|video_pad|>" * per_patch + "<|vision_end|>" for t in times)
    text = "<|im_start|>user\n" + video + question + "<|im_end|>\n<|im_start|>assistant\n"
    input_ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    assert tok.unk_token_id not in input_ids[0].tolist()  # the timestamps are real tokens
    types = (input_ids == tok.convert_tokens_to_ids("<|video_pad|>")).long() * 2
    kwargs = dict(pixel_values_videos=torch.from_numpy(rows), video_grid_thw=torch.tensor([grid]), mm_token_type_ids=types)
    return input_ids, kwargs


@pytest.mark.parametrize("fps", [2.0, 0.6])
def test_qwen3_vl_stream_matches_stock_model(tiny_cache, fps):
    """8 temporal patches streamed patch by patch (time text, per-patch groups, interleaved M-RoPE, DeepStack
    per block) == the stock Qwen3-VL forward over the processor's prompt with the whole video."""
    adapter = load_adapter("builtin:tiny-qwen3-vl")
    frames = _frames(8 * adapter.frames_per_step)
    stamps = [3.0 + i / fps for i in range(len(frames))]
    ours, text, our_ids = stream_first_logits(adapter, frames, stamps)
    input_ids, kwargs = qwen3_stock_inputs(adapter, frames, stamps)
    stock, stock_ids = stock_greedy(adapter.model, input_ids, kwargs, None, ANSWER_TOKENS, set(adapter.eos_token_ids))
    assert_conformant(f"qwen3_vl @ {fps} fps", adapter, ours, text, our_ids, stock, stock_ids)


def test_qwen3_vl_deepstack_matters(tiny_cache):
    """Without the DeepStack features the same stream is NOT conformant (so the test above checks them)."""
    adapter = load_adapter("builtin:tiny-qwen3-vl")
    frames = _frames(4 * adapter.frames_per_step)
    stamps = [0.5 * i for i in range(len(frames))]
    original = adapter.stream_block

    def without_deepstack(start, chunk):
        block = original(start, chunk)
        block.forward_kwargs = {}
        return block

    adapter.stream_block = without_deepstack
    try:
        ours, _, _ = stream_first_logits(adapter, frames, stamps)
    finally:
        del adapter.stream_block
    input_ids, kwargs = qwen3_stock_inputs(adapter, frames, stamps)
    stock, _ = stock_greedy(adapter.model, input_ids, kwargs, None, 1, set())
    assert relative_difference(ours, stock) > 10 * REL_TOL
