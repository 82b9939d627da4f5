"""Regression rules and the verdict on one configuration: a run's per-cycle figures against a stored baseline.

``--llem-compare-fail=[METRIC.]STAT:[±]N[%]`` (pytest-benchmark's grammar, extended) names a
metric and a tolerance; the metric decides which direction is worse (energy and latency up,
throughput down). Whether the per-cycle values show a change beyond the tolerance is decided
in :mod:`pytest_llem.verdicts.decision`; a configuration that cannot be judged says why.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Literal

from pytest_llem.config.metrics import LIMIT_METRICS, check_metric
from pytest_llem.errors import LimitSyntaxError
from pytest_llem.verdicts.decision import Evidence, weigh
from pytest_llem.verdicts.limits import finite_number, number_problem, value_of

DEFAULT_METRIC = "mj_per_tok_adjusted"
STATS = ("mean", "median", "min", "max")
HIGHER_IS_BETTER = frozenset({"avg_tokens_per_second", "flops_per_second"})

# Any text for N, read by number_problem, so a bad number is named as one with its text.
_RULE = re.compile(
    r"^(?:(?P<metric>[a-z_][a-z0-9_.]*)\.)?(?P<stat>mean|median|min|max):[+\-\u00b1]?(?P<value>.*?)(?P<pct>%)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CompareRule:
    metric: str
    stat: str
    threshold: float
    relative: bool

    def describe(self) -> str:
        amount = f"{self.threshold:g}%" if self.relative else f"{self.threshold:g}"
        return f"{self.metric}.{self.stat} worse by more than {amount}"


def parse_rule(text: str) -> CompareRule:
    """``mj_per_tok_adjusted.median:5%`` -> a rule (a sign before N is accepted and ignored:
    the metric decides the direction)."""
    expected = (
        f"expected [METRIC.]STAT:N or [METRIC.]STAT:N% with STAT one of {', '.join(STATS)} and N a finite number,"
        " e.g. mj_per_tok_adjusted.median:5%"
    )
    match = _RULE.match(text.strip())
    if match is None:
        raise LimitSyntaxError(f"--llem-compare-fail {text!r}: {expected}")
    value = match["value"].strip()
    problem = number_problem(value)
    if problem is None and value[:1] in "+-":  # one sign is allowed, and it was taken before N
        problem = f"{value!r} has a second sign"
    if problem:
        raise LimitSyntaxError(f"--llem-compare-fail {text!r}: {problem}; {expected}")
    metric = match["metric"] or DEFAULT_METRIC
    check_metric(metric)
    return CompareRule(metric, match["stat"].lower(), float(value), bool(match["pct"]))


def _stat(values: list[float], stat: str) -> float:
    if stat == "mean":
        return statistics.fmean(values)
    if stat == "median":
        return float(statistics.median(values))
    return float(min(values) if stat == "min" else max(values))


Status = Literal["pass", "regressed", "inconclusive", "new", "missing", "unjudgeable"]


@dataclass
class Verdict:
    """One configuration under one rule.

    ``pass``/``regressed``/``inconclusive`` come from the test (``regressed`` only after the
    session-wide correction, see :func:`pytest_llem.verdicts.gate.run_gate`); ``new`` has no
    stored entry; ``missing`` has a stored figure but no current one; ``unjudgeable`` says in
    ``reason`` why no test can be made (a changed configuration, too few cycles, unusable values).
    """

    config_id: str
    rule: CompareRule
    status: Status
    baseline: float | None = None  # the rule's STAT of the stored values
    current: float | None = None
    change: float | None = None  # relative (fraction) or absolute, per the rule; None against a stored 0
    evidence: Evidence | None = None
    reason: str | None = None
    p_adjusted: float | None = None

    def _on_rule_scale(self, worse_by: float) -> str:
        """A worse-by on the test's scale, said as the rule says its tolerance."""
        if not self.rule.relative:
            return f"{worse_by:+.4g}"
        factor = math.exp(worse_by) - 1 if self.rule.metric not in HIGHER_IS_BETTER else 1 - math.exp(-worse_by)
        return f"{100 * factor:+.1f}%"

    def line(self) -> str:
        metric = f"{self.rule.metric}.{self.rule.stat}"
        if self.status == "new":
            return f"{self.config_id}: NEW ({self.rule.metric})"
        if self.status in ("missing", "unjudgeable"):
            return f"{self.config_id}: {metric}: {self.status.upper()} ({self.reason})"
        assert self.baseline is not None and self.current is not None and self.evidence is not None
        if self.change is None:
            change = "stored 0"
        else:
            change = f"{100 * self.change:+.2f}%" if self.rule.relative else f"{self.change:+.4g}"
        ev = self.evidence
        bound = f"worse by at most {self._on_rule_scale(ev.upper_bound)} (95 %)"
        p = f"p={ev.p_value:.3g}" + (f", Holm {self.p_adjusted:.3g}" if self.p_adjusted is not None else "")
        tail = self.status.upper()
        if self.status == "inconclusive":
            tail += f" (about {ev.cycles_needed} cycles a side would decide)" if ev.cycles_needed else " (more cycles would not decide it at this spread)"
        return f"{self.config_id}: {metric} {self.baseline:.6g} -> {self.current:.6g} ({change}; {bound}; {p}) {tail}"


