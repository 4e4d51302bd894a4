"""The README's parameter table, generated from `parameters.PARAMETERS` so the docs cannot drift.

`python -m infinipot_ros.params_doc` prints the table; a test checks the README holds exactly this text.
"""
from __future__ import annotations

from .parameters import PARAMETERS, ParamSpec

__all__ = ["markdown_table"]


def _row(spec: ParamSpec) -> str:
    text = spec.description
    if spec.min_value is not None and spec.max_value is not None:
        text += f" Range {spec.min_value:g} to {spec.max_value:g}."
    if spec.choices:
        text += f" One of: {', '.join(spec.choices)}."
    kind = "string[]" if isinstance(spec.default, (list, tuple)) else type(spec.default).__name__
    changeable = "runtime" if not spec.read_only else "start-up"
    return f"| `{spec.name}` | {kind} | `{spec.default!r}` | {changeable} | {text.replace('|', '&#124;')} |"


def markdown_table() -> str:
    """Markdown table of every node parameter: name, type, default, when it can change, description."""
    lines = ["| parameter | type | default | set at | description |", "| --- | --- | --- | --- | --- |"]
    lines += [_row(spec) for spec in PARAMETERS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
