"""Token scorers: each rates evictable KV tokens per head (higher = keep).

`infinipot.selection` does the rest (budgets, protected tokens, the per-head gather).
"""
from infinipot.scorers.base import Scorer, ScoringContext
from infinipot.scorers.recency import RecencyScorer
from infinipot.scorers.tar import TaRScorer
from infinipot.scorers.uniform import UniformScorer
from infinipot.scorers.van import VaNScorer, van_pooling_for_layer

__all__ = [
    "Scorer",
    "ScoringContext",
    "TaRScorer",
    "VaNScorer",
    "UniformScorer",
    "RecencyScorer",
    "van_pooling_for_layer",
]
