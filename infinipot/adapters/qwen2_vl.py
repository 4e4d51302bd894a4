"""Adapter for Qwen2-VL and Qwen2.5-VL (`Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`).

Why one class for both: they share the chat template, the video patch layout, the patch merger output
(one token per 2x2 patches) and the 3-row M-RoPE language model; they differ only in the vision tower
(window attention, which transformers hides behind `model.model.visual`) and in the temporal position step
(Qwen2.5-VL aligns temporal ids to seconds). Streaming needs three things the stock `generate` does not
give: encoding one temporal frame at a time (block prefill), explicit positions that keep growing after
tokens are evicted, and a forward over embeddings into our own fixed-size cache.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import FrameError
from ..rope_shift import RotaryConfig, rotary_config_from
from .base import KVGeometry, VisualChunk, VLMAdapter, resolve_dtype
from .preprocessing import normalize_frame_size, preprocess_qwen2_vl_video

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "DEFAULT_SYSTEM_PROMPT",
    "NOMINAL_FPS",
    "INFINIPOT_CONFIG_NAME",
    "MRopePositionRule",
    "VideoPositionRule",
    "POSITION_LAYOUTS",
    "Qwen2VLAdapter",
    "resolve_dtype",
]

#: Frame side (pixels) when neither infinipot.json nor preprocessor_config.json says otherwise:
#: 224 px -> 16x16 patches -> 8x8 = 64 tokens per temporal frame, a common streaming setting.
DEFAULT_FRAME_SIZE = 224
#: Frames per second assumed for Qwen2.5-VL's time-aligned temporal ids when the checkpoint does not say
#: (Qwen's own video pipeline samples at 2 fps, so one temporal patch of 2 frames spans 1 second).
NOMINAL_FPS = 2.0
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
#: Our own small settings file next to a checkpoint (written by the tiny-model builder).
INFINIPOT_CONFIG_NAME = "infinipot.json"
#: `position_layout` of infinipot.json. "video" (default): the family's own layout, the whole stream is ONE
#: video (`VideoPositionRule`). "per_chunk": the engine's pre-issue-15 layout, every temporal frame its own
#: vision group with its own base (`MRopePositionRule.visual`); only the built-in trained model
#: (models/infinipot-tiny-qwen2vl) records it, because it was trained that way.
POSITION_LAYOUTS = ("video", "per_chunk")

@dataclass(frozen=True)
class MRopePositionRule:
    """THE position rule of the streaming engine for 3-row M-RoPE (temporal, height, width).

    Why a rule of our own: keys are cached after RoPE and keep the positions they were written with; after
    eviction the physical cache length no longer tells where the next token goes, so a logical counter
    (`start`) continues the stream. Rule, applied per prefill call:

    * text of n tokens at `start`: ids start..start+n-1 on all three rows; next start = start + n.
    * a visual chunk of T temporal frames with a rows x cols grid at `start`: token (t, r, c) gets
      temporal id start + floor(t * temporal_step), height id start + r, width id start + c.
      Next start = max(largest id + 1, start + round(T * temporal_step)).

    `temporal_step` is 1 for Qwen2-VL (then the next start is simply largest id + 1) and
    tokens_per_second * seconds_per_grid for Qwen2.5-VL (its time-aligned temporal ids); the second term of
    the max keeps consecutive chunks that far apart in temporal id, so time stays aligned across chunks.
    Unlike transformers 5.x `get_rope_index`, text after a video never reuses ids below the video's
    largest id. This is the "per_chunk" layout (see `POSITION_LAYOUTS`): real checkpoints stream with
    `VideoPositionRule` instead; text positions always come from here.
    """

    temporal_step: float = 1.0

    def text(self, start: int, num_tokens: int, device: torch.device | None = None) -> tuple[torch.Tensor, int]:
        ids = torch.arange(start, start + num_tokens, dtype=torch.long, device=device)
        return ids.unsqueeze(0).expand(3, -1).contiguous(), start + num_tokens

    def visual(
        self, start: int, num_frames: int, rows: int, cols: int, device: torch.device | None = None
    ) -> tuple[torch.Tensor, int]:
        t_ids = start + torch.floor(torch.arange(num_frames, dtype=torch.float64) * self.temporal_step).long()
        h_ids = start + torch.arange(rows, dtype=torch.long)
        w_ids = start + torch.arange(cols, dtype=torch.long)
        grid_t, grid_h, grid_w = torch.meshgrid(t_ids, h_ids, w_ids, indexing="ij")
        ids = torch.stack([grid_t.reshape(-1), grid_h.reshape(-1), grid_w.reshape(-1)]).to(device)
        next_start = max(int(ids.max()) + 1, start + int(round(num_frames * self.temporal_step)))
        return ids, next_start

    # Re-anchoring (infinipot/reanchor.py) under THIS layout: each frame has its own base (`start`), so a
    # frame's anchor is its temporal id and all three rows of a frame (and of its frame text) move together.

    def frame_stride(self, rows: int, cols: int) -> int:
        """Anchor distance of two consecutive frames: the next start after one frame."""
        return self.visual(0, 1, rows, cols)[1]

    def frame_anchor(self, positions: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        """A frame's anchor: its temporal id (row 0), the same for all its tokens."""
        return positions[..., 0, :]

    def shift(
        self, positions: torch.Tensor, patch_index: torch.Tensor, frame_shift: torch.Tensor, base_shift: int = 0
    ) -> torch.Tensor:
        """Per-frame base: every row of a frame moves by the frame's shift (there is no stream-wide base)."""
        return frame_shift.unsqueeze(-2).expand(positions.shape)


