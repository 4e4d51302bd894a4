"""Adapter for Qwen3-VL (`Qwen3VLForConditionalGeneration`, model type `qwen3_vl`), e.g. Qwen3-VL-2B-Instruct.

What differs from Qwen2-VL / Qwen2.5-VL, each point checked against transformers 5.24
(`models/qwen3_vl/processing_qwen3_vl.py`, `models/qwen3_vl/modeling_qwen3_vl.py`):

* **Per-frame time text.** The processor (`Qwen3VLProcessor.replace_video_token`) writes every temporal patch
  (2 frames) as `<{t:.1f} seconds><|vision_start|>` + its `<|video_pad|>` tokens + `<|vision_end|>`, with t the
  mean time of the patch's two frames (`_calculate_timestamps`). Streaming: t is the mean of the two raw
  frames' header stamps minus the stream's first stamp. The timestamp and the two vision markers are frame
  text: they belong to the patch and leave the cache with its last visual token.
* **One vision group per patch.** `get_rope_index` splits `video_grid_thw` into per-patch grids (t = 1), so
  each patch is its own group at the position after its text: t = h-base = w-base = start, h = start + r,
  w = start + c, and the text after it continues at start + max(h, w). With t = 1 this equals Qwen's released
  rule (largest vision id + 1), so no departure from transformers here. The rotary embedding interleaves the
  three rows over the frequencies (`Qwen3VLTextRotaryEmbedding`, `apply_interleaved_mrope`); that happens in
  the model, positions are the same 3 rows.
* **DeepStack.** The vision tower returns, besides the merged tokens, features of its layers
  `deepstack_visual_indexes` (each through its own merger); `Qwen3VLTextModel.forward` adds feature i to the
  hidden states at the visual positions after decoder layer i (`_deepstack_process`). Streaming block by
  block reproduces it exactly: each block's forward gets `visual_pos_masks` over the block's tokens and the
  block's slice of every feature (attention is causal, so later blocks never change what earlier ones did).
* **Pixels.** 16-px patches, 2x2 merge, temporal patch 2 (frame sides multiples of 32), normalised with
  mean = std = 0.5 (`Qwen3VLVideoProcessor`: IMAGENET_STANDARD_MEAN/STD), the same patch layout as Qwen2-VL.
* **Prompt.** Qwen3-VL's chat template has no default system prompt: prefix `<|im_start|>user\\n`, question
  `{question}<|im_end|>\\n<|im_start|>assistant\\n` (the video markers are frame text here).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .base import StreamBlock, VisualChunk
from .loading import register_adapter
from .qwen2_vl import Qwen2VLAdapter
from ..rope_shift import RotaryConfig

__all__ = ["Qwen3VLAdapter", "MODEL_TYPES", "TINY_NAME", "frame_time_text"]

MODEL_TYPES: tuple[str, ...] = ("qwen3_vl",)
#: the tiny random checkpoint (built by infinipot.tiny_models; conftest's ADAPTER_NAMES picks it up, so every
#: session test covers Qwen3-VL)
TINY_NAME = "tiny-qwen3-vl"
#: the longest time the frame-text bound is computed for (~115 days)
_LONGEST_SECONDS = 9_999_999.9


def frame_time_text(seconds: float) -> str:
    """`<t seconds>` as the processor writes it (one decimal)."""
    return f"<{max(0.0, float(seconds)):.1f} seconds>"


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Streams video into a Qwen3-VL checkpoint (see the module docstring)."""

    SUPPORTED_MODEL_TYPES = MODEL_TYPES
    PIXEL_MEAN = (0.5, 0.5, 0.5)
    PIXEL_STD = (0.5, 0.5, 0.5)

    def __init__(self, model: torch.nn.Module, tokenizer: object, **kwargs) -> None:
        kwargs.setdefault("system_prompt", "")
        kwargs["position_layout"] = "per_chunk"  # every patch its own vision group: the family's own layout
        super().__init__(model, tokenizer, **kwargs)
        before, after = self.frame_text_ids(0, _LONGEST_SECONDS)
        self.max_frame_text_tokens = len(before) + len(after)

    @classmethod
    def model_class(cls, model_type: str) -> type | None:
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration if model_type in MODEL_TYPES else None

    # ------------------------------------------------------------------ text
    def prefix_token_ids(self) -> list[int]:
        system = f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n" if self.system_prompt else ""
        return self._encode_text(system + "<|im_start|>user\n")

    def question_token_ids(self, question: str) -> list[int]:
        return self._encode_text(f"{question}<|im_end|>\n<|im_start|>assistant\n")

    def frame_text_ids(self, frame_index: int, seconds: float) -> tuple[list[int], list[int]]:
        """`<t seconds><|vision_start|>` before a patch's tokens, `<|vision_end|>` after them."""
        return self._encode_text(frame_time_text(seconds) + "<|vision_start|>"), self._encode_text("<|vision_end|>")

    def rotary_config(self) -> RotaryConfig:
        """Interleaved M-RoPE: the same frequencies and sections, each frequency on its interleaved row."""
        return replace(super().rotary_config(), interleaved=True)

    # ------------------------------------------------------------------ vision
    def _token_features(self, vision: object) -> torch.Tensor:
        """DeepStack: (layers, n_tokens, hidden), one row per `deepstack_visual_indexes` layer."""
        return torch.stack([feature.to(self.dtype) for feature in vision.deepstack_features])

    def visual_positions(self, start: int, chunk: VisualChunk) -> tuple[torch.Tensor, int]:
        """Each temporal patch is its own vision group at the stream's counter (see the module docstring)."""
        rows, cols = chunk.frame_grid
        ids, next_start = [], start
        for _ in range(chunk.num_frames):
            group, next_start = self.position_rule.visual(next_start, 1, rows, cols, self.device)
            ids.append(group)
        return torch.cat(ids, dim=1), next_start

    def stream_block(self, start: int, chunk: VisualChunk) -> StreamBlock:
        """The patch's text and tokens (base rule) plus its DeepStack features for `forward`."""
        block = super().stream_block(start, chunk)
        if chunk.token_features is not None:
            block.forward_kwargs = {
                # Qwen3VLTextModel.forward: add feature i at these positions after decoder layer i
                "visual_pos_masks": (block.patch_index >= 0).to(self.device).unsqueeze(0),
                "deepstack_visual_embeds": list(chunk.token_features.unbind(0)),
            }
        return block

def _register() -> None:
    register_adapter(MODEL_TYPES, Qwen3VLAdapter.from_pretrained)


_register()
