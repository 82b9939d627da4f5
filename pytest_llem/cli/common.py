"""What every command shares: the usage error, JSON on stdout, aligned text tables.

Kept free of numpy, scipy and pydantic so that ``--help`` and ``ls`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: What ``add_subparsers`` returns: each command module adds its parser to it.
Commands = argparse._SubParsersAction  # the class argparse gives no public name


class UsageProblem(Exception):
    """A command cannot do what was asked (a path that is not there, a rule it cannot read): exit 2.

    The message names what is wrong and where; the dispatcher prints it without a traceback.
    """


def existing_path(path: Path, what: str) -> Path:
    """``path`` when it exists; otherwise a :class:`UsageProblem` naming it and what was expected."""
    if not path.exists():
        raise UsageProblem(f"{what} {path} does not exist")
    return path


def _plain(value: Any) -> Any:
    """JSON-safe: paths as strings, NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(payload: dict[str, Any]) -> None:
    """``payload`` as one JSON document on stdout: what ``--json`` promises a script."""
    sys.stdout.write(json.dumps(_plain(payload), indent=2, default=str, allow_nan=False) + "\n")


def emit_lines(lines: Sequence[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))


def fmt(value: Any, spec: str) -> str:
    """A figure as the terminal tables show it; ``-`` where there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    """Rows under a header and a rule; ``align`` holds ``l`` or ``r`` per column (names left, figures right).

    Columns beyond ``align`` are right-aligned, except the first, which is a name.
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    sides = [align[i] if i < len(align) else ("l" if i == 0 else "r") for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [c.ljust(w) if side == "l" else c.rjust(w) for c, w, side in zip(cells, widths, sides)]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def separator(title: str, width: int = 80) -> str:
    """``----- title -----`` as pytest's terminal summary writes a section's title."""
    return f" {title} ".center(width, "-")