@dataclass(frozen=True)
class VideoPositionRule:
    """The family's own video layout, kept while streaming: the whole stream is ONE video.

    Qwen2-VL / Qwen2.5-VL lay a video out as one vision group (transformers 5.24
    `models/qwen2_vl/modeling_qwen2_vl.py` and `models/qwen2_5_vl/modeling_qwen2_5_vl.py`,
    `get_vision_position_ids` called from `get_rope_index`): with `base` = the position after the text
    before the video, token (k, r, c) of temporal frame k gets

        t = base + floor(k * interval),  h = base + r,  w = base + c,

    so every frame shares the h/w base and only t advances. Qwen2-VL: interval 1. Qwen2.5-VL: interval =
    `tokens_per_second * second_per_grid_ts` (the processor derives seconds per temporal patch from the
    sampled fps: `processing_qwen2_5_vl.py`, `second_per_grid_ts = temporal_patch_size / fps`), i.e.
    t = base + floor(tokens_per_second * seconds since the video's first frame). A stream's frames are
    not necessarily regular, so the streaming rule takes that time from the header stamps: frame k's
    elapsed time is the stamp of its first raw frame minus the stream's first stamp (for regular stamps
    this is exactly k * second_per_grid_ts). Without stamps it falls back to `nominal_seconds_per_frame`.

    Text after the video: Qwen's released rule (qwen-vl-utils / transformers 4.x `get_rope_index`) puts it
    at the largest vision id + 1. Installed transformers 5.x advances only by max(h, w) of the merged grid,
    so text after a long video would reuse temporal ids of its later frames; we follow the released rule
    (test/engine/test_conformance.py pins the difference).
    """

    #: None: Qwen2-VL (t advances one id per temporal frame); else Qwen2.5-VL's tokens per second
    tokens_per_second: float | None = None
    #: seconds per temporal frame when no stamps are known (Qwen2.5-VL only)
    nominal_seconds_per_frame: float = 1.0

    def temporal_offsets(
        self, first_frame: int, num_frames: int, frame_times: Sequence[float] | None
    ) -> torch.Tensor:
        """(num_frames,) int64 t offsets from the video base for temporal frames first_frame.. ."""
        index = torch.arange(first_frame, first_frame + num_frames, dtype=torch.float64)
        if self.tokens_per_second is None:
            return index.long()
        if frame_times is None:
            seconds = index * self.nominal_seconds_per_frame
        else:
            if len(frame_times) != num_frames:
                raise ValueError(f"{len(frame_times)} frame times for {num_frames} temporal frames")
            seconds = torch.tensor([float(t) for t in frame_times], dtype=torch.float64)
        # 1e-6 s of slack so a stamp written as 0.1 * i lands on the same id as the processor's k * interval
        return torch.floor(seconds * float(self.tokens_per_second) + 1e-6).long()

    # Re-anchoring (infinipot/reanchor.py) under the video layout: a frame's anchor is its temporal id (row 0),
    # and only t moves by the frame's shift (closing gaps left by evicted frames); h and w of every frame move
    # together by the video base's shift, so all held frames keep sharing one h/w base: the re-anchored memory
    # is laid out as one video that begins with the oldest held frame.

    def frame_stride(self) -> int:
        """Largest temporal-id step between consecutive kept frames that re-anchoring leaves open: one step
        (Qwen2-VL), or ceil(tokens_per_second x the nominal seconds per temporal frame) (Qwen2.5-VL)."""
        if self.tokens_per_second is None:
            return 1
        return max(1, math.ceil(self.tokens_per_second * self.nominal_seconds_per_frame - 1e-9))

    def shift(
        self, positions: torch.Tensor, patch_index: torch.Tensor, frame_shift: torch.Tensor, base_shift: int = 0
    ) -> torch.Tensor:
        """t by the frame's shift, h and w by the video base's shift."""
        delta = torch.full_like(positions, int(base_shift))
        delta[..., 0, :] = frame_shift
        return delta

    def visual(
        self,
        start: int,
        base: int,
        offsets: torch.Tensor,
        rows: int,
        cols: int,
        device: torch.device | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Ids of frames with t offsets `offsets` of the video based at `base`; next start = max(start,
        largest id + 1) (the released rule's text position, never below the stream's counter)."""
        t_ids = base + offsets.to(torch.long)
        h_ids = base + torch.arange(rows, dtype=torch.long)
        w_ids = base + torch.arange(cols, dtype=torch.long)
        grid_t, grid_h, grid_w = torch.meshgrid(t_ids, h_ids, w_ids, indexing="ij")
        ids = torch.stack([grid_t.reshape(-1), grid_h.reshape(-1), grid_w.reshape(-1)]).to(device)
        return ids, max(int(start), int(ids.max()) + 1)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _default_frame_size(checkpoint: Path | None, unit: int = 28) -> tuple[int, int]:
    """infinipot.json's `frame_size`, else 224 clamped into preprocessor_config's [min_pixels, max_pixels],
    in multiples of `unit` = patch size x merge size (28 for Qwen2-VL / 2.5-VL, 32 for Qwen3-VL)."""
    if checkpoint is not None:
        ours = _read_json(checkpoint / INFINIPOT_CONFIG_NAME)
        if "frame_size" in ours:
            return normalize_frame_size(ours["frame_size"], unit)
        pre = _read_json(checkpoint / "preprocessor_config.json")
        size = pre.get("size") or {}
        low = pre.get("min_pixels", size.get("shortest_edge"))
        high = pre.get("max_pixels", size.get("longest_edge"))
        side = DEFAULT_FRAME_SIZE
        if low and side * side < low:
            side = unit * math.ceil(math.sqrt(low) / unit)
        if high and side * side > high:
            side = max(unit, unit * math.floor(math.sqrt(high) / unit))
        return (side, side)
    return (DEFAULT_FRAME_SIZE, DEFAULT_FRAME_SIZE)


class Qwen2VLAdapter(VLMAdapter):
    """Streams video into a Qwen2-VL or Qwen2.5-VL checkpoint through explicit embeddings and positions.

    Chat format (Qwen's template, video placed in the user turn):
    prefix   = `<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n<|vision_start|>`
    question = `<|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n`
    """

    SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        *,
        name: str = "",
        frame_size: int | Sequence[int] | None = None,
        fps: float | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        position_layout: str = "video",
    ) -> None:
        config = model.config
        if config.model_type not in self.SUPPORTED_MODEL_TYPES:
            raise ValueError(f"Qwen2VLAdapter supports {self.SUPPORTED_MODEL_TYPES}, got {config.model_type!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.model_type = config.model_type
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.system_prompt = system_prompt

        vision = config.vision_config
        self.patch_size = int(vision.patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        self.frames_per_step = int(vision.temporal_patch_size)
        self.frame_size = normalize_frame_size(
            frame_size if frame_size is not None else DEFAULT_FRAME_SIZE, self.patch_size * self.merge_size
        )
        unit = self.patch_size * self.merge_size
        self.frame_grid = (self.frame_size[0] // unit, self.frame_size[1] // unit)
        self.fps = float(fps) if fps is not None else NOMINAL_FPS
        if position_layout not in POSITION_LAYOUTS:
            raise ValueError(f"position_layout must be one of {POSITION_LAYOUTS}, got {position_layout!r}")
        self.position_layout = position_layout
        seconds_per_grid = self.frames_per_step / self.fps
        if self.model_type == "qwen2_5_vl":
            step = float(vision.tokens_per_second) * seconds_per_grid
            self.video_rule = VideoPositionRule(float(vision.tokens_per_second), seconds_per_grid)
        else:
            step = 1.0
            self.video_rule = VideoPositionRule(None, seconds_per_grid)
        self.position_rule = MRopePositionRule(temporal_step=step)

        self._language_model = model.model.language_model
        self._visual = model.model.visual
        self._lm_head = model.lm_head
        text = config.text_config
        self._geometry = KVGeometry(
            num_layers=int(text.num_hidden_layers),
            num_kv_heads=int(text.num_key_value_heads),
            head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads),
            dtype=self.dtype,
            position_rows=3,
        )
        self._eos = self._collect_eos_ids()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        trust_remote_code: bool = False,
        *,
        frame_size: int | Sequence[int] | None = None,
        attn_implementation: str = "sdpa",
    ) -> "Qwen2VLAdapter":
        """Load model + tokenizer through transformers' `from_pretrained` (local path or hub id)."""
        from transformers import AutoConfig, AutoTokenizer

        config = AutoConfig.from_pretrained(model_id_or_path, trust_remote_code=trust_remote_code)
        model_class = cls.model_class(config.model_type)
        if model_class is None:
            raise ValueError(f"{cls.__name__} cannot load model_type {config.model_type!r}")
        model = model_class.from_pretrained(
            model_id_or_path,
            dtype=resolve_dtype(dtype),
            trust_remote_code=trust_remote_code,
            attn_implementation=attn_implementation,
        ).to(torch.device(device))
        tokenizer = AutoTokenizer.from_pretrained(model_id_or_path, trust_remote_code=trust_remote_code)
        local = Path(model_id_or_path)
        checkpoint = local if local.is_dir() else None
        settings = _read_json(local / INFINIPOT_CONFIG_NAME) if checkpoint else {}
        return cls(
            model,
            tokenizer,
            name=str(model_id_or_path),
            frame_size=frame_size if frame_size is not None else _default_frame_size(
                checkpoint, int(config.vision_config.patch_size) * int(config.vision_config.spatial_merge_size)
            ),
            fps=settings.get("fps"),
            position_layout=str(settings.get("position_layout", "video")),
        )

    @classmethod
    def model_class(cls, model_type: str) -> type | None:
        """The transformers class of a checkpoint's `model_type` (None: not this adapter's)."""
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

        return {"qwen2_vl": Qwen2VLForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}.get(
            model_type
        )

    # ------------------------------------------------------------------ contract
    @property
    def geometry(self) -> KVGeometry:
        return self._geometry

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self._eos)

    def _collect_eos_ids(self) -> list[int]:
        ids: list[int] = []
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        generation = getattr(self.model, "generation_config", None)
        extra = getattr(generation, "eos_token_id", None) if generation is not None else None
        for token_id in [extra] if isinstance(extra, int) else list(extra or []):
            if token_id not in ids:
                ids.append(int(token_id))
        return ids

    def _encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prefix_token_ids(self) -> list[int]:
        return self._encode_text(
            f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        )

    def question_token_ids(self, question: str) -> list[int]:
        return self._encode_text(f"<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n")

    def encode_frames(self, frames: Sequence[np.ndarray]) -> VisualChunk:
        if len(frames) == 0 or len(frames) % self.frames_per_step:
            raise FrameError(f"need a positive multiple of {self.frames_per_step} frames, got {len(frames)}")
        vision, grid_thw = self._run_vision(frames)
        embeds = vision.pooler_output.to(self.dtype)
        features = self._token_features(vision)
        num_frames = grid_thw[0]
        per_frame = self.tokens_per_frame
        if embeds.shape[0] != num_frames * per_frame:
            raise RuntimeError(f"vision tower returned {embeds.shape[0]} tokens, expected {num_frames * per_frame}")
        return VisualChunk(
            embeds=embeds,
            num_frames=num_frames,
            frame_grid=self.frame_grid,
            frame_offset=torch.arange(num_frames, device=self.device).repeat_interleave(per_frame),
            patch_index=torch.arange(per_frame, device=self.device).repeat(num_frames),
            token_features=features,
        )

    def _token_features(self, vision: object) -> torch.Tensor | None:
        """Extra per-token features of the vision tower's output the language model needs (none here)."""
        return None

    #: per-channel pixel statistics of the family's processor (None: CLIP's, Qwen2-VL / Qwen2.5-VL)
    PIXEL_MEAN: tuple[float, float, float] | None = None
    PIXEL_STD: tuple[float, float, float] | None = None

    def _run_vision(self, frames: Sequence[np.ndarray]) -> tuple[object, tuple[int, int, int]]:
        """Preprocess (our numpy version of the family's video processor) and run the vision tower."""
        rows, grid_thw = preprocess_qwen2_vl_video(
            frames, self.frame_size, self.patch_size, self.frames_per_step, self.merge_size,
            mean=self.PIXEL_MEAN, std=self.PIXEL_STD,
        )
        pixels = torch.from_numpy(rows).to(device=self.device, dtype=self._visual.dtype)
        grid = torch.tensor([grid_thw], dtype=torch.long, device=self.device)
        return self._visual(pixels, grid_thw=grid), grid_thw

    def text_embeds(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(token_ids.to(self.device))

    def text_positions(self, start: int, num_tokens: int) -> tuple[torch.Tensor, int]:
        return self.position_rule.text(start, num_tokens, self.device)

    def visual_positions(self, start: int, chunk: VisualChunk) -> tuple[torch.Tensor, int]:
        """The stream as one video (`VideoPositionRule`) when the session placed the chunk in it
        (`chunk.stream_start`) and the layout is "video"; otherwise the chunk is its own vision group at
        `start` (`MRopePositionRule`, the "per_chunk" layout the built-in model was trained with)."""
        rows, cols = chunk.frame_grid
        if self.position_layout == "per_chunk" or chunk.stream_start is None:
            return self.position_rule.visual(start, chunk.num_frames, rows, cols, self.device)
        offsets = self.video_rule.temporal_offsets(chunk.first_frame, chunk.num_frames, chunk.frame_times)
        offsets = offsets + int(chunk.stream_t_shift)  # what re-anchoring took off the stream's t ids
        return self.video_rule.visual(start, chunk.stream_start, offsets, rows, cols, self.device)

    @property
    def max_position_embeddings(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def rotary_config(self) -> RotaryConfig:
        return rotary_config_from(self._language_model.rotary_emb)

    @property
    def _streams_as_video(self) -> bool:
        return self.position_layout != "per_chunk"

    @property
    def position_frame_stride(self) -> int:
        if self._streams_as_video:
            return self.video_rule.frame_stride()
        return self.position_rule.frame_stride(*self.frame_grid) + self.max_frame_text_tokens

    def position_frame_anchor(self, positions: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        return self.position_rule.frame_anchor(positions, patch_index)  # the t row in both layouts

    def position_shift(
        self, positions: torch.Tensor, patch_index: torch.Tensor, frame_shift: torch.Tensor, base_shift: int = 0
    ) -> torch.Tensor:
        rule = self.video_rule if self._streams_as_video else self.position_rule
        return rule.shift(positions, patch_index, frame_shift, base_shift)

    def forward(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        cache: object,
        logits_to_keep: int = 0,
        **model_kwargs: object,
    ) -> torch.Tensor:
        """`model_kwargs` go to the language model as they are (Qwen3-VL: a block's DeepStack inputs)."""
        if embeds.dim() == 2:
            embeds = embeds.unsqueeze(0)
        if position_ids.dim() == 2:  # (3, n) -> (3, batch=1, n)
            position_ids = position_ids.unsqueeze(1)
        out = self._language_model(
            inputs_embeds=embeds,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
            **model_kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        return self._lm_head(hidden)
