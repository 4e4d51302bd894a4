"""Random-weight models of real published sizes, built in memory from their config (no download).

Why: speed and memory depend on the architecture's size, not on trained weights. `load_adapter("random:
qwen2-vl-2b")` gives the benchmark (`infinipot-bench --model random:qwen2-vl-2b`) a model with exactly the
layer counts, widths, heads, vocabulary and vision tower of the published checkpoint, so ms per frame, TTFT
and peak memory are those of the real model. Its answers are meaningless. The tokenizer is the small one
built in code (`infinipot.tiny_tokenizer`), whose ids all lie inside the published vocabulary.

Published values: Qwen/Qwen2-VL-2B-Instruct `config.json` (Qwen2-VL, arXiv 2409.12191): text hidden 1536,
intermediate 8960, 28 layers, 12 attention heads, 2 KV heads (head_dim 128), vocabulary 151,936, tied
embeddings, rope_theta 1e6, M-RoPE sections [16, 24, 24], max_position_embeddings 32,768; vision tower
depth 32, embed_dim 1280, 16 heads, mlp_ratio 4, patch 14, temporal patch 2, spatial merge 2.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["RANDOM_PREFIX", "RANDOM_MODELS", "qwen2_vl_2b_config", "build_random_adapter"]

RANDOM_PREFIX = "random:"


def qwen2_vl_2b_config(special: dict[str, int]) -> object:
    """`Qwen2VLConfig` with the published Qwen2-VL-2B-Instruct sizes; `special` = our tokenizer's ids."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(
            vocab_size=151936,
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            tie_word_embeddings=True,
            bos_token_id=special["pad"],
            eos_token_id=special["eos"],
            pad_token_id=special["pad"],
        ),
        vision_config=dict(
            depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, in_channels=3,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        image_token_id=special["image_token_id"],
        video_token_id=special["video_token_id"],
        vision_start_token_id=special["vision_start_token_id"],
        vision_end_token_id=special["vision_end_token_id"],
        tie_word_embeddings=True,
    )


#: name after "random:" -> config builder (from our tokenizer's special ids)
RANDOM_MODELS: dict[str, Callable[[dict[str, int]], object]] = {"qwen2-vl-2b": qwen2_vl_2b_config}


def build_random_adapter(name: str, dtype: str = "float32", device: str = "cpu", *, frame_size: int = 224):
    """A `Qwen2VLAdapter` over a randomly initialised model of the published config `name` (seeded)."""
    from transformers import Qwen2VLForConditionalGeneration

    from infinipot.adapters.qwen2_vl import Qwen2VLAdapter, resolve_dtype
    from infinipot.tiny_models import TINY_SEED, _qwen_special_ids
    from infinipot.tiny_tokenizer import build_tokenizer

    if name not in RANDOM_MODELS:
        raise ValueError(f"unknown random model {name!r}; known: {sorted(RANDOM_MODELS)}")
    tokenizer = build_tokenizer()
    special = _qwen_special_ids(tokenizer)
    config = RANDOM_MODELS[name](special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Qwen2VLForConditionalGeneration(config)
    model = model.to(device=torch.device(device), dtype=resolve_dtype(dtype)).eval()
    return Qwen2VLAdapter(model, tokenizer, name=RANDOM_PREFIX + name, frame_size=frame_size)
