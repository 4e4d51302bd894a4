"""Evaluation report: report.json (the data), report.md (a table to read) and PNG plots (to look at).

Why three forms: report.json is the stable, machine-readable result (field names documented in
docs/evaluation.md, kept exactly so scripts and CI can compare runs); the Markdown table answers "which
policy and budget is best for which kind of question" at a glance; the plots show what tables hide: memory
growing without bound for the full cache versus flat under a cap, accuracy against budget, and (the memory
timeline) which moments of the stream each policy still holds at the end, against the questions' evidence.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

__all__ = ["write_report", "markdown_table", "plot_memory", "plot_accuracy", "plot_memory_timeline", "MEMORY_PNG",
           "ACCURACY_PNG", "TIMELINE_PNG"]

MEMORY_PNG = "kv_memory.png"
ACCURACY_PNG = "accuracy_vs_budget.png"
TIMELINE_PNG = "memory_timeline.png"
_MIB = 1024 * 1024


def _label(r: dict[str, Any]) -> str:
    return r["policy"] if r["budget"] is None else f"{r['policy']}@{r['budget']}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _mib(x: int | None) -> str:
    return "–" if not x else f"{x / _MIB:.3f}"


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """Accuracy per policy × budget × tag, peak KV / RSS memory, latencies; one row per run."""
    tags = sorted({t for r in results for t in r.get("accuracy_by_tag", {})},
                  key=lambda t: (t not in ("long_range", "recent"), t))
    head = (["policy", "budget", "n", "accuracy"] + tags + ["evidence hit", "evidence hit long_range"] +
            ["peak KV MiB", "cap MiB", "peak RSS MiB", "TTFT ms (mean)", "answer ms (p95)", "ingest ms/frame",
             "compressions"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        by_tag = r.get("accuracy_by_tag", {})
        row = ([r["policy"], "–" if r["budget"] is None else str(r["budget"]), str(r["n_questions"]),
                _pct(r["accuracy"])] + [_pct(by_tag.get(t)) for t in tags] +
               [_pct(r.get("evidence_hit_rate")), _pct((r.get("evidence_hit_rate_by_tag") or {}).get("long_range"))] +
               [_mib(r["peak_kv_bytes"]), _mib(r["cap_bytes"]), _mib(r.get("peak_rss_bytes")),
                _ms(r["ttft_ms_mean"]), _ms(r["answer_ms_p95"]), _ms(r.get("ingest_ms_per_frame")),
                str(r.get("compressions", "–"))])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_memory(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """KV-cache bytes over stream time, one line per run, caps dashed in the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        pts = r["kv_bytes_over_time"]
        (line,) = ax.plot([p[0] for p in pts], [p[1] / _MIB for p in pts], label=_label(r), linewidth=1.2)
        if r["cap_bytes"]:
            ax.axhline(r["cap_bytes"] / _MIB, color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_xlabel("stream time (s)")
    ax.set_ylabel("KV cache (MiB)")
    ax.set_title("KV-cache memory over the stream (dashed: hard cap)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Accuracy against budget per capped policy; the uncapped full cache as a horizontal reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    policies = list(dict.fromkeys(r["policy"] for r in results if r["budget"] is not None))
    for policy in policies:
        runs = sorted((r for r in results if r["policy"] == policy and r["accuracy"] is not None),
                      key=lambda r: r["budget"])
        ax.plot([r["budget"] for r in runs], [r["accuracy"] for r in runs], marker="o", label=policy)
    for r in results:
        if r["budget"] is None and r["accuracy"] is not None:
            ax.axhline(r["accuracy"], color="black", linestyle=":", label=f"{r['policy']} (uncapped)")
    budgets = sorted({r["budget"] for r in results if r["budget"] is not None})
    if len(budgets) > 1 and budgets[0] > 0 and budgets[-1] / budgets[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("budget |M| (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Accuracy vs. KV budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _innermost(spans: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """Distinct spans that contain no other span: the single events, not a count question's covering span."""
    unique = sorted({(float(lo), float(hi)) for lo, hi in spans})
    return [a for a in unique if not any(b != a and a[0] <= b[0] and b[1] <= a[1] for b in unique)]


def plot_memory_timeline(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Tokens kept per stream second at the end of the stream, one row per run, evidence spans shaded.

    Each held frame's tokens are counted in the second its first raw frame falls in; the shaded bands are
    the questions' evidence spans (the innermost ones: the events asked about, not the covering span of a
    count question), so a glance shows which policy still holds traces of old events and which holds only
    the recent past."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = [r for r in results if r.get("memory_timeline")]
    end = max([r["memory_timeline"].get("at_s", 0.0) for r in runs] + [1.0])
    seconds = int(np.ceil(end)) + 1
    fig, axes = plt.subplots(max(len(runs), 1), 1, figsize=(9, 0.5 + 1.25 * max(len(runs), 1)), sharex=True,
                             squeeze=False)
    peak = max([sum(f[2] for f in r["memory_timeline"]["frames"] if int(f[0]) == s) for r in runs
                for s in range(seconds)] + [1.0])
    for ax, r in zip(axes[:, 0], runs):
        timeline = r["memory_timeline"]
        per_second = np.zeros(seconds)
        for start, _end, tokens in timeline["frames"]:
            if 0 <= start < seconds:
                per_second[int(start)] += tokens
        for lo, hi in _innermost(timeline.get("evidence_spans", [])):
            ax.axvspan(lo, hi, color="tab:orange", alpha=0.3, linewidth=0)
        ax.bar(np.arange(seconds) + 0.5, per_second, width=1.0, color="tab:blue")
        held = sum(f[2] for f in timeline["frames"])
        ax.set_ylim(0, peak * 1.1)
        ax.text(0.005, 0.95, f"{_label(r)}: {held:.0f} tokens of {len(timeline['frames'])} frames",
                transform=ax.transAxes, fontsize=8, va="top")
        ax.set_yticks([0, round(peak)])
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlim(0, seconds)
    axes[-1, 0].set_xlabel("stream time (s) of the frames still held at the end (orange: questions' evidence)")
    fig.supylabel("tokens kept per second", fontsize=9)
    fig.suptitle("What the memory holds at the end of the stream", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: Sequence[dict[str, Any]], out_dir: str | Path, meta: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write report.json, report.md and the plots into `out_dir`; return their paths by name.

    `extra`: further top-level keys of report.json (e.g. the suite's per-bag entries)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "memory_png": out / MEMORY_PNG,
             "accuracy_png": out / ACCURACY_PNG, "timeline_png": out / TIMELINE_PNG}
    doc = {"results": list(results), "meta": dict(meta or {}), **(extra or {})}
    paths["json"].write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    plot_memory(results, paths["memory_png"])
    plot_accuracy(results, paths["accuracy_png"])
    plot_memory_timeline(results, paths["timeline_png"])
    meta_lines = [f"- {k}: `{v}`" for k, v in (meta or {}).items()]
    md = ["# InfiniPot evaluation report", "", *meta_lines, "", markdown_table(results), "",
          f"![KV memory over stream time]({MEMORY_PNG})", "", f"![Accuracy vs budget]({ACCURACY_PNG})", "",
          f"![What the memory holds]({TIMELINE_PNG})", ""]
    paths["md"].write_text("\n".join(md), encoding="utf-8")
    return paths
