"""Tiny random checkpoints of the real architectures, built in code (no download).

Why: tests, the benchmark and CI must exercise the exact transformers classes, the `from_pretrained` path
and the real position scheme, on a CPU, in seconds. A builder writes config + safetensors weights +
tokenizer + generation config + `infinipot.json` (our frame size) into a folder; everything downstream
loads it like any hub checkpoint. Other adapters register their own builders in `TINY_BUILDERS`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from .tiny_tokenizer import build_tokenizer

__all__ = ["TINY_BUILDERS", "TINY_SEED", "register_tiny_builder", "build_tiny_checkpoint", "write_infinipot_json"]

TINY_SEED = 1234

#: name -> function(path) that writes a checkpoint folder. Filled below and by other adapter modules.
TINY_BUILDERS: dict[str, Callable[[Path], None]] = {}


def register_tiny_builder(name: str, builder: Callable[[Path], None]) -> None:
    """Make `build_tiny_checkpoint(name, ...)` and `load_adapter("builtin:" + name)` know a new tiny model."""
    TINY_BUILDERS[name] = builder


def write_infinipot_json(path: Path, **settings: object) -> None:
    """Write our small settings file (frame size, fps, provenance) next to a checkpoint."""
    (Path(path) / "infinipot.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _qwen_special_ids(tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_end|>", "<|endoftext|>")}
    return {
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "eos": ids["<|im_end|>"],
        "pad": ids["<|endoftext|>"],
    }


def _vision_token_ids(special: dict[str, int]) -> dict[str, int]:
    """The four vision token ids a Qwen VL config names."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {name: special[name] for name in names}


def _text_config(vocab_size: int, special: dict[str, int]) -> dict:
    # hidden 64, 4 query heads of dim 16, 2 KV heads (GQA, as in the real models); mrope_section sums to 16/2.
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1 << 20,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=special["pad"],
        eos_token_id=special["eos"],
        pad_token_id=special["pad"],
    )


def _save_qwen(path: Path, model: torch.nn.Module, tokenizer, special: dict[str, int], frame_size: int, name: str) -> None:
    from transformers import GenerationConfig

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    GenerationConfig(
        eos_token_id=[special["eos"], special["pad"]], pad_token_id=special["pad"], do_sample=False
    ).save_pretrained(path)
    write_infinipot_json(path, frame_size=[frame_size, frame_size], fps=2.0, builder=name, seed=TINY_SEED)


def _build_qwen2_vl(path: Path) -> None:
    """Qwen2-VL: 2 text layers, vision depth 2, 56 px frames -> 2x2 = 4 tokens per temporal frame."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = build_tokenizer()
    special = _qwen_special_ids(tokenizer)
    text = _text_config(len(tokenizer), special)
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=text["hidden_size"], num_heads=2, mlp_ratio=2),
        **_vision_token_ids(special),
    )
    torch.manual_seed(TINY_SEED)
    model = Qwen2VLForConditionalGeneration(config).eval()
    _save_qwen(path, model, tokenizer, special, frame_size=56, name="tiny-qwen2-vl")


def _build_qwen2_5_vl(path: Path) -> None:
    """Qwen2.5-VL: window-attention vision tower (depth 2, one full-attention block), 84 px -> 3x3 tokens."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer()
    special = _qwen_special_ids(tokenizer)
    text = _text_config(len(tokenizer), special)
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=text["hidden_size"],
            fullatt_block_indexes=[1],
            window_size=56,
            tokens_per_second=2,
        ),
        **_vision_token_ids(special),
    )
    torch.manual_seed(TINY_SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    _save_qwen(path, model, tokenizer, special, frame_size=84, name="tiny-qwen2.5-vl")


def _build_qwen3_vl(path: Path) -> None:
    """Qwen3-VL: 2 text layers (head dim 16, interleaved M-RoPE), vision depth 2 with DeepStack features after
    both vision layers, 16-px patches, 64-px frames -> 2x2 = 4 tokens per temporal patch."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = build_tokenizer()
    special = _qwen_special_ids(tokenizer)
    text = _text_config(len(tokenizer), special)
    text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 5e5, "mrope_section": [2, 3, 3],
                                              "mrope_interleaved": True})
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
            patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
            deepstack_visual_indexes=[0, 1],
        ),
        **_vision_token_ids(special),
    )
    torch.manual_seed(TINY_SEED)
    model = Qwen3VLForConditionalGeneration(config).eval()
    _save_qwen(path, model, tokenizer, special, frame_size=64, name="tiny-qwen3-vl")


register_tiny_builder("tiny-qwen2-vl", _build_qwen2_vl)
register_tiny_builder("tiny-qwen2.5-vl", _build_qwen2_5_vl)
register_tiny_builder("tiny-qwen3-vl", _build_qwen3_vl)


def build_tiny_checkpoint(name: str, path: str | Path) -> Path:
    """Write the tiny checkpoint `name` into folder `path` (created) and return the path.

    Deterministic: the same name always gives the same weights (fixed seed, CPU float32 init).
    """
    if name not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(TINY_BUILDERS)}")
    target = Path(path)
    TINY_BUILDERS[name](target)
    return target
