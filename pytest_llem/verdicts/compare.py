"""Regression gates: a run's per-cycle figures against a stored baseline.

``--llem-compare-fail=[METRIC.]STAT:[±]N[%]`` (pytest-benchmark's grammar, extended): the
configuration regresses when STAT (mean, median, min or max) of METRIC moved in the worse
direction by more than N (percent, or absolute) *and* the per-cycle values support it: a
one-sided Mann-Whitney U test at 0.05 says the current values are worse than the stored ones.
Noise alone therefore does not fail CI. The metric decides which direction is worse: energy and
latency up, throughput down.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

from pytest_llem.config.metrics import LIMIT_METRICS, check_metric
from pytest_llem.errors import LimitSyntaxError

DEFAULT_METRIC = "mj_per_tok_adjusted"
STATS = ("mean", "median", "min", "max")
HIGHER_IS_BETTER = frozenset({"avg_tokens_per_second", "flops_per_second"})
SIGNIFICANCE = 0.05

_RULE = re.compile(
    r"^(?:(?P<metric>[a-z_][a-z0-9_.]*)\.)?(?P<stat>mean|median|min|max):[+\-\u00b1]?(?P<value>[0-9.]+(?:e[-+]?[0-9]+)?)(?P<pct>%)?$",
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
    match = _RULE.match(text.strip())
    if match is None:
        raise LimitSyntaxError(
            f"--llem-compare-fail {text!r}: expected [METRIC.]STAT:N or [METRIC.]STAT:N% with STAT one of"
            f" {', '.join(STATS)}, e.g. mj_per_tok_adjusted.median:5%"
        )
    metric = match["metric"] or DEFAULT_METRIC
    check_metric(metric)
    return CompareRule(metric, match["stat"].lower(), float(match["value"]), bool(match["pct"]))


def _stat(values: list[float], stat: str) -> float:
    if stat == "mean":
        return statistics.fmean(values)
    if stat == "median":
        return float(statistics.median(values))
    return float(min(values) if stat == "min" else max(values))


@dataclass
class Verdict:
    config_id: str
    rule: CompareRule
    status: str  # "regressed", "ok", "new", "incomplete"
    baseline: float | None = None
    current: float | None = None
    change: float | None = None  # relative (fraction) or absolute, per the rule
    p_value: float | None = None

    def line(self) -> str:
        if self.status in ("new", "incomplete"):
            return f"{self.config_id}: {self.status.upper()} ({self.rule.metric})"
        change = f"{100 * self.change:+.2f}%" if self.rule.relative and self.change is not None else f"{self.change:+.4g}"
        p = f", p={self.p_value:.3g}" if self.p_value is not None else ""
        return (
            f"{self.config_id}: {self.rule.metric}.{self.rule.stat} {self.baseline:.6g} -> {self.current:.6g}"
            f" ({change}{p}) {self.status.upper()}"
        )


def judge(config_id: str, rule: CompareRule, stored: list[float] | None, current: list[float]) -> Verdict:
    """One configuration against its stored per-cycle values under one rule."""
    if stored is None:
        return Verdict(config_id, rule, "new")
    if not stored or not current:
        return Verdict(config_id, rule, "incomplete")
    from scipy.stats import mannwhitneyu

    base, now = _stat(stored, rule.stat), _stat(current, rule.stat)
    worse_sign = -1.0 if rule.metric in HIGHER_IS_BETTER else 1.0
    delta = now - base
    change = delta / base if rule.relative and base else delta
    limit = rule.threshold / 100.0 if rule.relative else rule.threshold
    beyond = worse_sign * change > limit
    alternative = "less" if rule.metric in HIGHER_IS_BETTER else "greater"
    p_value = float(mannwhitneyu(current, stored, alternative=alternative).pvalue)
    status = "regressed" if beyond and p_value < SIGNIFICANCE else "ok"
    return Verdict(config_id, rule, status, base, now, change, p_value)


def values_by_config(records: list[dict[str, Any]], metric: str) -> dict[str, list[float]]:
    """Per-cycle values of a metric per configuration id, in cycle order."""
    from pytest_llem.verdicts.limits import value_of

    out: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        value = value_of(record, metric)
        if value is not None:
            out.setdefault(record["config_id"], []).append((int(record.get("cycle", 0)), float(value)))
    return {k: [v for _, v in sorted(pairs)] for k, pairs in out.items()}


__all__ = ["LIMIT_METRICS", "CompareRule", "Verdict", "judge", "parse_rule", "values_by_config"]
