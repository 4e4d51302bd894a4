"""Move cached keys to new rotary positions by rotating them: the exact RoPE shift, for any position layout.

Why: keys are cached AFTER RoPE. Rotary embedding turns each frequency pair (x_j, x_{j+D/2}) of a key by
the angle p·θ_j (p the token's position in that pair's row), so a key written at p equals the same key
written at p' rotated by (p' − p)·θ_j: R(a') = R(a' − a)·R(a). Re-anchoring positions over an endless
stream (see `StreamingSession`) therefore needs no pre-RoPE cache and no re-prefill. Facts: RoPE (Su et al.,
arXiv 2104.09864); M-RoPE (Qwen2-VL, arXiv 2409.12191) splits the D/2 frequencies into sections
(`mrope_section`, e.g. [16, 24, 24]) and gives section i the position row i (temporal, height, width).

This module knows nothing about frames or layouts: it takes the keys, their current and new position ids
per row, and the model's rotary settings. Which rows move by how much is the adapter's decision.

Exactness: transformers computes each angle in float32 as float32(position) · float32(θ_j). The rotation
here is by the difference of those two float32 angles, evaluated in float64, so the rotated key carries the
very angle a prefill at the new position would have used (up to one float32 cos/sin evaluation).
`attention_scaling` (YaRN and similar) multiplies cos and sin, i.e. the cached key, by a constant; a rotation
commutes with it, so it needs no correction (it is accepted so callers can pass the whole config).
Rope types whose frequencies change with the sequence length (dynamic NTK, LongRoPE) are not pure rotations
of fixed frequencies and are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["RotaryConfig", "rotary_config_from", "rotate_keys"]

#: rope types whose inverse frequencies are fixed after initialisation (a position shift is a rotation)
FIXED_FREQUENCY_ROPE_TYPES = ("default", "linear", "yarn", "llama3")


@dataclass(frozen=True)
class RotaryConfig:
    """What the rotation needs from a model's rotary embedding.

    inv_freq: (D/2,) θ_j, as the model's rotary module holds them (float32).
    sections: rotary sections over the D/2 frequencies, section i using position row i % len(sections)
        (M-RoPE's `mrope_section`); None = one row for all frequencies (1-D RoPE).
    attention_scaling: the model's cos/sin factor; cancels in a rotation (module doc).
    """

    inv_freq: torch.Tensor
    sections: tuple[int, ...] | None = None
    attention_scaling: float = 1.0
    #: Qwen3-VL's interleaved M-RoPE: frequency j uses row h if j % 3 == 1 and j < 3·sections[1], row w if
    #: j % 3 == 2 and j < 3·sections[2], else row t (transformers `Qwen3VLTextRotaryEmbedding.
    #: recomposition_frequencies`); False = contiguous sections (Qwen2-VL / Qwen2.5-VL)
    interleaved: bool = False

    def __post_init__(self) -> None:
        if self.inv_freq.dim() != 1:
            raise ValueError(f"inv_freq must be 1-D (D/2,), got shape {tuple(self.inv_freq.shape)}")
        if self.sections is not None and sum(self.sections) != self.inv_freq.numel():
            raise ValueError(f"rotary sections {self.sections} do not sum to D/2 = {self.inv_freq.numel()}")

    @property
    def rows(self) -> int:
        """Position rows the layout has (3 for M-RoPE, 1 for 1-D RoPE)."""
        return 1 if self.sections is None else len(self.sections)

    def row_of_frequency(self) -> torch.Tensor:
        """(D/2,) int64: which position row drives each frequency."""
        if self.sections is None:
            return torch.zeros(self.inv_freq.numel(), dtype=torch.long)
        if self.interleaved:
            rows = torch.zeros(self.inv_freq.numel(), dtype=torch.long)
            for row in range(1, len(self.sections)):
                rows[row: 3 * self.sections[row]: 3] = row
            return rows
        return torch.cat(
            [torch.full((size,), i % len(self.sections), dtype=torch.long) for i, size in enumerate(self.sections)]
        )


def rotary_config_from(rotary_module: torch.nn.Module, sections: Sequence[int] | None = None) -> RotaryConfig:
    """The `RotaryConfig` of a transformers rotary embedding module (`model.rotary_emb`).

    `sections` defaults to the module's own `mrope_section` if it has one. Raises NotImplementedError for rope
    types whose frequencies depend on the sequence length."""
    rope_type = str(getattr(rotary_module, "rope_type", "default"))
    if rope_type not in FIXED_FREQUENCY_ROPE_TYPES:
        raise NotImplementedError(
            f"rope_type {rope_type!r} changes its frequencies with the length; cached keys cannot be re-anchored "
            f"by a fixed rotation (supported: {', '.join(FIXED_FREQUENCY_ROPE_TYPES)})"
        )
    if sections is None:
        sections = getattr(rotary_module, "mrope_section", None)
    inv_freq = rotary_module.inv_freq.detach().to(device="cpu", dtype=torch.float32)
    return RotaryConfig(
        inv_freq=inv_freq,
        sections=None if sections is None else tuple(int(s) for s in sections),
        attention_scaling=float(getattr(rotary_module, "attention_scaling", 1.0)),
    )


def _angles(positions: torch.Tensor, inv_freq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(..., n, D/2) float32 angles as transformers computes them: float32(position row of j) · θ_j."""
    per_frequency = positions.index_select(-2, rows)  # (..., D/2, n)
    return per_frequency.transpose(-1, -2).to(torch.float32) * inv_freq


def rotate_keys(
    keys: torch.Tensor, old_positions: torch.Tensor, new_positions: torch.Tensor, config: RotaryConfig
) -> torch.Tensor:
    """Keys (..., n, D) cached at `old_positions`, rotated to `new_positions`; both (..., rows, n) integer.

    Leading dimensions (e.g. KV heads) broadcast between keys and positions. Tokens whose positions do not
    change come back bit-identical. Returns a new tensor in the keys' dtype."""
    if keys.shape[-1] != 2 * config.inv_freq.numel():
        raise ValueError(f"keys have head_dim {keys.shape[-1]}, the rotary config covers {2 * config.inv_freq.numel()}")
    if old_positions.shape != new_positions.shape or old_positions.shape[-2] != config.rows:
        raise ValueError(
            f"positions must both be (..., {config.rows}, n), got {tuple(old_positions.shape)} and "
            f"{tuple(new_positions.shape)}"
        )
    device = keys.device
    inv_freq = config.inv_freq.to(device)
    rows = config.row_of_frequency().to(device)
    old = old_positions.to(device=device, dtype=torch.long)
    new = new_positions.to(device=device, dtype=torch.long)
    delta = _angles(new, inv_freq, rows).double() - _angles(old, inv_freq, rows).double()  # (..., n, D/2)
    cos, sin = delta.cos(), delta.sin()
    half = config.inv_freq.numel()
    k = keys.double()
    first, second = k[..., :half], k[..., half:]
    # rotate_half convention: (x1, x2) -> (x1 cos − x2 sin, x2 cos + x1 sin), frequency j pairs j and j + D/2.
    rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1).to(keys.dtype)
    unchanged = (old == new).all(dim=-2).unsqueeze(-1)  # (..., n, 1)
    return torch.where(unchanged, keys, rotated)
