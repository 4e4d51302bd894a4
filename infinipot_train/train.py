"""Train the built-in model: a tiny `Qwen2VLForConditionalGeneration` that answers about the synthetic world.

    python -m infinipot_train.train --out runs/tiny --steps 3000 [--device cuda] [--resume]
    python -m infinipot_train.train --out runs/tiny --export-only --export models/infinipot-tiny-qwen2vl

Why train through the engine's adapter: the model is only useful if it runs unchanged through
`StreamingSession` and the node. So the training forward is assembled from the adapter's own pieces: the
chat prefix (`prefix_token_ids`), frame preprocessing and the vision tower (`encode_frames`), the streaming
position rule applied block by block exactly as the session does (`visual_positions` per temporal frame,
`text_positions` for prefix, question and answer), the question template (`question_token_ids`) and the
language-model forward over embeddings (`forward`, without a cache). Any change to those pieces changes
training too; nothing is re-implemented here.

Batching: examples are right-padded. With a causal mask, padding after a sequence cannot influence any
earlier token, so no attention mask is needed and the answer logits are exactly those of the unpadded
sequence. Examples of similar length are grouped to keep padding small.

Loss: teacher-forced cross entropy on the answer tokens and the end-of-answer token, i.e. the tokens greedy
decoding in `StreamingSession.ask` has to produce. The log reports the running exact-answer accuracy
(every answer token and the end token right under teacher forcing).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from infinipot.adapters.base import VisualChunk
from infinipot.adapters.qwen2_vl import Qwen2VLAdapter
from infinipot.tiny_models import write_infinipot_json
from infinipot.tiny_tokenizer import build_tokenizer
from .train_data import EXTRA_WORDS, STAGES, Example, ExampleStream, length_batches
from .vision_aux import VisionAuxHead, object_frames, pretrain_vision

__all__ = ["ModelSize", "build_model", "build_adapter", "example_sequence", "batch_logits", "batch_loss", "train", "export", "main"]

FRAME_SIZE = 56  # 56 px -> 4x4 patches -> 2x2 = 4 tokens per temporal frame
SAMPLE_HZ = 2.0  # the node's default sample_rate_hz
IGNORE = -100
CHECKPOINT_NAME = "checkpoint.pt"
DEFAULT_EXPORT = Path(__file__).resolve().parent.parent / "models" / "infinipot-tiny-qwen2vl"


@dataclass(frozen=True)
class ModelSize:
    """Sizes of the tiny model. Defaults: ~1 M parameters, a few MB in float32."""

    hidden: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    vision_dim: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    #: M-RoPE base of the language model (real Qwen2-VL: 1,000,000)
    rope_theta: int = 10000


def _special_ids(tokenizer) -> dict[str, int]:
    def tid(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    return {
        "vision_start": tid("<|vision_start|>"), "vision_end": tid("<|vision_end|>"),
        "image": tid("<|image_pad|>"), "video": tid("<|video_pad|>"),
        "eos": tid("<|im_end|>"), "pad": tid("<|endoftext|>"),
    }


def build_model(tokenizer, size: ModelSize = ModelSize(), seed: int = 0) -> torch.nn.Module:
    """A freshly initialised Qwen2-VL of `size` for `tokenizer` (the real transformers class)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    special = _special_ids(tokenizer)
    head_dim = size.hidden // size.heads
    third = head_dim // 2 // 3
    mrope = [head_dim // 2 - 2 * third, third, third]  # sums to head_dim / 2, as M-RoPE requires
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=size.intermediate,
            num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
            max_position_embeddings=1 << 20, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": float(size.rope_theta), "mrope_section": mrope},
            bos_token_id=special["pad"], eos_token_id=special["eos"], pad_token_id=special["pad"],
        ),
        vision_config=dict(depth=size.vision_depth, embed_dim=size.vision_dim, hidden_size=size.hidden,
                           num_heads=size.vision_heads, mlp_ratio=2),
        image_token_id=special["image"], video_token_id=special["video"],
        vision_start_token_id=special["vision_start"], vision_end_token_id=special["vision_end"],
    )
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(config)


def build_adapter(model: torch.nn.Module, tokenizer, name: str = "infinipot-tiny-qwen2vl",
                  frame_size: int = FRAME_SIZE) -> Qwen2VLAdapter:
    """The engine's adapter around the model being trained (frame size and fps as the export will say).

    Training lays each temporal frame out as its own vision group (`example_sequence`), the "per_chunk"
    position layout, which the export records so the session streams the trained model the same way."""
    return Qwen2VLAdapter(model, tokenizer, name=name, frame_size=frame_size, fps=SAMPLE_HZ,
                          position_layout="per_chunk")


