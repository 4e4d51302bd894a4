"""Evidence of an answer: which held frames it drew on, read from the answer's own attention.

Why attention and how: every slot of the store knows its temporal frame (`FixedKVStore.metadata`), so the
attention the answer pays to the cached visual tokens, summed per frame, says which moments of the stream
the answer rests on. The weights come from the very forward that produces the answer, through
transformers' own attention interface: `install_probe` switches the language model's
`config._attn_implementation` to a registered function (`AttentionInterface.register`) that calls the
original implementation unchanged (same outputs, bit for bit: logits and cache are untouched) and, only
while an `AttentionRecorder` is active (`recording`), also computes the softmax of the last query row,
which is the row that chooses the next answer token. Nothing is run twice.

What is summed (the documented choice, `SessionConfig.evidence_layers` / `evidence_tokens`):
* rows: the last query row of the first `evidence_tokens` forwards of the answer (default 1: the
  question's prefill, whose last row picks the first answer token; 0 = every answer token, one decoding
  step each, weighted equally). The first token is the default because it carries the answer in short
  replies ("red", "yes") and, measured on the built-in model over 120-s synthetic streams (seeds 200-209,
  full cache), its strongest frame hit the question's evidence more often than all tokens' (0.83 vs 0.77);
* heads: every query head; query head h reads KV head h // (query heads / KV heads) (GQA, as
  transformers' `repeat_kv` lays them out), and the store keeps per-KV-head different tokens after
  compression, so columns are mapped to frames per KV head;
* layers: "all" (default), "upper" (the upper half, layers >= L // 2) or "last" (same measurement:
  0.83 / 0.83 / 0.85; "all" is kept as the default that assumes least about a model).
A frame's weight is its attention mass divided by the mass on all visual tokens (the text prefix and the
question are left out), so the weights of all held frames sum to 1 and a top-k list sums to at most 1.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch

__all__ = [
    "PROBE_PREFIX",
    "EVIDENCE_LAYER_SETS",
    "EvidenceFrame",
    "AttentionRecorder",
    "install_probe",
    "probe_installed",
    "recording",
    "select_layers",
    "frame_weights",
    "top_evidence",
]

#: prefix of the registered attention implementations; the suffix names the wrapped one ("...+sdpa")
PROBE_PREFIX = "infinipot_evidence+"
#: the layer sets `SessionConfig.evidence_layers` may name
EVIDENCE_LAYER_SETS: tuple[str, ...] = ("all", "upper", "last")


@dataclass(frozen=True)
class EvidenceFrame:
    """One held temporal frame an answer drew on: its stream-time span and its share of the attention."""

    start: float  # stream seconds (node: header stamp) of the frame's first raw frame
    end: float  # ... of its last raw frame (Qwen2-VL: a temporal frame is 2 raw frames)
    weight: float  # share of the answer's attention over visual tokens, in [0, 1]
    frame_id: int  # the session's temporal frame id


class AttentionRecorder:
    """Collects, per layer, the summed last-row attention probabilities (query heads x kv length)."""

    def __init__(self, layers: frozenset[int], max_forwards: int = 0) -> None:
        self.layers = layers
        self.max_forwards = max_forwards  # record the first n forwards of the answer; 0 = all
        #: layer -> list of (query heads, kv length) float32 tensors, one per recorded forward
        self.rows: dict[int, list[torch.Tensor]] = {}

    def wants(self, layer_idx: object) -> bool:
        if layer_idx not in self.layers:
            return False
        return not self.max_forwards or len(self.rows.get(layer_idx, ())) < self.max_forwards  # type: ignore[arg-type]

    def add(self, layer_idx: int, probs: torch.Tensor) -> None:
        self.rows.setdefault(layer_idx, []).append(probs)

    @property
    def forwards(self) -> int:
        """Forwards recorded (answer tokens whose choice was observed)."""
        return max((len(v) for v in self.rows.values()), default=0)


_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar("infinipot_evidence", default=None)


@contextlib.contextmanager
def recording(recorder: AttentionRecorder | None) -> Iterator[AttentionRecorder | None]:
    """Record last-row attention into `recorder` for forwards run inside the block (this thread only).
    `None` records nothing, so callers need no branch."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def _last_row_probs(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                    scaling: float | None) -> torch.Tensor:
    """Softmax of the last query row against all keys, (query heads, kv length), float32.

    query (1, Hq, q, D), key (1, Hkv, L, D). The last row of a causal block sees every key; a 4-D mask's
    last row (bool or additive) is applied anyway, so padding or window masks would be honoured."""
    heads, dim = int(query.shape[1]), int(query.shape[-1])
    kv_heads, length = int(key.shape[1]), int(key.shape[2])
    q = query[0, :, -1, :].float().view(kv_heads, heads // kv_heads, dim)
    scores = torch.einsum("gnd,gld->gnl", q, key[0].float()) * (dim ** -0.5 if scaling is None else scaling)
    if attention_mask is not None and attention_mask.dim() == 4:
        row = attention_mask[0, :, -1, :length]  # (1 or H, L)
        row = row.view(-1, 1, length) if row.shape[0] == 1 else row.view(kv_heads, -1, length)
        scores = scores.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else scores + row.float()
    return torch.softmax(scores, dim=-1).reshape(heads, length)


def _probe(base: Callable) -> Callable:
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        recorder = _ACTIVE.get()
        layer_idx = getattr(module, "layer_idx", None)
        if recorder is not None and recorder.wants(layer_idx):
            with torch.no_grad():
                recorder.add(int(layer_idx), _last_row_probs(query, key, attention_mask, kwargs.get("scaling")))
        return base(module, query, key, value, attention_mask, *args, **kwargs)

    return attention


def _register(base_name: str) -> str:
    """Register the probe around `base_name` (attention + mask function) once; return its name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    name = PROBE_PREFIX + base_name
    if name in ALL_ATTENTION_FUNCTIONS:
        return name
    if base_name == "eager":  # not in the registry: models pass their own; Llama's is the common one
        from transformers.models.llama.modeling_llama import eager_attention_forward as base
    elif base_name in ALL_ATTENTION_FUNCTIONS:
        base = ALL_ATTENTION_FUNCTIONS[base_name]
    else:
        raise ValueError(f"cannot record evidence around attention implementation {base_name!r}")
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base_name])
    AttentionInterface.register(name, _probe(base))
    return name


def install_probe(config: object) -> str:
    """Route the attention of the model whose (text) config is `config` through the probe; idempotent.

    Only this config changes (the vision tower keeps its own); outputs are those of the wrapped
    implementation. Returns the probe's name."""
    current = str(getattr(config, "_attn_implementation", None) or "sdpa")
    if current.startswith(PROBE_PREFIX):
        return current
    name = _register(current)
    config._attn_implementation = name  # type: ignore[attr-defined]
    return name


def probe_installed(config: object) -> bool:
    return str(getattr(config, "_attn_implementation", "")).startswith(PROBE_PREFIX)


def select_layers(spec: str, num_layers: int) -> frozenset[int]:
    """Layer indices of a documented layer set ("all", "upper", "last"); ValueError otherwise."""
    if spec == "all":
        return frozenset(range(num_layers))
    if spec == "upper":
        return frozenset(range(num_layers // 2, num_layers))
    if spec == "last":
        return frozenset({num_layers - 1})
    raise ValueError(f"evidence_layers must be one of {EVIDENCE_LAYER_SETS}, got {spec!r}")


def frame_weights(recorder: AttentionRecorder, store: object, length: int) -> dict[int, float]:
    """frame_id -> share of the recorded attention over the visual tokens in slots [0, length).

    `store` is the `FixedKVStore` the attention ran over, already rolled back to `length` slots (its
    metadata of those slots is what the forwards saw)."""
    mass: torch.Tensor | None = None
    frames: torch.Tensor | None = None
    for layer_idx, rows in recorder.rows.items():
        _, frame_id, _ = store.metadata(layer_idx)  # type: ignore[attr-defined]
        frame_id = frame_id[:, :length]
        kv_heads = int(frame_id.shape[0])
        summed = torch.stack([r[:, :length] for r in rows]).sum(0)  # (Hq, length)
        per_kv = summed.view(kv_heads, -1, length).sum(1).to(frame_id.device)  # GQA: query heads -> KV head
        visual = frame_id >= 0
        ids, w = frame_id[visual], per_kv[visual]
        frames = ids if frames is None else torch.cat([frames, ids])
        mass = w if mass is None else torch.cat([mass, w])
    if mass is None or frames is None or frames.numel() == 0:
        return {}
    unique, inverse = torch.unique(frames, return_inverse=True)
    per_frame = torch.zeros(unique.shape[0], dtype=torch.float64).index_add_(0, inverse.cpu(), mass.double().cpu())
    total = float(per_frame.sum())
    if total <= 0:
        return {}
    return {int(f): float(m) / total for f, m in zip(unique.tolist(), per_frame.tolist())}


def top_evidence(weights: Mapping[int, float], stamps: Mapping[int, tuple[float, float]],
                 limit: int) -> tuple[EvidenceFrame, ...]:
    """The `limit` strongest frames, strongest first (ties: the older frame first)."""
    ranked = sorted((f for f in weights if f in stamps), key=lambda f: (-weights[f], f))[: max(limit, 0)]
    return tuple(EvidenceFrame(stamps[f][0], stamps[f][1], weights[f], f) for f in ranked)
