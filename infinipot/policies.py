"""Compression policies by name: which scorers rate the tokens and how the budget is split.

Why: the paper's method and its baselines (full cache, sliding window, uniform, TaR only, VaN only) differ
only in scores and budget shares, so each is a `CompressionPolicy` value that the one selection routine
(`infinipot.selection`) applies. A name is what users put in a config file or ROS parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

from infinipot.errors import PolicyError
from infinipot.scorers import RecencyScorer, Scorer, TaRScorer, UniformScorer, VaNScorer

__all__ = ["CompressionPolicy", "make_policy", "POLICY_NAMES"]

#: every name `make_policy` accepts; "full" means no cap (no policy)
POLICY_NAMES: tuple[str, ...] = ("full", "infinipot", "tar", "van", "uniform", "sliding_window")


@dataclass(frozen=True)
class CompressionPolicy:
    """How one compression pass chooses the tokens to keep (see `infinipot.selection`).

    primary: its top scores are forced in. With a secondary scorer the primary gets the share `tar_share` of
        the budget (recent-frame tokens included, as TaR's share does in the paper); without one it fills
        everything the recent frames leave.
    secondary: fills the rest of the budget with its top scores (VaN in InfiniPot-V), or None.
    recent_ratio: the newest share of frames that is always kept (TaR's query frames); 0 = none.
    """

    name: str
    primary: Scorer
    secondary: Scorer | None = None
    recent_ratio: float = 0.25
    tar_share: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.recent_ratio < 1.0:
            raise PolicyError(f"recent_ratio must be in [0, 1), got {self.recent_ratio}")
        if not 0.0 <= self.tar_share <= 1.0:
            raise PolicyError(f"tar_share must be in [0, 1], got {self.tar_share}")


def make_policy(
    name: str, *, recent_ratio: float = 0.25, tar_share: float = 0.5, van_pooling: bool = True
) -> CompressionPolicy | None:
    """The policy called `name` (one of POLICY_NAMES); None for "full" (the uncapped baseline).

    recent_ratio applies to the policies that protect recent frames (infinipot, tar, van); the uniform and
    sliding-window baselines protect none. tar_share applies to infinipot.
    """
    key = name.strip().lower().replace("-", "_")
    if key == "full":
        return None
    if key == "infinipot":
        return CompressionPolicy(key, TaRScorer(), VaNScorer(pooling=van_pooling), recent_ratio, tar_share)
    if key == "tar":
        return CompressionPolicy(key, TaRScorer(), None, recent_ratio, 1.0)
    if key == "van":
        return CompressionPolicy(key, VaNScorer(pooling=van_pooling), None, recent_ratio, 1.0)
    if key == "uniform":
        return CompressionPolicy(key, UniformScorer(), None, 0.0, 1.0)
    if key == "sliding_window":
        return CompressionPolicy(key, RecencyScorer(), None, 0.0, 1.0)
    raise PolicyError(f"unknown policy {name!r}; valid names: {', '.join(POLICY_NAMES)}")