def _frame_view(chunk: VisualChunk, frame: int) -> VisualChunk:
    """Temporal frame `frame` of `chunk` as a one-frame chunk: the block the session prefills at a time."""
    per = chunk.frame_grid[0] * chunk.frame_grid[1]
    part = slice(frame * per, (frame + 1) * per)
    return VisualChunk(chunk.embeds[part], 1, chunk.frame_grid, chunk.frame_offset[part] - frame, chunk.patch_index[part])


def example_sequence(
    adapter: Qwen2VLAdapter, prefix_embeds: torch.Tensor, visual: VisualChunk, question: str, answer_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeds (L, H), position ids (3, L), labels (L,)) of one example, laid out as the session does it:
    prefix, then one visual block per temporal frame, then question template, then the answer."""
    device = adapter.device
    parts = [prefix_embeds]
    positions, start = adapter.text_positions(0, prefix_embeds.shape[0])
    position_parts = [positions]
    for frame in range(visual.num_frames):
        block = _frame_view(visual, frame)
        positions, start = adapter.visual_positions(start, block)
        parts.append(block.embeds)
        position_parts.append(positions)
    question_ids = list(adapter.question_token_ids(question))
    eos = adapter.eos_token_ids[0]
    text_ids = question_ids + answer_ids
    parts.append(adapter.text_embeds(torch.tensor(text_ids, dtype=torch.long, device=device)))
    positions, start = adapter.text_positions(start, len(text_ids))
    position_parts.append(positions)
    embeds = torch.cat(parts)
    labels = torch.full((embeds.shape[0],), IGNORE, dtype=torch.long, device=device)
    targets = answer_ids + [eos]
    labels[embeds.shape[0] - len(targets):] = torch.tensor(targets, dtype=torch.long, device=device)
    # label at i is the token that must follow position i: the last question token predicts answer[0]
    return embeds, torch.cat(position_parts, dim=1), labels


def batch_logits(
    adapter: Qwen2VLAdapter, batch: Sequence[Example], answer_cache: dict[str, list[int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Teacher-forced forward of a right-padded batch: (logits (B, L, V), labels (B, L), true lengths)."""
    answer_cache = {} if answer_cache is None else answer_cache
    device = adapter.device
    prefix_ids = torch.tensor(adapter.prefix_token_ids(), dtype=torch.long, device=device)
    prefix_embeds = adapter.text_embeds(prefix_ids)
    frames = [frame for example in batch for frame in example.frames]
    visual = adapter.encode_frames(frames)  # one vision pass over all temporal frames
    per_frame = adapter.tokens_per_frame
    sequences = []
    first = 0
    for example in batch:
        n = len(example.frames) // adapter.frames_per_step
        tokens = slice(first * per_frame, (first + n) * per_frame)
        chunk = VisualChunk(visual.embeds[tokens], n, visual.frame_grid,
                            visual.frame_offset[tokens] - first, visual.patch_index[tokens])
        first += n
        if example.answer not in answer_cache:
            answer_cache[example.answer] = list(adapter.tokenizer(example.answer, add_special_tokens=False)["input_ids"])
        sequences.append(example_sequence(adapter, prefix_embeds, chunk, example.question, answer_cache[example.answer]))
    longest = max(s[0].shape[0] for s in sequences)
    hidden = sequences[0][0].shape[1]
    embeds = torch.zeros(len(sequences), longest, hidden, dtype=adapter.dtype, device=device)
    positions = torch.zeros(3, len(sequences), longest, dtype=torch.long, device=device)
    labels = torch.full((len(sequences), longest), IGNORE, dtype=torch.long, device=device)
    for b, (e, p, l) in enumerate(sequences):
        n = e.shape[0]
        embeds[b, :n] = e
        positions[:, b, :n] = p
        positions[:, b, n:] = p[:, -1:] + torch.arange(1, longest - n + 1, device=device)  # padding: never read
        labels[b, :n] = l
    logits = adapter.forward(embeds, positions, None)
    return logits, labels, [seq[0].shape[0] for seq in sequences]


