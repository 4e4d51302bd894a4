"""`StreamingSession`: frames in, answers out, with a KV cache that never exceeds its budget.

Why this shape (InfiniPot-V, Kim et al. 2025, arXiv 2506.15745, Sec. 3): frames arrive before the question
is known, so they are encoded and prefilled block by block (one temporal frame of the model per block)
into a fixed-capacity store. When the next block would push the cache past the threshold |M|, a
question-agnostic compression pass (the configured policy: TaR + VaN for "infinipot") shrinks it in place
to the target |C|. A question is appended, answered greedily from the compressed cache, and then rolled
back, so the stream continues exactly as if nothing had been asked (multi-turn).

Invariants the tests check:
* the store is allocated once with |M| + reserve slots (reserve = longest question + template + answer),
  so `kv_bytes <= kv_cap_bytes` is structural;
* positions come only from the adapter's position rule, continued from a logical counter; each visual
  chunk also carries its place in the stream (where the video began, its first temporal frame's index
  and per temporal frame the seconds since the first frame, from the header stamps), so a family that
  lays a video out as one group (Qwen2-VL/2.5-VL) keeps that layout while streaming;
* a rejected input (typed error) leaves the session unchanged and usable;
* `ask` leaves the cache bit-identical (keys, values, metadata, length) and the counters unchanged.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .adapters.base import VisualChunk, VLMAdapter
from .adapters.preprocessing import validate_frame
from .budget import CacheBudget, resolve_budget
from .evidence import AttentionRecorder, EvidenceFrame, frame_weights, install_probe, recording, select_layers, top_evidence
from .errors import BudgetError, FrameError, QuestionError, SessionStateError
from .kv_store import FixedKVStore
from .memory_map import HeldFrame, held_frames
from .persistence import SessionCheckpoint, read_checkpoint, write_checkpoint
from .policies import make_policy
from .reanchor import reanchor_store
from .selection import CompressionReport, compress_store

__all__ = [
    "SessionConfig",
    "Answer",
    "SessionStats",
    "StreamingSession",
    "CompressionListener",
    "EvidenceFrame",
    "HeldFrame",
    "make_checkpoint",
    "POSITION_LIMIT_SHARE",
    "DEFAULT_BUDGET_TOKENS",
    "save_session",
    "load_session",
]

#: default position limit as a share of the model's `max_position_embeddings`: the whole trained range.
#: Every id (the question's and answer's included) stays inside it; the held frames are packed at its bottom.
POSITION_LIMIT_SHARE = 1.0
#: |M| for a capped policy given neither budget_tokens nor budget_mb: the paper's 6K-token cache
#: (InfiniPot-V, arXiv 2506.15745: Qwen2-VL-7B at 6K matches the ~50K full cache within 1 point)
DEFAULT_BUDGET_TOKENS = 6144

#: called after every compression pass with (session, report); tests snapshot the surviving tokens here
CompressionListener = Callable[["StreamingSession", CompressionReport], None]


@dataclass(frozen=True)
class SessionConfig:
    """What a session is asked to do; every field has the paper's or a safe default.

    policy: "infinipot" (TaR + VaN), "tar", "van", "uniform", "sliding_window" or "full" (uncapped
    baseline: any budget is ignored). budget_tokens / budget_mb: threshold |M| in tokens, or the hard cap
    of the whole store in MiB, keys, values and metadata (give at most one; neither = DEFAULT_BUDGET_TOKENS,
    the paper's 6K; uncapped only with policy "full"). target_ratio: |C| / |M|.
    recent_ratio, tar_share, van_pooling: policy settings (see infinipot/policies.py).
    max_question_tokens, max_new_tokens: size the store's reserve; longer questions are rejected.
    evidence: record which held frames each answer attends to (`Answer.evidence`, infinipot/evidence.py);
    off = no probe installed and no cost. max_evidence: default length of that list. evidence_layers:
    the layers whose attention is summed ("all", "upper" half, "last"). evidence_tokens: how many answer
    tokens' attention rows are summed (1 = the first, which chose the answer; 0 = all of them).
    position_limit: every rotary position id stays below it, over a stream of any length (held frames are
    re-anchored by rotating their cached keys, see infinipot/reanchor.py); None = POSITION_LIMIT_SHARE of
    the model's max_position_embeddings.
    """

    policy: str = "infinipot"
    budget_tokens: int | None = None
    budget_mb: float | None = None
    target_ratio: float = 0.75
    recent_ratio: float = 0.25
    tar_share: float = 0.5
    van_pooling: bool = True
    max_question_tokens: int = 64
    max_new_tokens: int = 32
    max_question_chars: int = 1000
    evidence: bool = True
    max_evidence: int = 5
    evidence_layers: str = "all"
    evidence_tokens: int = 1
    position_limit: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def validate(self) -> None:
        """Every check that needs no model (policy name and ratios, budget forms, limits); raises the typed
        error a session would raise. The ROS node calls it at start-up, so a bad value stops the node with
        its reason instead of leaving a node whose model worker could never start."""
        for name in ("max_question_tokens", "max_new_tokens", "max_question_chars"):
            if int(getattr(self, name)) < 1:
                raise BudgetError(f"{name} must be >= 1, got {getattr(self, name)}")
        make_policy(self.policy, recent_ratio=self.recent_ratio, tar_share=self.tar_share, van_pooling=self.van_pooling)
        if not 0.0 < self.target_ratio < 1.0:
            raise BudgetError(f"target_ratio must be in (0, 1) (|C| < |M|), got {self.target_ratio}")
        if self.budget_tokens is not None and self.budget_mb is not None:
            raise BudgetError("give either budget_tokens or budget_mb, not both")
        if self.budget_tokens is not None and (int(self.budget_tokens) != self.budget_tokens or self.budget_tokens < 1):
            raise BudgetError(f"budget_tokens must be a positive integer, got {self.budget_tokens}")
        if self.budget_mb is not None and not (self.budget_mb > 0 and math.isfinite(self.budget_mb)):
            raise BudgetError(f"budget_mb must be a positive number, got {self.budget_mb}")
        if self.position_limit is not None and (int(self.position_limit) != self.position_limit or self.position_limit < 1):
            raise BudgetError(f"position_limit must be a positive integer, got {self.position_limit}")


@dataclass(frozen=True)
class Answer:
    """One answer. memory_start / memory_end: stream seconds of the oldest / newest frame still held.

    evidence: the held frames the answer drew on most, strongest first, with their share of the answer's
    attention over visual tokens (empty when evidence is off); see infinipot/evidence.py."""

    text: str
    latency_s: float  # question in -> last token out
    ttft_s: float  # question in -> first token chosen
    tokens_used: int  # cached tokens the first answer token attended to (held tokens + question)
    new_tokens: int  # generated tokens, the end-of-answer token included
    memory_start: float | None
    memory_end: float | None
    evidence: tuple[EvidenceFrame, ...] = ()


@dataclass(frozen=True)
class SessionStats:
    """A snapshot of the session (fields fixed by docs/architecture.md)."""

    policy: str
    tokens_held: int
    token_budget: int  # threshold |M|, 0 = uncapped
    target_tokens: int  # |C|, 0 = uncapped
    kv_bytes: int
    kv_cap_bytes: int  # 0 = uncapped
    frames_added: int
    frames_ingested: int
    frames_pending: int
    compressions: int
    tokens_evicted: int
    last_compression_s: float
    mean_compression_s: float
    total_compression_s: float
    total_ingest_s: float
    memory_start: float | None
    memory_end: float | None
    next_position: int
    position_limit: int = 0  # every position id stays below this
    reanchors: int = 0  # times the held frames were moved down (positions re-anchored)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Counters:
    """Everything that changes while streaming, besides the store and the pending frames."""

    next_position: int = 0  # logical position of the next token (the position rule continues from it)
    next_token: int = 0  # token_index of the next token written (unique over the stream)
    next_frame_id: int = 0  # id of the next temporal frame
    last_stamp: float | None = None
    video_start: int | None = None  # logical position where the stream's video began (its one vision group)
    video_t_shift: int = 0  # t offset of later frames from their video's base, left by re-anchoring (<= 0)
    first_stamp: float | None = None  # stamp of the stream's first ingested raw frame
    frames_added: int = 0
    frames_ingested: int = 0
    compressions: int = 0
    tokens_evicted: int = 0
    last_compression_s: float = 0.0
    total_compression_s: float = 0.0
    total_ingest_s: float = 0.0
    reanchors: int = 0
    # temporal frame id -> (stamp of its first raw frame, stamp of its last), only for frames still held
    frame_stamps: dict[int, tuple[float, float]] = field(default_factory=dict)

    def scalars(self) -> dict[str, object]:
        """Every counter but the frame stamps, by name (the checkpoint's `counters`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "frame_stamps"}

    @classmethod
    def restored(cls, scalars: dict[str, object], frame_stamps: dict[int, tuple[float, float]]) -> "_Counters":
        """Counters from `scalars` (see `scalars`) and a copy of `frame_stamps`."""
        counters = cls(**scalars)  # type: ignore[arg-type]
        counters.frame_stamps = dict(frame_stamps)
        return counters


class StreamingSession:
    """Streams frames from one camera into one adapter's model under a fixed KV budget."""

    def __init__(self, adapter: VLMAdapter, config: SessionConfig | None = None) -> None:
        self.adapter = adapter
        self.config = config if config is not None else SessionConfig()
        cfg = self.config
        cfg.validate()
        if int(cfg.max_evidence) < 0 or int(cfg.evidence_tokens) < 0:
            raise BudgetError(f"max_evidence and evidence_tokens must be >= 0, got {cfg.max_evidence}, "
                              f"{cfg.evidence_tokens}")
        self._evidence_layers = select_layers(cfg.evidence_layers, adapter.geometry.num_layers)
        if cfg.evidence:
            install_probe(adapter.attention_config())
        self.policy = make_policy(
            cfg.policy, recent_ratio=cfg.recent_ratio, tar_share=cfg.tar_share, van_pooling=cfg.van_pooling
        )
        self._prefix_ids = list(adapter.prefix_token_ids())
        self._template_tokens = len(adapter.question_token_ids(""))
        self.reserve_tokens = cfg.max_question_tokens + self._template_tokens + cfg.max_new_tokens
        geometry = adapter.geometry
        self.budget: CacheBudget | None = None
        if self.policy is not None:
            default = cfg.budget_tokens is None and cfg.budget_mb is None  # capped by default
            self.budget = resolve_budget(
                bytes_per_token=geometry.slot_bytes,  # keys, values and per-slot metadata
                budget_tokens=DEFAULT_BUDGET_TOKENS if default else cfg.budget_tokens,
                budget_mb=cfg.budget_mb,
                target_ratio=cfg.target_ratio,
                reserve_tokens=self.reserve_tokens,
                prefix_tokens=len(self._prefix_ids),
                min_step_tokens=adapter.tokens_per_frame + adapter.max_frame_text_tokens,
            )
        #: f: temporal frames of the model that fit in the visual part of |M| (fixes the recent window R)
        self.memory_frames = 0 if self.budget is None else (
            (self.budget.threshold_tokens - len(self._prefix_ids)) // (adapter.tokens_per_frame + adapter.max_frame_text_tokens)
        )
        self.store = FixedKVStore(
            geometry.num_layers,
            geometry.num_kv_heads,
            geometry.head_dim,
            None if self.budget is None else self.budget.capacity_tokens,
            dtype=geometry.dtype,
            device=adapter.device,
            position_rows=geometry.position_rows,
        )
        self._pending: list[tuple[np.ndarray, float]] = []
        self._listeners: list[CompressionListener] = []
        self._counters = _Counters()
        self._prefill_prefix()
        self._stream_start = self._counters.next_position  # first position after the prefix
        self.position_limit = self._resolve_position_limit()
        self._rotary = None  # the model's rotary settings, read at the first re-anchoring

    def _resolve_position_limit(self) -> int:
        """The configured limit or the default share of the model's range; BudgetError if it cannot hold the
        prefix, the frames of |M| packed, one more block and the question reserve (the least re-anchoring
        needs)."""
        limit = self.config.position_limit
        if limit is None:
            limit = int(POSITION_LIMIT_SHARE * self.adapter.max_position_embeddings)
        if int(limit) != limit or limit < 1:
            raise BudgetError(f"position_limit must be a positive integer, got {limit}")
        if self.budget is not None:
            stride = self.adapter.position_frame_stride
            extent = max(self.adapter.frame_grid)  # a frame's h/w ids reach this far past its base
            needed = self._stream_start + self.reserve_tokens + (self.memory_frames + 3) * stride + extent
            if limit < needed:
                raise BudgetError(
                    f"position_limit {limit} cannot hold the prefix ({self._stream_start} positions), the "
                    f"{self.memory_frames} frames of |M| and one more block ({stride} positions each) and the "
                    f"question reserve ({self.reserve_tokens}): at least {needed} is needed; lower the budget"
                )
        return int(limit)

    def _reanchor(self) -> None:
        """Move the held frames down (infinipot/reanchor.py): packed after the prefix, squeezed only if they
        would leave no room for the newest frame's extent and one more block; the counter follows the newest
        frame."""
        if self._rotary is None:
            self._rotary = self.adapter.rotary_config()
        c = self._counters
        stride = self.adapter.position_frame_stride
        room = self.position_limit - self._stream_start - self.reserve_tokens - 2 * stride
        base_shift = 0 if c.video_start is None else self._stream_start - c.video_start
        moved = reanchor_store(
            self.store, self.adapter, self._rotary, start=self._stream_start, room=max(0, room), base_shift=base_shift
        )
        if moved.newest_frame == c.next_frame_id - 1:  # the newest frame is held: the counter follows it
            c.next_position = max(c.next_position + moved.newest_shift, moved.largest + 1)
        else:  # the newest frames were all evicted (possible with uniform): no hole after the newest held one
            c.next_position = max(moved.newest_anchor + stride, moved.largest + 1)
        if c.video_start is not None:  # the video now begins at the oldest held frame, right after the prefix
            c.video_t_shift += moved.newest_shift - base_shift
            c.video_start = self._stream_start
        c.reanchors += 1

    # ------------------------------------------------------------------ streaming
    def add_frame(self, rgb: np.ndarray, stamp: float) -> None:
        """Buffer one RGB uint8 (H, W, 3) frame taken at stream time `stamp` (seconds, non-decreasing).

        Every `adapter.frames_per_step` frames are encoded and prefilled as one block; the cache is
        compressed first if the block would exceed the threshold. Raises FrameError (session unchanged).
        """
        frame = validate_frame(rgb)
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            raise FrameError(f"stamp must be a number, got {stamp!r}") from None
        if not math.isfinite(stamp):
            raise FrameError(f"stamp must be finite, got {stamp}")
        last = self._counters.last_stamp
        if last is not None and stamp < last:
            raise FrameError(f"stamp {stamp} is earlier than the previous frame's {last}")
        earlier = list(self._pending)
        self._pending.append((frame.copy(), stamp))
        self._counters.frames_added += 1
        self._counters.last_stamp = stamp
        if len(self._pending) >= self.adapter.frames_per_step:
            try:
                self._ingest_pending()
            except FrameError:
                # Bad input that only the model's own preprocessing detects: reject this frame alone.
                self._pending = earlier
                self._counters.frames_added -= 1
                self._counters.last_stamp = last
                raise

    def _ingest_pending(self) -> None:
        """Encode the pending frames as one block, make room for it, prefill it."""
        started = time.perf_counter()
        frames = [frame for frame, _ in self._pending]
        stamps = [stamp for _, stamp in self._pending]
        # The block is consumed even if the model fails on it (e.g. CUDA out of memory): keeping it would make
        # every later frame fail too. `_write` has already rolled the store back; the block's frames are lost.
        self._pending.clear()
        with torch.no_grad():
            chunk = self.adapter.encode_frames(frames)
            c = self._counters
            per_step = len(frames) // chunk.num_frames
            first_stamp = stamps[0] if c.first_stamp is None else c.first_stamp
            self._place_chunk(chunk, stamps, first_stamp)
            # visual tokens plus the text that belongs to the frames (timestamps, wrappers): all of it counts
            block = self.adapter.stream_block(c.next_position, chunk)
            n = block.num_tokens
            if self.budget is not None and self.store.length + n > self.budget.threshold_tokens:
                self._compress()
                if self.store.length + n > self.budget.threshold_tokens:
                    raise BudgetError(
                        f"after compression {self.store.length} tokens are held; a block of {n} does not fit "
                        f"under |M|={self.budget.threshold_tokens}"
                    )
            if block.next_start + self.reserve_tokens > self.position_limit:  # the question must fit too
                self._reanchor()
                self._place_chunk(chunk, stamps, first_stamp)
                block = self.adapter.stream_block(c.next_position, chunk)
                if block.next_start + self.reserve_tokens > self.position_limit:
                    raise SessionStateError(
                        f"after re-anchoring the next block ends at position {block.next_start}; with the "
                        f"reserve of {self.reserve_tokens} it does not fit under position_limit={self.position_limit}"
                    )
            token_index = torch.arange(c.next_token, c.next_token + n, dtype=torch.long)
            frame_id = c.next_frame_id + block.frame_offset.cpu()
            self._write(block.embeds, block.positions, token_index, frame_id, block.patch_index.cpu(),
                        forward_kwargs=block.forward_kwargs)
            next_position = block.next_start
        if c.video_start is None:
            c.video_start, c.first_stamp = chunk.stream_start, first_stamp
        for j in range(chunk.num_frames):
            c.frame_stamps[c.next_frame_id + j] = (stamps[j * per_step], stamps[(j + 1) * per_step - 1])
        c.next_position = next_position
        c.next_token += n
        c.next_frame_id += chunk.num_frames
        c.frames_ingested += len(frames)
        c.total_ingest_s += time.perf_counter() - started

    def _place_chunk(self, chunk: VisualChunk, stamps: list[float], first_stamp: float) -> None:
        """Tell the adapter where `chunk` sits in the stream: where its video began (its h/w base), the t
        shift left by re-anchoring, its first temporal frame's index and the frames' times since the first."""
        c = self._counters
        per_step = len(stamps) // chunk.num_frames
        chunk.stream_start = c.next_position if c.video_start is None else c.video_start
        chunk.stream_t_shift = c.video_t_shift
        chunk.first_frame = c.next_frame_id
        chunk.frame_times = tuple(stamps[j * per_step] - first_stamp for j in range(chunk.num_frames))
        chunk.frame_end_times = tuple(stamps[(j + 1) * per_step - 1] - first_stamp for j in range(chunk.num_frames))

    def _write(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        token_index: torch.Tensor,
        frame_id: torch.Tensor,
        patch_index: torch.Tensor,
        logits_to_keep: int = 1,
        forward_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """One forward of new tokens into the store; on failure the store is rolled back to before it."""
        length = self.store.length
        self.store.stage_tokens(token_index, frame_id, patch_index, positions)
        try:
            return self.adapter.forward(
                embeds.unsqueeze(0), positions, self.store, logits_to_keep=logits_to_keep, **(forward_kwargs or {})
            )
        except BaseException:
            self.store.truncate(min(length, min(self.store.layer_length(i) for i in range(self.store.num_layers))))
            raise

    def _compress(self, policy: object = None, target_tokens: int | None = None) -> None:
        """One compression pass with this session's policy and target (or the given ones, see `rebuilt`)."""
        assert policy is not None or (self.budget is not None and self.policy is not None)
        policy = self.policy if policy is None else policy
        target = self.budget.target_tokens if target_tokens is None else target_tokens  # type: ignore[union-attr]
        report = compress_store(
            self.store, policy, target, self.adapter.frame_grid, memory_frames=self.memory_frames
        )
        c = self._counters
        c.compressions += 1
        c.tokens_evicted += int(report.tokens_evicted)
        c.last_compression_s = float(report.duration_s)
        c.total_compression_s += float(report.duration_s)
        held = set(torch.unique(self.store.frame_id[:, :, : self.store.length]).tolist())
        c.frame_stamps = {fid: s for fid, s in c.frame_stamps.items() if fid in held}
        for listener in list(self._listeners):
            listener(self, report)

    def _prefill_prefix(self) -> None:
        ids = torch.tensor(self._prefix_ids, dtype=torch.long)
        n = len(self._prefix_ids)
        with torch.no_grad():
            positions, next_position = self.adapter.text_positions(0, n)
            text = torch.full((n,), -1, dtype=torch.long)
            self._write(self.adapter.text_embeds(ids), positions, torch.arange(n), text, text)
        self.store.set_prefix_length(n)
        self._counters.next_position = next_position
        self._counters.next_token = n

    # ------------------------------------------------------------------ questions
    def _question_ids(self, question: object, max_new_tokens: int) -> list[int]:
        """Validate a question and return its token ids (template included); QuestionError otherwise."""
        cfg = self.config
        if not isinstance(question, str) or not question.strip():
            raise QuestionError("the question is empty")
        if len(question) > cfg.max_question_chars:
            raise QuestionError(f"the question has {len(question)} characters; the limit is {cfg.max_question_chars}")
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= cfg.max_new_tokens:
            raise QuestionError(f"max_new_tokens must be in [1, {cfg.max_new_tokens}], got {max_new_tokens!r}")
        ids = list(self.adapter.question_token_ids(question))
        if len(ids) - self._template_tokens > cfg.max_question_tokens:
            raise QuestionError(
                f"the question is {len(ids) - self._template_tokens} tokens; the limit is {cfg.max_question_tokens}"
            )
        return ids

    def ask(self, question: str, max_new_tokens: int | None = None, max_evidence: int | None = None) -> Answer:
        """Answer `question` greedily from the current cache, then roll the cache back bit-identically.

        Pending (not yet encoded) frames stay pending. `max_evidence`: length of `Answer.evidence`
        (None = the config's; more than the held frames gives all of them). Raises QuestionError for a bad
        question and SessionStateError before the first block of frames has been ingested.
        """
        budget_new = self.config.max_new_tokens if max_new_tokens is None else max_new_tokens
        n_evidence = self.config.max_evidence if max_evidence is None else max_evidence
        if isinstance(n_evidence, bool) or not isinstance(n_evidence, int) or n_evidence < 0:
            raise QuestionError(f"max_evidence must be an integer >= 0, got {max_evidence!r}")
        ids = self._question_ids(question, budget_new)
        c = self._counters
        if c.next_frame_id == 0:
            raise SessionStateError(
                f"no frames ingested yet ({len(self._pending)} pending of {self.adapter.frames_per_step} per step)"
            )
        started = time.perf_counter()
        length = self.store.length
        eos = set(self.adapter.eos_token_ids)
        generated: list[int] = []
        position, token = c.next_position, c.next_token
        store_next_token = self.store.next_token_index
        recorder = (AttentionRecorder(self._evidence_layers, self.config.evidence_tokens)
                    if self.config.evidence and n_evidence else None)
        try:
            with torch.no_grad(), recording(recorder):
                step_ids = torch.tensor(ids, dtype=torch.long)
                ttft = 0.0
                while True:
                    n = int(step_ids.shape[0])
                    positions, position = self.adapter.text_positions(position, n)
                    text = torch.full((n,), -1, dtype=torch.long)
                    logits = self._write(
                        self.adapter.text_embeds(step_ids), positions, torch.arange(token, token + n), text, text
                    )
                    token += n
                    next_id = int(torch.argmax(logits[0, -1]))
                    if not generated:
                        ttft = time.perf_counter() - started
                    generated.append(next_id)
                    if next_id in eos or len(generated) >= budget_new:
                        break
                    step_ids = torch.tensor([next_id], dtype=torch.long)
        finally:
            self.store.truncate(length, next_token_index=store_next_token)
        evidence: tuple[EvidenceFrame, ...] = ()
        if recorder is not None:
            weights = frame_weights(recorder, self.store, length)
            evidence = top_evidence(weights, c.frame_stamps, n_evidence)
        memory_start, memory_end = self._memory_span()
        return Answer(
            text=self.adapter.decode([t for t in generated if t not in eos]),
            latency_s=time.perf_counter() - started,
            ttft_s=ttft,
            tokens_used=length + len(ids),
            new_tokens=len(generated),
            memory_start=memory_start,
            memory_end=memory_end,
            evidence=evidence,
        )

    # ------------------------------------------------------------------ state
    def _memory_span(self) -> tuple[float | None, float | None]:
        stamps = self._counters.frame_stamps
        if not stamps:
            return None, None
        return stamps[next(iter(stamps))][0], stamps[next(reversed(stamps))][1]

    def held_frames(self) -> tuple[HeldFrame, ...]:
        """Each temporal frame still held (oldest first): its stream-time span and the tokens kept of it."""
        return held_frames(self.store, self._counters.frame_stamps)

    def add_compression_listener(self, callback: CompressionListener) -> None:
        """Call `callback(session, report)` after every compression pass (e.g. to log what survived)."""
        self._listeners.append(callback)

    def reset(self) -> None:
        """Forget the stream (cache, pending frames, counters); keep the model, budget and listeners."""
        self.store.reset()
        self._pending.clear()
        self._counters = _Counters()
        self._prefill_prefix()

    def stats(self) -> SessionStats:
        c = self._counters
        memory_start, memory_end = self._memory_span()
        capped = self.budget is not None
        return SessionStats(
            policy=self.config.policy,
            tokens_held=self.store.length,
            token_budget=self.budget.threshold_tokens if capped else 0,
            target_tokens=self.budget.target_tokens if capped else 0,
            kv_bytes=self.store.nbytes_used,
            kv_cap_bytes=self.store.nbytes_capacity if capped else 0,
            frames_added=c.frames_added,
            frames_ingested=c.frames_ingested,
            frames_pending=len(self._pending),
            compressions=c.compressions,
            tokens_evicted=c.tokens_evicted,
            last_compression_s=c.last_compression_s,
            mean_compression_s=c.total_compression_s / c.compressions if c.compressions else 0.0,
            total_compression_s=c.total_compression_s,
            total_ingest_s=c.total_ingest_s,
            memory_start=memory_start,
            memory_end=memory_end,
            next_position=c.next_position,
            position_limit=self.position_limit,
            reanchors=c.reanchors,
        )

    # ------------------------------------------------------------------ persistence
    def rebuilt(self, config: SessionConfig) -> "StreamingSession":
        """A new session on the same adapter with `config` that holds this session's memory.

        Why: a memory restored under other budget or policy parameters must follow the parameters the
        node runs with now, without being thrown away. The cached keys and values stay valid (same model):
        they are moved into a store sized for `config`; when they exceed the new threshold |M|, one
        compression pass with the new policy shrinks them to the new target |C| first. Counters, stamps
        and pending frames carry over. This session is left compressed (discard it).
        Raises BudgetError when `config` is impossible for this adapter (nothing is changed then).
        """
        new = StreamingSession(self.adapter, config)
        if new.budget is not None and self.store.length > new.budget.threshold_tokens:
            self._compress(new.policy, new.budget.target_tokens)
        new._adopt(self.store.state_dict(), _Counters.restored(self._counters.scalars(), self._counters.frame_stamps),
                   self._pending)
        return new

    def _adopt(self, store_state: dict, counters: _Counters, pending: list[tuple[np.ndarray, float]]) -> None:
        """Take over a memory (a store state, its counters and pending frames) from a checkpoint or a session."""
        self.store.load_state_dict(store_state)
        self._counters = counters
        self._pending = list(pending)

    def checkpoint(self) -> SessionCheckpoint:
        """The session's whole state as a `SessionCheckpoint` of copies (safe to write from another thread
        while this session streams on)."""
        return make_checkpoint(self)

    def save(self, path: str | Path) -> Path:
        """Write the whole session state (store, counters, stamps, config, pending frames) to `path`."""
        return save_session(self, path)

    @classmethod
    def load(cls, path: str | Path, adapter: VLMAdapter) -> "StreamingSession":
        """Resume a session saved with `save` on a compatible adapter (same model type and KV geometry)."""
        return load_session(path, adapter)


def make_checkpoint(session: StreamingSession) -> SessionCheckpoint:
    """`session`'s state in the checkpoint format of infinipot/persistence.py (tensors copied to the CPU)."""
    counters = session._counters
    return SessionCheckpoint(
        fingerprint=session.adapter.fingerprint(),
        config=session.config.as_dict(),
        store=session.store.state_dict(),
        counters=counters.scalars(),
        frame_stamps=dict(counters.frame_stamps),
        pending=list(session._pending),  # frames are copied on add_frame and never written to again
        model_name=str(getattr(session.adapter, "name", "") or ""),
    )


def save_session(session: StreamingSession, path: str | Path) -> Path:
    """Write `session` to `path` (atomically) in the checkpoint format; returns the path."""
    return write_checkpoint(make_checkpoint(session), path)


def load_session(path: str | Path, adapter: VLMAdapter) -> StreamingSession:
    """Rebuild the StreamingSession saved at `path` on `adapter` (SessionStateError if it does not fit)."""
    checkpoint = read_checkpoint(path, adapter.fingerprint())
    known = {f.name for f in fields(SessionConfig)}
    config = SessionConfig(**{k: v for k, v in checkpoint.config.items() if k in known})
    session = StreamingSession(adapter, config)
    session._adopt(checkpoint.store, _Counters.restored(checkpoint.counters, checkpoint.frame_stamps), checkpoint.pending)
    return session
