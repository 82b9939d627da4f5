"""The cells' quality warnings, grouped so a user sees each distinct one once, with the cells it hit.

A record's ``warnings`` carry figures of their own cell ("... in 27 % of the window's samples",
"latency was stable (CV 0.94)"), so eight cells with one problem give eight different strings.
They are grouped on their text with numbers and GPU UUIDs blanked out; the first cell's text
stands for the group.

Some warnings say the cell's figures should not be trusted as they are (the warm-up never
settled, the window was too short for the counter, counter and sampled power disagree, the GPU
was still heating, idle power moved): those cells are marked in the tables. Others describe
the conditions (clocks capped by the power limit, a host-bound cell, persistence mode off, an
idle baseline re-measured after a drift) and are listed without a mark; a figure that could not
be made at all is null in the tables already.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Beginnings (after a "GPU <uuid>: " prefix) of warnings that make a cell's figures unreliable.
UNRELIABLE_PREFIXES: tuple[str, ...] = (
    "warm-up stopped",
    "short window",
    "measured window",
    "energy counter",
    "temperature rose",
)

_GPU_PREFIX = re.compile(r"^GPU \S+: ")
_UUID = re.compile(r"GPU-[0-9a-fA-F-]+")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")


def warning_key(text: str) -> str:
    """The warning with its cell's figures blanked out: equal for one problem in many cells."""
    return _NUMBER.sub("#", _UUID.sub("GPU-…", text))


def is_unreliable(text: str) -> bool:
    """Whether the warning says the cell's figures should not be trusted as they are."""
    return _GPU_PREFIX.sub("", text).startswith(UNRELIABLE_PREFIXES)


@dataclass
class WarningGroup:
    """One distinct warning and the cells that carry it."""

    text: str  # the first cell's wording
    unreliable: bool
    cells: list[str] = field(default_factory=list)


def group_warnings(records: Iterable[Mapping[str, Any]]) -> list[WarningGroup]:
    """Each distinct warning of the records, in order of first appearance, with its cells."""
    groups: dict[str, WarningGroup] = {}
    for record in records:
        cell = str(record.get("experiment_id", "?"))
        for text in record.get("warnings") or []:
            group = groups.setdefault(warning_key(str(text)), WarningGroup(str(text), is_unreliable(str(text))))
            if cell not in group.cells:
                group.cells.append(cell)
    return list(groups.values())


def unreliable_cells(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """The experiment ids of cells with a warning that makes their figures unreliable."""
    return {
        str(r.get("experiment_id")) for r in records if any(is_unreliable(str(w)) for w in r.get("warnings") or [])
    }


def render_warnings(groups: list[WarningGroup], max_cells: int = 6) -> list[str]:
    """Lines for the terminal: each distinct warning once, marked ``!`` when it makes figures unreliable."""
    lines: list[str] = []
    for group in sorted(groups, key=lambda g: not g.unreliable):
        shown = ", ".join(group.cells[:max_cells]) + (f", +{len(group.cells) - max_cells} more" if len(group.cells) > max_cells else "")
        mark = "!" if group.unreliable else "-"
        lines.append(f"{mark} {group.text} [{len(group.cells)} cell{'s' if len(group.cells) != 1 else ''}: {shown}]")
    return lines