def batch_loss(
    adapter: Qwen2VLAdapter, batch: Sequence[Example], answer_cache: dict[str, list[int]] | None = None
) -> tuple[torch.Tensor, list[bool]]:
    """Teacher-forced loss of a batch; returns (mean loss over answer tokens, per example: answer exactly right)."""
    logits, labels, _ = batch_logits(adapter, batch, answer_cache)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    with torch.no_grad():
        mask = labels != IGNORE
        right = (logits.argmax(-1) == labels) | ~mask
        correct = [bool(v) for v in right.all(dim=1).tolist()]
    return loss, correct


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainSettings:
    out: str
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3  # 2e-3 left the prior but stalled (see the model card)
    weight_decay: float = 0.01
    warmup: int = 150
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    save_every: int = 200
    log_every: int = 20
    max_minutes: float = 0.0
    pool_batches: int = 8
    #: question kinds to train on ("" = all); e.g. "colour,presence" for a focused fine-tune
    kinds: str = ""
    #: start from the weights of this checkpoint.pt (fresh optimizer and schedule): a fine-tune
    init_from: str = ""
    #: fixed stage mix, e.g. "1,2,4" for single,few,long ("" = the curriculum of train_data.stage_weights)
    stage_weights: str = ""
    #: share of "no" presence questions rewritten into hard negatives (a seen colour on another shape)
    hard_negatives: float = 0.0
    #: share of ask times that also get a training-only "What shape was the <colour> object?"
    shape_questions: float = 0.0
    #: share of colour questions re-aimed at a shape other than the latest object's (train_data.focus_older_colour)
    older_colour: float = 0.0
    #: weight of the auxiliary shape/colour classification loss on the vision tower (0 = off; vision_aux.py)
    vision_aux: float = 0.0
    #: temporal frames per step for that loss
    vision_aux_batch: int = 32
    #: steps of vision-only shape/colour training before answer training (vision_aux.pretrain_vision)
    vision_pretrain_steps: int = 0
    vision_pretrain_lr: float = 2e-3
    #: keep the vision tower (and merger) fixed during answer training
    freeze_vision: bool = False
    #: square frame side the model sees (a multiple of 28: 14-px patches merged 2x2); 56 -> 4 tokens/frame
    frame_size: int = FRAME_SIZE


def _progress(step: int, elapsed_s: float, settings: TrainSettings) -> float:
    """Training progress 0..1: by steps, or by wall time when `max_minutes` would end the run first.

    Why time as well: on a shared CPU the step rate is not known in advance; with a time budget the
    curriculum and the learning-rate decay still run to completion inside it instead of being cut off.
    """
    progress = step / settings.steps if settings.steps > 0 else 1.0  # --steps 0: only the vision stage
    if settings.max_minutes > 0:
        progress = max(progress, elapsed_s / (settings.max_minutes * 60.0))
    return min(1.0, progress)


