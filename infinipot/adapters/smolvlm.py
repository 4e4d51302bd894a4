"""Adapter for SmolVLM / SmolVLM2 (SigLIP vision tower + pixel-shuffle connector + Llama text model).

Why this adapter exists: SmolVLM2 is the smallest real video VLM with plain 1-D RoPE, the position scheme the
InfiniPot-V paper streams with (LLaVA-OneVision). It runs on a robot's CPU, and it exercises the engine on a
second position scheme next to Qwen2-VL's 3-D M-RoPE.

Choices (each one documented once, here):

* **Frames.** Each frame is one temporal frame (`frames_per_step = 1`). It is resized to a square of the
  vision tower's `image_size` with PIL (the official video processor also ends in a square resize to
  `max_image_size`, which equals `image_size` in the released checkpoints), rescaled and normalised with the
  checkpoint's `preprocessor_config.json` statistics (SmolVLM: mean = std = 0.5), channels-first. No image
  splitting into tiles: one global view per frame, as SmolVLM2 does for video. No torchvision is used.
* **Tokens per frame.** SigLIP yields (S/p)² patches; the connector's pixel shuffle folds each s×s block of
  patches into one token, so a frame is a `(S/p/s, S/p/s)` grid, row-major (checked against the shuffle's
  reshapes: the output is ordered by block row, then block column).
* **Prompt.** What SmolVLM2's processor writes for a video (transformers 5.24
  `models/smolvlm/processing_smolvlm.py`, `SmolVLMProcessor.replace_video_token` and `DEFAULT_CHAT_TEMPLATE`),
  streamed: `<|im_start|>User: ` + the video intro, then per frame `\nFrame from MM:SS:` +
  `<fake_token_around_image><global-img>` + the frame's image tokens + `<fake_token_around_image>`
  (`FRAME_TIMESTAMP_MESSAGE`, `_prompt_single_image`), then `\n\n` (`DEFAULT_MEDIA_OUTTRO`) + the question +
  `<end_of_utterance>\nAssistant:`. MM:SS is the frame's time since the stream's first frame, from the
  header stamps (the processor's `int(second // 60)`, `int(second % 60)`: minutes keep counting past 59).
  The wrapper and timestamp are frame text (`frame_text_ids`): they leave the cache with the frame's last
  visual token. **Decided for streaming:** the processor's intro names the frame count and the duration
  (`DEFAULT_VIDEO_INTRO`, "...series of {frame_count} frames from a {video_duration} [H:MM:SS] video."); a
  stream knows neither when the intro is prefilled (once, never evicted), and after compression the count
  would be wrong anyway, so the streaming intro says "...series of frames from a video." and the
  per-frame timestamps carry the time. The conformance suite runs the stock model on this intro.
* **Positions.** One rule for everything: each token, text or visual, takes the next integer of the stream's
  logical counter (`arange(start, start + n)`), shape `(1, n)`. This is what SmolVLM itself does (its text
  model gets sequential positions over the interleaved sequence); after eviction the counter keeps growing
  while the physical cache shrinks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from infinipot.adapters.base import KVGeometry, VisualChunk, VLMAdapter, resolve_dtype
from infinipot.adapters.loading import register_adapter
from infinipot.adapters.preprocessing import validate_frame
from infinipot.errors import FrameError
from infinipot.rope_shift import RotaryConfig, rotary_config_from
from infinipot.tiny_models import TINY_SEED, register_tiny_builder, write_infinipot_json

__all__ = [
    "SmolVLMAdapter",
    "MODEL_TYPES",
    "TINY_NAME",
    "build_tiny_checkpoint",
    "PREFIX_TEXT",
    "QUESTION_TEMPLATE",
    "FRAME_TEXT_BEFORE",
    "FRAME_TEXT_AFTER",
    "frame_timestamp",
    "SMOLVLM_SPECIAL_TOKENS",
]

#: config `model_type`s this adapter serves (SmolVLM2 checkpoints also report "smolvlm").
MODEL_TYPES: tuple[str, ...] = ("smolvlm",)
#: name of the tiny random checkpoint (loading.py exposes it as "builtin:tiny-smolvlm").
TINY_NAME = "tiny-smolvlm"

#: chat markers used by SmolVLM's tokenizer and chat template.
SMOLVLM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
)
END_OF_UTTERANCE = "<end_of_utterance>"
#: text before the first visual token; the video intro follows the official one minus the frame count.
PREFIX_TEXT = "<|im_start|>User: You are provided the following series of frames from a video.\n"
#: text after the visual stream (the processor's media outro "\n\n", then the question and the turn end).
QUESTION_TEMPLATE = "\n\n{question}<end_of_utterance>\nAssistant:"
#: frame text around each frame's image tokens (processing_smolvlm.py: FRAME_TIMESTAMP_MESSAGE + _prompt_single_image)
FRAME_TEXT_BEFORE = "\nFrame from {timestamp}:<fake_token_around_image><global-img>"
FRAME_TEXT_AFTER = "<fake_token_around_image>"
#: the longest timestamp the frame-text bound is computed for (99,999 minutes: a stream of 69 days)
_LONGEST_TIMESTAMP_S = 99_999 * 60.0


def frame_timestamp(seconds: float) -> str:
    """MM:SS of a frame `seconds` after the first one, as the processor writes it (minutes not wrapped)."""
    seconds = max(0.0, float(seconds))
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"

_DEFAULT_MEAN = (0.5, 0.5, 0.5)
_DEFAULT_STD = (0.5, 0.5, 0.5)
_DEFAULT_RESCALE = 1.0 / 255.0
def _load_preprocessor_stats(model_id_or_path: str) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Mean, std, rescale factor and PIL resample filter from the checkpoint's preprocessor config.

    Read as plain JSON so no processor class (several need torchvision here) has to be constructed. A
    checkpoint without the file gets SmolVLM's published defaults.
    """
    from transformers.utils import cached_file

    path = cached_file(model_id_or_path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    cfg: dict = {}
    if path is not None:
        cfg = json.loads(Path(path).read_text())
    mean = np.asarray(cfg.get("image_mean", _DEFAULT_MEAN), dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(cfg.get("image_std", _DEFAULT_STD), dtype=np.float32).reshape(3, 1, 1)
    rescale = float(cfg.get("rescale_factor", _DEFAULT_RESCALE)) if cfg.get("do_rescale", True) else 1.0
    if not cfg.get("do_normalize", True):
        mean, std = np.zeros_like(mean), np.ones_like(std)
    resample = int(cfg.get("resample", Image.Resampling.LANCZOS))
    return mean, std, rescale, resample


class SmolVLMAdapter(VLMAdapter):
    """A loaded SmolVLM/SmolVLM2 model plus its streaming rules (see the module docstring)."""

    frames_per_step = 1

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        *,
        image_mean: np.ndarray | Sequence[float] = _DEFAULT_MEAN,
        image_std: np.ndarray | Sequence[float] = _DEFAULT_STD,
        rescale_factor: float = _DEFAULT_RESCALE,
        resample: int = Image.Resampling.LANCZOS,
    ) -> None:
        config = model.config
        if getattr(config, "model_type", None) not in MODEL_TYPES:
            raise ValueError(f"SmolVLMAdapter needs model_type in {MODEL_TYPES}, got {config.model_type!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        first = next(model.parameters())
        self.device = first.device
        self.dtype = first.dtype
        vision = config.vision_config
        self.image_size = int(vision.image_size)
        patches = self.image_size // int(vision.patch_size)
        scale = int(config.scale_factor)
        if patches % scale:
            raise ValueError(f"{patches} patches per side are not divisible by scale_factor {scale}")
        self.frame_grid = (patches // scale, patches // scale)
        self._mean = np.asarray(image_mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(image_std, dtype=np.float32).reshape(3, 1, 1)
        self._rescale = float(rescale_factor)
        self._resample = int(resample)
        before, after = self.frame_text_ids(0, _LONGEST_TIMESTAMP_S)
        self.max_frame_text_tokens = len(before) + len(after)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        trust_remote_code: bool = False,
    ) -> "SmolVLMAdapter":
        """Load model, tokenizer and preprocessing statistics through transformers' `from_pretrained`."""
        from transformers import AutoConfig, AutoTokenizer, SmolVLMForConditionalGeneration

        source = str(model_id_or_path)
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        if config.model_type not in MODEL_TYPES:
            raise ValueError(f"{source}: model_type {config.model_type!r} is not one of {MODEL_TYPES}")
        model = SmolVLMForConditionalGeneration.from_pretrained(
            source, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
        ).to(torch.device(device))
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        mean, std, rescale, resample = _load_preprocessor_stats(source)
        return cls(model, tokenizer, image_mean=mean, image_std=std, rescale_factor=rescale, resample=resample)

    # ------------------------------------------------------------------ cache geometry / tokens
    @property
    def _text_config(self):
        return self.model.config.text_config

    @property
    def geometry(self) -> KVGeometry:
        cfg = self._text_config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        return KVGeometry(cfg.num_hidden_layers, int(kv_heads), int(head_dim), self.dtype)

    @property
    def eos_token_ids(self) -> list[int]:
        """The generation config's eos ids plus `<end_of_utterance>` (SmolVLM ends each turn with it)."""
        ids: list[int] = []
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if configured is None:
            configured = getattr(self._text_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.append(configured)
        elif configured:
            ids.extend(int(i) for i in configured)
        eou = self.tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
        if isinstance(eou, int) and eou != getattr(self.tokenizer, "unk_token_id", None):
            ids.append(eou)
        return list(dict.fromkeys(ids))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prefix_token_ids(self) -> list[int]:
        return self._encode(PREFIX_TEXT)

    def frame_text_ids(self, frame_index: int, seconds: float) -> tuple[list[int], list[int]]:
        """`\nFrame from MM:SS:<fake_token_around_image><global-img>` before the frame's image tokens and
        `<fake_token_around_image>` after them (see the module docstring)."""
        return self._encode(FRAME_TEXT_BEFORE.format(timestamp=frame_timestamp(seconds))), self._encode(FRAME_TEXT_AFTER)

    def question_token_ids(self, question: str) -> list[int]:
        """Template around `question`; validation is the session's job (it also asks with "" to size the
        template)."""
        return self._encode(QUESTION_TEMPLATE.format(question=question.strip()))

    # ------------------------------------------------------------------ vision
    def preprocess(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 frames -> pixel values (1, n, 3, S, S) in the model's dtype, the vision tower's input."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            raise FrameError("expected a sequence of frames, got a single (H, W, C) array; wrap it in a list")
        if len(frames) == 0:
            raise FrameError("no frames given")
        size = (self.image_size, self.image_size)
        planes = []
        for frame in frames:
            rgb = validate_frame(frame)
            resized = Image.fromarray(rgb).resize(size, resample=self._resample)
            chw = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) * self._rescale
            planes.append((chw - self._mean) / self._std)
        pixels = torch.from_numpy(np.stack(planes)).unsqueeze(0)
        return pixels.to(device=self.device, dtype=self.dtype)

    def encode_frames(self, frames: Sequence[np.ndarray]) -> VisualChunk:
        """Run the real vision tower + connector on the frames (one batch) -> (n * rows * cols, hidden)."""
        pixels = self.preprocess(frames)
        num_frames = int(pixels.shape[1])
        out = self.model.model.get_image_features(pixel_values=pixels, return_dict=True)
        pooled = out.pooler_output  # a list with one (n * tokens, hidden) tensor per batch row
        embeds = torch.cat(list(pooled)) if isinstance(pooled, (list, tuple)) else pooled
        embeds = embeds.reshape(-1, embeds.shape[-1])
        per_frame = self.tokens_per_frame
        if embeds.shape[0] != num_frames * per_frame:
            # get_image_features drops images whose pixel values are all exactly 0 (its padding marker).
            raise FrameError(
                f"vision tower returned {embeds.shape[0]} tokens for {num_frames} frames of {per_frame} tokens; "
                "a frame whose normalised pixels are all zero is treated as padding by SmolVLM"
            )
        frame_offset = torch.arange(num_frames, device=self.device).repeat_interleave(per_frame)
        patch_index = torch.arange(per_frame, device=self.device).repeat(num_frames)
        return VisualChunk(
            embeds=embeds,
            num_frames=num_frames,
            frame_grid=self.frame_grid,
            frame_offset=frame_offset,
            patch_index=patch_index,
        )

    # ------------------------------------------------------------------ text / positions / forward
    def text_embeds(self, token_ids: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.device).reshape(-1)
        return self.model.get_input_embeddings()(ids)

    def _arange(self, start: int, num_tokens: int) -> tuple[torch.Tensor, int]:
        if start < 0 or num_tokens < 0:
            raise ValueError(f"positions need start >= 0 and num_tokens >= 0, got {start}, {num_tokens}")
        ids = torch.arange(start, start + num_tokens, dtype=torch.long, device=self.device).unsqueeze(0)
        return ids, start + num_tokens

    def text_positions(self, start: int, num_tokens: int) -> tuple[torch.Tensor, int]:
        """(1, n) ids `start .. start+n-1`; the counter advances by n."""
        return self._arange(int(start), int(num_tokens))

    def visual_positions(self, start: int, chunk: VisualChunk) -> tuple[torch.Tensor, int]:
        """(1, n_tokens) ids continuing the counter over the chunk's tokens in order (1-D RoPE, same rule as text)."""
        return self._arange(int(start), chunk.num_tokens)

    # Re-anchoring (infinipot/reanchor.py) under the 1-D rule above: a frame's tokens hold consecutive ids,
    # so the frame's anchor is a token's id minus its patch index, and the one row moves with the anchor.
    @property
    def max_position_embeddings(self) -> int:
        return int(self._text_config.max_position_embeddings)

    def rotary_config(self) -> RotaryConfig:
        return rotary_config_from(self.model.model.text_model.rotary_emb)

    @property
    def position_frame_stride(self) -> int:
        return self.tokens_per_frame + self.max_frame_text_tokens  # a frame's wrapper text holds ids too

    def position_frame_anchor(self, positions: torch.Tensor, patch_index: torch.Tensor) -> torch.Tensor:
        return positions[..., 0, :] - patch_index

    def position_shift(
        self, positions: torch.Tensor, patch_index: torch.Tensor, frame_shift: torch.Tensor, base_shift: int = 0
    ) -> torch.Tensor:
        return frame_shift.unsqueeze(-2).expand(positions.shape)  # one row; no stream-wide base

    def forward(
        self, embeds: torch.Tensor, position_ids: torch.Tensor, cache: object, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """Llama text model + lm_head over `embeds` (1, n, hidden) or (n, hidden) with explicit positions.

        `position_ids` may be (n,), (1, n) or (1, 1, n) (the shapes the position methods and a session's
        concatenation produce). K/V are written into `cache`; `logits_to_keep` > 0 returns only the last
        that many positions' logits (decoding needs only the last one).
        """
        if embeds.dim() == 2:
            embeds = embeds.unsqueeze(0)
        if embeds.dim() != 3 or embeds.shape[0] != 1:
            raise ValueError(f"embeds must be (1, n, hidden), got {tuple(embeds.shape)}")
        position_ids = position_ids.reshape(1, -1)
        if position_ids.shape[1] != embeds.shape[1]:
            raise ValueError(f"{position_ids.shape[1]} positions for {embeds.shape[1]} embeddings")
        hidden = self.model.model.text_model(
            inputs_embeds=embeds.to(device=self.device, dtype=self.dtype),
            position_ids=position_ids.to(self.device),
            cache=cache,
            use_cache=cache is not None,
            return_dict=True,
        ).last_hidden_state
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        return self.model.lm_head(hidden)


# ---------------------------------------------------------------------- tiny checkpoint
#: words of the prompt that the tiny word-level vocabulary lacks.
_TINY_EXTRA_WORDS = ["provided", "following", "series"]


def _tiny_tokenizer():
    """The shared tiny tokenizer plus SmolVLM's markers; `<end_of_utterance>` is its eos, as in SmolVLM2."""
    from infinipot.tiny_tokenizer import build_tokenizer

    tokenizer = build_tokenizer(extra_words=_TINY_EXTRA_WORDS)
    tokenizer.add_tokens(list(SMOLVLM_SPECIAL_TOKENS), special_tokens=True)
    tokenizer.add_special_tokens({"eos_token": END_OF_UTTERANCE, "bos_token": "<|im_start|>"})
    return tokenizer


def build_tiny_checkpoint(path: str | Path) -> Path:
    """Write a tiny random SmolVLM (real architecture, ~0.13 M parameters) to `path`; deterministic.

    Text: Llama, 2 layers, hidden 64, 4 heads, 2 KV heads. Vision: SigLIP, 2 layers, 64 px frames with 8 px
    patches (8×8 patches) and scale factor 2 -> 4×4 = 16 tokens per frame. Saved with safetensors together
    with the tokenizer, a generation config and a preprocessor config, so it loads through the same
    `from_pretrained` path as a hub checkpoint.
    """
    from transformers import GenerationConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    special = {name: tokenizer.convert_tokens_to_ids(name) for name in ("<|im_start|>", END_OF_UTTERANCE, "<image>")}
    pad_id = tokenizer.pad_token_id
    image_size, patch_size, scale = 64, 8, 2
    config = SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
            bos_token_id=special["<|im_start|>"],
            eos_token_id=special[END_OF_UTTERANCE],
            pad_token_id=pad_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        scale_factor=scale,
        image_token_id=special["<image>"],
        tie_word_embeddings=False,
        pad_token_id=pad_id,
    )
    with torch.random.fork_rng(devices=[]):  # a fixed seed without disturbing the caller's RNG state
        torch.manual_seed(TINY_SEED)
        model = SmolVLMForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=special["<|im_start|>"], eos_token_id=special[END_OF_UTTERANCE], pad_token_id=pad_id
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    SmolVLMImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}
    ).save_pretrained(out)
    write_infinipot_json(out, frame_size=[image_size, image_size], builder=TINY_NAME, seed=TINY_SEED)
    return out


# Importing this module (loading.py does so for its registry) makes "smolvlm" checkpoints and
# "builtin:tiny-smolvlm" loadable through `load_adapter`.
register_adapter(MODEL_TYPES, SmolVLMAdapter.from_pretrained)
register_tiny_builder(TINY_NAME, build_tiny_checkpoint)
