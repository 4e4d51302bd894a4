"""The contract every model adapter fulfils, so the streaming session never sees architecture details.

Why an adapter layer: each video VLM has its own frame preprocessing, vision tower, special tokens and
position scheme (Qwen2-VL's 3-D M-RoPE vs. plain 1-D RoPE). The session only needs: frames in, visual
embeddings + their positions out; text in, embeddings + positions out; and one forward over embeddings
with an explicit cache. Keeping the position rule here (one place per architecture) lets it be swapped.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from infinipot.rope_shift import RotaryConfig


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"float32" / "bfloat16" / "float16" (the CLI/parameter spelling) or a torch dtype -> torch dtype.

    Shared by every adapter's `from_pretrained`, so all accept the same spellings; ValueError otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass(frozen=True)
class KVGeometry:
    """Shape of the language model's KV cache: what a token costs in memory."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    position_rows: int = 1  # rows of rotary position ids per token: 3 for M-RoPE, 1 for 1-D RoPE

    @property
    def bytes_per_token(self) -> int:
        """Bytes of keys + values one token occupies across all layers and KV heads (no metadata)."""
        element = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element

    @property
    def slot_bytes(self) -> int:
        """Bytes one token costs in the session's store: keys, values and per-slot metadata (what budgets
        in bytes divide by; see `infinipot.kv_store.slot_bytes`)."""
        from infinipot.kv_store import slot_bytes

        return slot_bytes(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype, self.position_rows)


@dataclass
class VisualChunk:
    """Vision tokens of `num_frames` consecutive temporal frames, ready to be prefilled.

    A "temporal frame" is what the model turns into one grid of tokens: two video frames for Qwen2-VL
    (temporal patch size 2), one frame elsewhere. Tokens are ordered frame by frame, row-major in space.
    """

    embeds: torch.Tensor  # (n_tokens, hidden) in the model's dtype/device
    num_frames: int  # temporal frames in this chunk
    frame_grid: tuple[int, int]  # (rows, cols) of tokens per temporal frame after merging
    frame_offset: torch.Tensor  # (n_tokens,) int64: 0..num_frames-1, which temporal frame
    patch_index: torch.Tensor  # (n_tokens,) int64: 0..rows*cols-1, spatial position in the frame

    @property
    def num_tokens(self) -> int:
        return int(self.embeds.shape[0])


class VLMAdapter(ABC):
    """One loaded vision-language model plus everything architecture-specific about streaming into it.

    Adapters do not choose the autograd mode: the session runs them under `torch.no_grad()`, the training
    script (infinipot_train/train.py) with gradients, through the very same methods."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype

    #: raw video frames per temporal frame (Qwen2-VL: 2; 1-D RoPE adapters: 1)
    frames_per_step: int
    #: (rows, cols) of tokens per temporal frame
    frame_grid: tuple[int, int]
    #: model id or local path it was loaded from (recorded in saved sessions)
    name: str = ""
    #: config `model_type` of the checkpoint (e.g. "qwen2_vl"); saved sessions refuse another one
    model_type: str = ""

    @property
    def tokens_per_frame(self) -> int:
        return self.frame_grid[0] * self.frame_grid[1]

    @property
    @abstractmethod
    def geometry(self) -> KVGeometry:
        """KV cache geometry of the language model."""

    @property
    @abstractmethod
    def eos_token_ids(self) -> list[int]:
        """Token ids that end an answer."""

    @abstractmethod
    def prefix_token_ids(self) -> list[int]:
        """Text before the stream's first visual token (system prompt, user turn, vision start). Never evicted."""

    @abstractmethod
    def question_token_ids(self, question: str) -> list[int]:
        """Text appended after the visual stream to ask `question` and open the assistant's answer."""

    @abstractmethod
    def encode_frames(self, frames: Sequence[np.ndarray]) -> VisualChunk:
        """Turn RGB uint8 frames (H, W, 3), len a multiple of frames_per_step, into vision tokens."""

    @abstractmethod
    def text_embeds(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(n,) int64 token ids -> (n, hidden) input embeddings."""

    @abstractmethod
    def text_positions(self, start: int, num_tokens: int) -> tuple[torch.Tensor, int]:
        """Position ids for `num_tokens` text tokens from logical position `start`; returns (ids, next start)."""

    @abstractmethod
    def visual_positions(self, start: int, chunk: VisualChunk) -> tuple[torch.Tensor, int]:
        """Position ids for a visual chunk placed at logical position `start`; returns (ids, next start)."""

    @abstractmethod
    def forward(
        self, embeds: torch.Tensor, position_ids: torch.Tensor, cache: object, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """Run the language model over (1, n, hidden) embeddings with explicit positions, writing K/V into
        `cache` (a transformers Cache); return logits (1, n, vocab), or only the last `logits_to_keep`
        rows when it is > 0 (prefill needs none, a question only the last: the lm_head is costly)."""

    # ------------------------------------------------------------------ re-anchoring (bounded positions)
    # The layout-specific half of `infinipot.reanchor`: where a frame's anchor is and which position rows move
    # with it. Each adapter implements these next to its position rule.

    @property
    def max_position_embeddings(self) -> int:
        """The language model's trained position range (its config's `max_position_embeddings`)."""
        raise NotImplementedError(f"{type(self).__name__} does not report max_position_embeddings")

    def rotary_config(self) -> "RotaryConfig":
        """The language model's rotary settings for `infinipot.rope_shift.rotate_keys`."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    @property
    def position_frame_stride(self) -> int:
        """Position distance between the anchors of two consecutive temporal frames when none is evicted."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    def position_frame_anchor(self, positions: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        """(..., n) anchor of each visual token's frame, from its ids (..., rows, n) and patch index (..., n):
        the same value for every token of a frame, increasing with the frame's place in the stream."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    def position_shift(
        self, positions: torch.Tensor, patch_index: torch.Tensor, frame_shift: torch.Tensor
    ) -> torch.Tensor:
        """(..., rows, n) position deltas of visual tokens whose frame anchor moves by `frame_shift` (..., n)
        (0 = the token stays); `positions` (..., rows, n) are their current ids."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-anchor cached keys")

    def decode(self, token_ids: Sequence[int]) -> str:
        """Answer text for generated ids (special tokens dropped)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    def fingerprint(self) -> dict[str, object]:
        """What a saved session must match to be resumed on this adapter: architecture and KV geometry.

        Keys cached after RoPE are only meaningful for the same model type, frame grid and geometry.
        """
        geometry = self.geometry
        return {
            "model_type": self.model_type,
            "num_layers": geometry.num_layers,
            "num_kv_heads": geometry.num_kv_heads,
            "head_dim": geometry.head_dim,
            "dtype": str(geometry.dtype).replace("torch.", ""),
            "frame_grid": list(self.frame_grid),
            "frames_per_step": self.frames_per_step,
        }