def _lr_factor(step: int, progress: float, settings: TrainSettings) -> float:
    """Linear warmup over `warmup` steps, then cosine decay (over progress) to 5 % of the peak."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, model, optimizer, step: int, stream: ExampleStream, batch_rng, settings,
                     history: list, elapsed_s: float, extra: dict | None = None) -> None:
    """Write atomically: a crash while saving never destroys the previous checkpoint."""
    payload = {**(extra or {}),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "stream": stream.state(), "batch_rng": batch_rng.bit_generator.state, "rng": _rng_state(),
        "settings": asdict(settings), "history": history, "elapsed_s": elapsed_s,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _initial_weights(source: str, device: torch.device) -> dict:
    """Weights to fine-tune from: a training checkpoint.pt, or an exported model folder (e.g. the shipped
    models/infinipot-tiny-qwen2vl), so a run can continue from what the repository ships."""
    path = Path(source)
    if path.is_dir():
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration.from_pretrained(path).state_dict()
    return torch.load(path, map_location=device, weights_only=False)["model"]


def load_growing(model: torch.nn.Module, state: dict) -> list[int]:
    """Load `state` into `model`, which may have more language-model layers than the weights: the extra
    layers (appended on top) start as the identity, so the grown model computes exactly what the loaded
    one did and training only adds to it. Returns the indices of the new layers.

    Why: the shipped 3-layer model plateaued near 0.8 on its own training questions (underfitting, not
    overfitting), and training a deeper model from scratch repeats the whole ~2 h recipe. Zeroing a new
    layer's attention output and MLP down projections makes its residual contribution zero at the start.
    """
    result = model.load_state_dict(state, strict=False)
    prefix = "model.language_model.layers."
    new_layers = sorted({int(k[len(prefix):].split(".")[0]) for k in result.missing_keys if k.startswith(prefix)})
    unexpected = list(result.unexpected_keys)
    other_missing = [k for k in result.missing_keys if not k.startswith(prefix)]
    if unexpected or other_missing or (new_layers and new_layers[0] != len(model.model.language_model.layers) - len(new_layers)):
        raise ValueError(f"weights do not fit this model: missing {result.missing_keys[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for index in new_layers:
            layer = model.model.language_model.layers[index]
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return new_layers


def _aux_state(aux_head, aux_rng, vision_report: dict) -> dict:
    """The auxiliary head, its data position and the vision pre-training result, for --resume (never exported)."""
    state: dict = {"vision_pretrain": vision_report}
    if aux_head is not None:
        state.update(aux_head=aux_head.state_dict(), aux_rng=aux_rng.bit_generator.state)
    return state


def train(settings: TrainSettings, resume: bool = False, size: ModelSize = ModelSize()) -> tuple[Qwen2VLAdapter, dict]:
    """Run (or continue) training; returns the adapter with the trained model and a summary dict."""
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    tokenizer = build_tokenizer(list(EXTRA_WORDS), time_text=False)
    model = build_model(tokenizer, size, seed=settings.seed).to(device)
    adapter = build_adapter(model, tokenizer, frame_size=settings.frame_size)
    model.train()
    checkpoint = out / CHECKPOINT_NAME
    resuming = resume and checkpoint.is_file()
    if settings.init_from and not resuming:
        grown = load_growing(model, _initial_weights(settings.init_from, device))
        print(f"initialised from {settings.init_from}" + (f"; new identity layers {grown}" if grown else ""), flush=True)
    vision_report: dict = {}
    if settings.vision_pretrain_steps > 0 and not resuming:
        vision_report = pretrain_vision(
            adapter, VisionAuxHead(size.hidden).to(device), steps=settings.vision_pretrain_steps,
            lr=settings.vision_pretrain_lr, batch=settings.vision_aux_batch,
            rng=np.random.default_rng([settings.seed, 13]), sample_hz=SAMPLE_HZ,
            log=lambda line: print(line, flush=True))
    if settings.freeze_vision:
        model.model.visual.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.98))
    aux_head, aux_rng = None, np.random.default_rng([settings.seed, 11])
    if settings.vision_aux > 0:
        aux_head = VisionAuxHead(size.hidden).to(device)
        optimizer.add_param_group({"params": list(aux_head.parameters())})
    stages = STAGES
    if settings.kinds:
        wanted = tuple(k.strip() for k in settings.kinds.split(",") if k.strip())
        stages = tuple(replace(stage, kinds=tuple(k for k in stage.kinds if k in wanted) or stage.kinds)
                       for stage in STAGES)
    fixed = [float(w) for w in settings.stage_weights.split(",")] if settings.stage_weights else None
    stream = ExampleStream(settings.seed, stages, sample_hz=SAMPLE_HZ, frames_per_step=adapter.frames_per_step,
                           fixed_weights=fixed, hard_negative_share=settings.hard_negatives,
                           shape_question_share=settings.shape_questions,
                           older_colour_share=settings.older_colour)
    batch_rng = np.random.default_rng([settings.seed, 7])
    step, history, elapsed_before = 0, [], 0.0
    if resuming:
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), list(state["history"])
        elapsed_before = float(state.get("elapsed_s", 0.0))
        vision_report = dict(state.get("vision_pretrain", {}))
        stream.restore(state["stream"])
        if aux_head is not None and "aux_head" in state:
            aux_head.load_state_dict(state["aux_head"])
            aux_rng.bit_generator.state = state["aux_rng"]
        batch_rng.bit_generator.state = state["batch_rng"]
        _set_rng_state(state["rng"])
        print(f"resumed from {checkpoint} at step {step}", flush=True)
    (out / "settings.json").write_text(json.dumps({"train": asdict(settings), "model": asdict(size)}, indent=2))
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.2f} M parameters; device {device}; {settings.steps} steps x {settings.batch_size}",
          flush=True)
    started = time.perf_counter()
    window_loss, window_exact, window_n, samples = 0.0, 0, 0, 0
    window_kinds: dict[str, list[int]] = {}
    answer_cache: dict[str, list[int]] = {}
    pool: list[list[Example]] = []
    # Pool batches are drawn at the step they start; the pool is not checkpointed, so a resumed run redraws
    # from the stream position (a few batches differ from an uninterrupted run, the curriculum does not).
    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    while True:
        progress = _progress(step, elapsed(), settings)
        if progress >= 1.0:
            break
        if not pool:
            examples = stream.take(settings.batch_size * settings.pool_batches, progress)
            pool = [b for b in length_batches(examples, settings.batch_size, batch_rng) if len(b) == settings.batch_size]
            if not pool:
                continue
        batch = pool.pop()
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * _lr_factor(step, progress, settings)
        loss, correct = batch_loss(adapter, batch, answer_cache)
        total = loss
        if aux_head is not None:
            aux_frames, aux_shapes, aux_colours = object_frames(aux_rng, settings.vision_aux_batch,
                                                                adapter.frames_per_step, SAMPLE_HZ)
            aux_loss, aux_acc, _ = aux_head.loss(adapter, aux_frames, aux_shapes, aux_colours)
            total = loss + settings.vision_aux * aux_loss
            tally = window_kinds.setdefault("vision_shape", [0, 0])
            tally[0] += int(round(aux_acc * len(aux_shapes)))
            tally[1] += len(aux_shapes)
        n = len(batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
        optimizer.step()
        step += 1
        samples += n
        window_loss += loss.item() * n
        window_exact += sum(correct)
        window_n += n
        for example, ok in zip(batch, correct):
            tally = window_kinds.setdefault(example.kind, [0, 0])
            tally[0] += int(ok)
            tally[1] += 1
        if step % settings.log_every == 0:
            run_s = time.perf_counter() - started
            record = {"step": step, "loss": window_loss / window_n, "acc": window_exact / window_n,
                      "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed(), 1),
                      "samples_per_s": round(samples / run_s, 1), "worlds": stream.worlds,
                      "progress": round(progress, 4),
                      "acc_by_kind": {k: round(v[0] / v[1], 3) for k, v in sorted(window_kinds.items())}}
            history.append(record)
            print(f"step {step:5d} ({progress:5.1%}) loss {record['loss']:.4f} acc {record['acc']:.3f} "
                  f"lr {record['lr']:.2e} {record['samples_per_s']:.0f} samples/s {elapsed() / 60:.1f} min "
                  + " ".join(f"{k}={v:.2f}" for k, v in record["acc_by_kind"].items()), flush=True)
            window_loss, window_exact, window_n = 0.0, 0, 0
            window_kinds = {}
        if step % settings.save_every == 0:
            _save_checkpoint(checkpoint, model, optimizer, step, stream, batch_rng, settings, history, elapsed(),
                             _aux_state(aux_head, aux_rng, vision_report))
    _save_checkpoint(checkpoint, model, optimizer, step, stream, batch_rng, settings, history, elapsed(),
                     _aux_state(aux_head, aux_rng, vision_report))
    model.eval()
    summary = {"steps": step, "samples_this_run": samples, "wall_s_this_run": round(time.perf_counter() - started, 1),
               "wall_s_total": round(elapsed(), 1), "batch_size": settings.batch_size,
               "parameters": params, "vision_pretrain": vision_report, "history": history}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return adapter, summary


def load_trained(out: str | Path, device: str = "cpu") -> tuple[Qwen2VLAdapter, dict]:
    """Rebuild the model from a training folder's checkpoint (for export without training)."""
    out = Path(out)
    meta = json.loads((out / "settings.json").read_text())
    size = ModelSize(**meta["model"])
    tokenizer = build_tokenizer(list(EXTRA_WORDS), time_text=False)
    model = build_model(tokenizer, size)
    state = torch.load(out / CHECKPOINT_NAME, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    frame_size = int(meta["train"].get("frame_size", FRAME_SIZE))
    return build_adapter(model, tokenizer, frame_size=frame_size), state


def export(adapter: Qwen2VLAdapter, target: str | Path, provenance: dict | None = None) -> Path:
    """Write a `from_pretrained` folder: config, safetensors weights, tokenizer, generation config and
    infinipot.json (frame size, fps) — everything `load_adapter(target)` needs."""
    from transformers import GenerationConfig

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model = adapter.model.to("cpu").float().eval()
    special = _special_ids(adapter.tokenizer)
    model.save_pretrained(target, safe_serialization=True)
    adapter.tokenizer.save_pretrained(target)
    GenerationConfig(eos_token_id=[special["eos"], special["pad"]], pad_token_id=special["pad"],
                     do_sample=False).save_pretrained(target)
    write_infinipot_json(target, frame_size=list(adapter.frame_size), fps=SAMPLE_HZ, builder="infinipot_train.train",
                         position_layout=adapter.position_layout, **(provenance or {}))
    return target


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="infinipot-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/infinipot-tiny", help="training folder (checkpoint, log, summary)")
    p.add_argument("--steps", type=int, default=TrainSettings.steps)
    p.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    p.add_argument("--lr", type=float, default=TrainSettings.lr)
    p.add_argument("--warmup", type=int, default=TrainSettings.warmup)
    p.add_argument("--seed", type=int, default=TrainSettings.seed)
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--save-every", type=int, default=TrainSettings.save_every)
    p.add_argument("--log-every", type=int, default=TrainSettings.log_every)
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="time budget: the schedule (curriculum, LR decay) ends by then even if --steps is not reached")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--kinds", default="", help="train only these question kinds, e.g. colour,presence")
    p.add_argument("--stage-weights", default="",
                   help="fixed mix of the stages single,few,long, e.g. 1,2,4 (default: the curriculum)")
    p.add_argument("--hard-negatives", type=float, default=0.0,
                   help="share of 'no' presence questions turned into a seen colour on an unseen shape")
    p.add_argument("--shape-questions", type=float, default=0.0,
                   help="share of ask times that also get 'What shape was the <colour> object?' (training only)")
    p.add_argument("--older-colour", type=float, default=0.0,
                   help="share of colour questions re-aimed at an older object's shape than the latest one's")
    p.add_argument("--vision-aux", type=float, default=0.0,
                   help="weight of an auxiliary shape/colour loss on the vision tower (training aid, not exported)")
    p.add_argument("--vision-aux-batch", type=int, default=32)
    p.add_argument("--vision-pretrain-steps", type=int, default=0,
                   help="first train the vision tower alone on shape/colour labels for this many steps")
    p.add_argument("--vision-pretrain-lr", type=float, default=TrainSettings.vision_pretrain_lr)
    p.add_argument("--freeze-vision", action="store_true",
                   help="keep the vision tower fixed during answer training (e.g. after --vision-pretrain-steps)")
    p.add_argument("--frame-size", type=int, default=FRAME_SIZE,
                   help="square frame side in px the model sees (multiple of 28; 56 = 4 tokens per frame)")
    p.add_argument("--init-from", default="", help="fine-tune: start from this checkpoint.pt's weights or an exported model folder")
    p.add_argument("--export", default=None, help=f"export the trained model here (e.g. {DEFAULT_EXPORT})")
    p.add_argument("--export-only", action="store_true", help="skip training; export OUT's checkpoint")
    for field in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vision_dim", "vision_depth", "rope_theta"):
        p.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(ModelSize(), field))
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.export_only:
        adapter, state = load_trained(args.out)
        target = export(adapter, args.export or DEFAULT_EXPORT, {"train_steps": int(state["step"])})
        print(f"exported {target}")
        return 0
    settings = TrainSettings(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             warmup=args.warmup, seed=args.seed, device=args.device, threads=args.threads,
                             save_every=args.save_every, log_every=args.log_every, max_minutes=args.max_minutes,
                             kinds=args.kinds, init_from=args.init_from, stage_weights=args.stage_weights,
                             hard_negatives=args.hard_negatives, frame_size=args.frame_size,
                             shape_questions=args.shape_questions, older_colour=args.older_colour,
                             vision_aux=args.vision_aux,
                             vision_aux_batch=args.vision_aux_batch,
                             vision_pretrain_steps=args.vision_pretrain_steps,
                             vision_pretrain_lr=args.vision_pretrain_lr, freeze_vision=args.freeze_vision)
    size = ModelSize(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                     intermediate=args.intermediate, vision_dim=args.vision_dim, vision_depth=args.vision_depth,
                     rope_theta=args.rope_theta)
    adapter, summary = train(settings, resume=args.resume, size=size)
    print(f"trained {summary['steps']} steps ({summary['samples_this_run']} samples, {summary['wall_s_this_run']} s)")
    if args.export:
        target = export(adapter, args.export, {"train_steps": summary["steps"], "seed": settings.seed})
        print(f"exported {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
