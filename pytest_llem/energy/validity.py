"""What makes an energy figure impossible, and the error that replaces it.

A GPU that ran a workload for a window used energy: a window of 0 J means the counter did not
move (stuck, or a window shorter than its update period), a negative one that it went back
(reset by a driver reload or a GPU reset), and a non-finite one a broken reading. None of them
may be recorded, since 0 J passes every ``max:`` limit and every gate: the meter raises
:class:`~pytest_llem.errors.MeasurementInvalid` instead, in the cell's child, and the parent
turns that into a failed cell naming the reason. The same holds for idle power, which is
subtracted: 0 W would subtract nothing and a negative figure would add energy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pytest_llem.errors import MeasurementInvalid


def is_positive_finite(value: float) -> bool:
    """Finite and above zero: the only energies (or idle powers) a GPU can have used."""
    return math.isfinite(value) and value > 0.0


def refuse_window(meter: str, problems: Sequence[str]) -> None:
    """Raise :class:`MeasurementInvalid` for a window with ``problems`` (one sentence a GPU)."""
    if problems:
        raise MeasurementInvalid(
            f"the {meter} meter measured no valid energy for the window: "
            + "; ".join(problems)
            + ". A window of 0 J or less would pass every max: limit, so the cell fails instead"
        )

