"""Typed errors of the engine.

Why a small hierarchy: callers (the ROS node, the evaluation driver) catch `InfiniPotError` to keep a
session alive and report the message, while the second base (ValueError / RuntimeError) keeps the errors
meaningful to generic code that does not know this package. See docs/architecture.md.
"""
from __future__ import annotations

__all__ = [
    "InfiniPotError",
    "FrameError",
    "BudgetError",
    "PolicyError",
    "QuestionError",
    "SessionStateError",
    "CacheCapacityError",
]


class InfiniPotError(Exception):
    """Base of every error the engine raises on purpose."""


class FrameError(InfiniPotError, ValueError):
    """A frame with a bad shape, dtype or time stamp."""


class BudgetError(InfiniPotError, ValueError):
    """A cache budget that cannot work (e.g. smaller than the protected prefix plus one block)."""


class PolicyError(InfiniPotError, ValueError):
    """An unknown compression policy or a bad policy setting."""


class QuestionError(InfiniPotError, ValueError):
    """An empty or oversized question."""


class SessionStateError(InfiniPotError, RuntimeError):
    """An operation the session cannot do in its current state (e.g. a question before any frame)."""


class CacheCapacityError(InfiniPotError, RuntimeError):
    """A write that would exceed the KV store's fixed capacity.

    This is a bug in the caller: the session compresses before the store can fill up.
    """
