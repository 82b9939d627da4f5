"""Absolute limits per cell: ``expect:`` in the study and ``--llem-limit`` on the command line.

A limit is a bound on one figure of a cell's record (``mj_per_tok_adjusted`` at most 50,
``avg_tokens_per_second`` at least 1000, ``ttft_s.p95`` at most 0.5). A breach fails that cell as
an ordinary test failure; a limit on a figure the cell could not measure (no energy source, no
baseline) fails too, with the reason, because a gate that passes when nothing was measured is
worse than no gate. So does a figure or a limit that is not a finite number: NaN compares false
with everything, so a NaN figure (or limit) would otherwise meet every limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pytest_llem.config.metrics import LIMIT_METRICS, check_metric
from pytest_llem.errors import LimitSyntaxError
from pytest_llem.results.fields import dotted_value

if TYPE_CHECKING:
    from pytest_llem.config.experiment import ExpectBounds

__all__ = [
    "LIMIT_METRICS",
    "Limit",
    "LimitSyntaxError",
    "breaches",
    "cell_limits",
    "check_metric",
    "finite_number",
    "number_problem",
    "parse_cli_limit",
    "value_of",
]

Bound = Literal["min", "max"]

# The grammar takes any text after the colon, so that a bad number is named as one (with the
# text) instead of failing the whole pattern; number_problem then says what is wrong with it.
_CLI = re.compile(r"^(?P<metric>[a-z_][a-z0-9_.]*)\.(?P<bound>min|max):(?P<value>.*)$", re.IGNORECASE)
# Decimal notation only: float() alone also takes "nan", "inf", "1_000" and surrounding blanks.
_NUMBER = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[-+]?[0-9]+)?$", re.IGNORECASE)


def number_problem(text: str) -> str | None:
    """Why ``text`` is not a finite decimal number (``1.2.3``, ``nan``, ``1e999``), or None when it is."""
    if not text:
        return "no number after ':'"
    if _NUMBER.match(text) is None:
        return f"{text!r} is not a finite number"
    if not math.isfinite(float(text)):
        return f"{text!r} is too large to be a finite number"
    return None


def finite_number(value: object) -> float | None:
    """A figure read from a record or a file as a finite float; None for NaN, infinities, bools, text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float (JSON allows 1 followed by 400 zeros)
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Limit:
    metric: str
    bound: Bound
    value: float
    source: str  # where it was set: "file.llem.yaml:12" or "--llem-limit"

    def describe(self) -> str:
        unit = LIMIT_METRICS.get(self.metric, "")
        return f"{self.metric} {'<=' if self.bound == 'max' else '>='} {self.value:g} {unit}".rstrip()


def parse_cli_limit(text: str, source: str = "--llem-limit") -> Limit:
    """``mj_per_tok_adjusted.max:50`` -> a limit."""
    expected = "expected METRIC.max:VALUE or METRIC.min:VALUE with VALUE a finite number, e.g. mj_per_tok_adjusted.max:50"
    match = _CLI.match(text.strip())
    if match is None:
        raise LimitSyntaxError(f"{source} {text!r}: {expected}")
    value = match["value"].strip()
    problem = number_problem(value)
    if problem:
        raise LimitSyntaxError(f"{source} {text!r}: {problem}; {expected}")
    check_metric(match["metric"])
    return Limit(match["metric"], match["bound"].lower(), float(value), source)  # type: ignore[arg-type]


def cell_limits(
    expect: Mapping[str, ExpectBounds], expect_lines: Mapping[str, int], study_file: str, extra: Sequence[Limit] = ()
) -> list[Limit]:
    """Every limit one cell must meet: its study's ``expect:``, then ``extra`` (the command line's).

    Each ``expect:`` bound names the YAML line it was written on (``study_file:line``, line 1 where
    the loader did not record one), so a breach points the reader at the very line to look at.
    """
    limits: list[Limit] = []
    for metric, bounds in expect.items():
        source = f"{study_file}:{expect_lines.get(metric, 1)}"
        if bounds.min is not None:
            limits.append(Limit(metric, "min", bounds.min, source))
        if bounds.max is not None:
            limits.append(Limit(metric, "max", bounds.max, source))
    return limits + list(extra)


def value_of(record: dict[str, Any], metric: str) -> Any:
    """A figure by dotted path (``ttft_s.p95``); None where any step is missing or null."""
    return dotted_value(record, metric)


def why_missing(record: dict[str, Any], metric: str) -> str:
    if "adjusted" in metric and record.get("total_energy_j") is not None:
        return record.get("energy_adjusted_invalid_reason") or record.get("baseline_unavailable_reason") or "no idle baseline was measured"
    if "energy" in metric or "mj_per_tok" in metric:
        return record.get("energy_unavailable_reason") or "no energy was measured"
    return "the engine did not report it"


def breaches(record: dict[str, Any], limits: list[Limit]) -> list[str]:
    """One sentence per limit the record breaks, or cannot be judged against."""
    out: list[str] = []
    for limit in limits:
        raw = value_of(record, limit.metric)
        value = finite_number(raw)
        if not math.isfinite(limit.value):  # every comparison with NaN is false: such a limit would never break
            out.append(f"{limit.describe()} ({limit.source}): the limit is not a finite number, so no figure can meet it; write one")
        elif raw is None:
            out.append(f"{limit.describe()} ({limit.source}): not measured: {why_missing(record, limit.metric)}")
        elif value is None:
            out.append(f"{limit.metric} = {raw!r}, not a finite number, so it cannot meet {limit.describe()} ({limit.source})")
        elif (limit.bound == "max" and value > limit.value) or (limit.bound == "min" and value < limit.value):
            out.append(f"{limit.metric} = {value:.6g}, breaks {limit.describe()} ({limit.source})")
    return out
