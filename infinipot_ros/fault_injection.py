"""Deliberate faults for reliability tests: failing model calls and malformed camera messages.

Why this exists in the package (not only in tests): the recovery path of the node (see worker.py,
`on_model_error`) must be exercised in the *real* node process, with the real model, over real ROS. A
test cannot reach into another process to patch it, so the node's model loader reads
``INFINIPOT_FAULT_INJECTION`` and, when set, wraps the adapter's model calls so that chosen calls raise a
genuine exception (``RuntimeError`` or ``torch.cuda.OutOfMemoryError``, constructed as torch would). The
variable is unset in production, and then nothing here is imported by the node at all.

Plan syntax (``;`` separates several rules)::

    <error>@<method>:<n>[,<n>...]     e.g.  oom@forward:4     runtime@forward:3,7    runtime@encode_frames:2

``<error>`` is ``runtime`` or ``oom``; ``<method>`` is an adapter method (``forward``: every language-model
pass: the prompt prefix, each block of frames, each question and answer token; ``encode_frames``: the vision
encoder); ``<n>`` counts that method's calls from 1 since the adapter was loaded.

Malformed camera messages for the stress tool and the DDS tests live one layer up, in
`infinipot_eval.malformed`: they are sent to the node from outside, not injected into it.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable


__all__ = [
    "ENV_VAR",
    "FaultPlan",
    "FaultRule",
    "PREFIX",
    "install",
    "install_from_env",
    "make_error",
]

#: Environment variable the node's model loader reads (see worker.load_sessions).
ENV_VAR = "INFINIPOT_FAULT_INJECTION"

_ERRORS = ("runtime", "oom")


#: Injected errors are plain RuntimeError / OutOfMemoryError instances whose message contains this, so
#: logs show they were deliberate.
PREFIX = "injected fault"


def make_error(kind: str, where: str) -> BaseException:
    """A real exception of the kind a failing model call raises (nothing mocked: torch's own OOM class)."""
    if kind == "oom":
        import torch

        return torch.cuda.OutOfMemoryError(
            f"CUDA out of memory ({PREFIX} in {where}). Tried to allocate 2.00 GiB; 0 bytes free"
        )
    if kind == "runtime":
        return RuntimeError(f"{PREFIX} in {where}")
    raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(_ERRORS)}")


@dataclass(frozen=True)
class FaultRule:
    """Raise `error` on the listed (1-based) calls of `method`."""

    error: str
    method: str
    calls: frozenset[int]


@dataclass
class FaultPlan:
    """Parsed rules plus per-method call counters (shared by every session using the adapter)."""

    rules: list[FaultRule] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def parse(cls, text: str) -> "FaultPlan":
        """Parse ``oom@forward:4;runtime@encode_frames:2,5``; ValueError with the reason otherwise."""
        rules = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            try:
                error, rest = part.split("@", 1)
                method, numbers = rest.split(":", 1)
                calls = frozenset(int(n) for n in numbers.split(",") if n.strip())
            except ValueError as err:
                raise ValueError(f"bad fault rule {part!r} (want <error>@<method>:<n>[,<n>...])") from err
            if error not in _ERRORS:
                raise ValueError(f"bad fault rule {part!r}: error must be one of {', '.join(_ERRORS)}")
            if not calls or min(calls) < 1:
                raise ValueError(f"bad fault rule {part!r}: call numbers start at 1")
            rules.append(FaultRule(error, method, calls))
        return cls(rules)

    def before_call(self, method: str) -> None:
        """Count one call of `method`; raise the planned error when this call number is listed."""
        with self._lock:
            n = self.counts.get(method, 0) + 1
            self.counts[method] = n
            rule = next((r for r in self.rules if r.method == method and n in r.calls), None)
            if rule is not None:
                self.fired.append(f"{rule.error}@{method}:{n}")
        if rule is not None:
            raise make_error(rule.error, f"{method} call {n}")


def install(adapter: Any, plan: FaultPlan) -> Any:
    """Wrap the adapter's methods named in `plan` (on this instance only); returns the adapter."""
    for method in {r.method for r in plan.rules}:
        original: Callable[..., Any] = getattr(adapter, method)

        def wrapped(*args: Any, _original: Callable[..., Any] = original, _method: str = method,
                    **kwargs: Any) -> Any:
            plan.before_call(_method)
            return _original(*args, **kwargs)

        setattr(adapter, method, wrapped)
    adapter.fault_plan = plan
    return adapter


def install_from_env(adapter: Any, logger: Any = None) -> Any:
    """Apply ``$INFINIPOT_FAULT_INJECTION`` to `adapter` if set (a warning says so); else return it as is."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return adapter
    plan = FaultPlan.parse(text)
    if logger is not None:
        logger.warning(f"fault injection active ({ENV_VAR}={text!r}): model calls will fail on purpose")
    return install(adapter, plan)