_NON_FINITE = "non-finite values (NaN or infinite)"


def _unusable(values: list[float], relative: bool) -> str | None:
    if any(not math.isfinite(v) for v in values):
        return _NON_FINITE
    if relative and any(v <= 0 for v in values):
        return "values of 0 or below, which have no relative change"
    return None


def judge(
    config_id: str,
    rule: CompareRule,
    stored: list[float] | None,
    current: list[float],
    *,
    stored_hash: str | None = None,
    current_hash: str | None = None,
) -> Verdict:
    """One configuration against its stored per-cycle values under one rule (``regressed`` is the caller's)."""
    if stored is None:
        return Verdict(config_id, rule, "new")
    if stored_hash and current_hash and stored_hash != current_hash:
        return Verdict(
            config_id, rule, "unjudgeable",
            reason=f"the configuration changed since the baseline was stored (measurement_config_hash {stored_hash} -> {current_hash})",
        )  # fmt: skip
    if not current:
        return Verdict(config_id, rule, "missing", reason="no current figure, while the stored baseline has one")
    for side, values in (("stored", stored), ("current", current)):
        if not values:
            return Verdict(config_id, rule, "unjudgeable", reason=f"the {side} baseline holds no value of {rule.metric}")
        problem = _unusable(values, rule.relative)
        if problem == _NON_FINITE and side == "current":  # a broken figure against a usable baseline: never a pass
            return Verdict(config_id, rule, "missing", reason=f"current {problem}, while the stored baseline has figures")
        if problem:
            return Verdict(config_id, rule, "unjudgeable", reason=f"{side} {problem}")
    if len(stored) < 2 or len(current) < 2:
        return Verdict(
            config_id, rule, "unjudgeable",
            reason=f"too few cycles ({len(stored)} stored, {len(current)} current): a test needs at least 2 a side",
        )  # fmt: skip
    worse_sign = -1.0 if rule.metric in HIGHER_IS_BETTER else 1.0
    if rule.relative:
        fraction = rule.threshold / 100.0
        tolerance = math.log1p(fraction) if worse_sign > 0 else (-math.log1p(-fraction) if fraction < 1 else math.inf)
        evidence = weigh([math.log(v) for v in stored], [math.log(v) for v in current], worse_sign=worse_sign, tolerance=tolerance)
    else:
        evidence = weigh(stored, current, worse_sign=worse_sign, tolerance=rule.threshold)
    base, now = _stat(stored, rule.stat), _stat(current, rule.stat)
    change: float | None = now - base
    if rule.relative:
        change = (now - base) / base if base else None
    status: Status = "pass" if evidence.within_tolerance else "inconclusive"
    return Verdict(config_id, rule, status, base, now, change, evidence)


def values_by_config(records: list[dict[str, Any]], metric: str) -> dict[str, list[float]]:
    """Per-cycle values of a metric per configuration id, in cycle order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        value = value_of(record, metric)
        if value is not None:  # a figure that is not a finite number is kept as NaN, for judge to refuse
            number = finite_number(value)
            out.setdefault(record["config_id"], []).append((int(record.get("cycle", 0)), math.nan if number is None else number))
    return {k: [v for _, v in sorted(pairs)] for k, pairs in out.items()}


__all__ = ["LIMIT_METRICS", "CompareRule", "Status", "Verdict", "judge", "parse_rule", "values_by_config"]
