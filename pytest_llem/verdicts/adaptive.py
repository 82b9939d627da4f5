"""Adaptive cycles: which configurations need more cycles after the planned ones, and why.

A study plans ``execution.n_cycles``; with ``execution.target_ci_pct`` (and/or a
``max_cycles`` above the plan) a configuration gets one more cycle per round while

* the relative half-width of its headline interval (``mj_per_tok_adjusted``, else
  ``mj_per_tok_total``) is above the target, or
* the regression gate finds it inconclusive under a ``--llem-compare-fail`` rule,

and it has fewer than the cap. Rounds run in the study's configuration order, so the extra
cycles of one round are spread over the configurations that need them, as the planned cycles
were. Pure decisions here; the session runs the cells.

Two things stop a configuration early, because more cycles cannot help it: a failed cell in
this session (more cycles would repeat the failure, not narrow an interval), and an interval
whose systematic part, the idle baseline's uncertainty (which the cycles share and which does
not shrink with n), is already wider than the target on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_llem.verdicts.statistics import GroupSummary, MetricSummary

#: The figure whose interval the target is about, in order of preference.
HEADLINE_METRICS: tuple[str, ...] = ("mj_per_tok_adjusted", "mj_per_tok_total")

#: z for a two-sided 95 % interval: the systematic part of an interval is ``z * u``.
_Z_95 = 1.959963984540054


@dataclass(frozen=True)
class CycleNeed:
    """One configuration's case for another cycle (or for stopping)."""

    config_id: str
    cycles: int  # cycles it has now
    reason: str  # why it needs one more, or why it stops
    more: bool  # True: run another cycle; False: it stops here (reason says why)


def headline(group: GroupSummary) -> MetricSummary | None:
    """The group's headline figure: adjusted energy per token when it has values, else raw."""
    for metric in HEADLINE_METRICS:
        summary = group.metrics.get(metric)
        if summary is not None and summary.n > 0:
            return summary
    return None


def relative_half_width(summary: MetricSummary) -> float | None:
    """Half the interval's width over the mean's magnitude (0.05 = +-5 %); None without an interval."""
    if summary.ci_low is None or summary.ci_high is None or not summary.mean:
        return None
    return (summary.ci_high - summary.ci_low) / 2 / abs(summary.mean)


def _systematic_relative(summary: MetricSummary) -> float:
    """The part of the relative half-width more cycles cannot remove (the idle baseline's)."""
    uncertainty = summary.baseline_uncertainty
    if not uncertainty or not summary.mean:
        return 0.0
    return float(_Z_95 * uncertainty / abs(summary.mean))


def _interval_need(summary: MetricSummary | None, target_pct: float) -> tuple[bool, str] | None:
    """``(more, reason)`` from the headline interval, or None when it meets the target."""
    if summary is None:
        return False, "no headline figure (no energy measured); more cycles cannot give one"
    width = relative_half_width(summary)
    if width is None:
        return True, f"{summary.metric}: no interval yet (n={summary.n})"
    if 100 * width <= target_pct:
        return None
    systematic = _systematic_relative(summary)
    if 100 * systematic > target_pct:
        return False, (
            f"{summary.metric}: the idle baseline's uncertainty alone is +-{100 * systematic:.1f} %, above the"
            f" {target_pct:g} % target; more cycles cannot narrow it (baseline_uncertainty_w in its records says why)"
        )
    return True, f"{summary.metric}: interval +-{100 * width:.1f} % > target {target_pct:g} % (n={summary.n})"


def needs(
    groups: Iterable[GroupSummary],
    cycles: Mapping[str, int],
    *,
    target_ci_pct: float | None,
    cap: int,
    inconclusive: Mapping[str, str] | None = None,
    failed: Iterable[str] = (),
) -> list[CycleNeed]:
    """Each configuration of ``cycles`` (config id -> cycles it has) that needs another cycle or stops short.

    ``inconclusive`` maps config ids to the gate rule(s) they are inconclusive under; ``failed``
    names configurations with a failed cell this session. Configurations that met the target
    and are not inconclusive are left out. In the order of ``cycles`` (the study's).
    """
    by_config = {config_id: group for group in groups for config_id in group.config_ids}
    broken = set(failed)
    undecided = dict(inconclusive or {})
    out: list[CycleNeed] = []
    for config_id, done in cycles.items():
        reasons: list[str] = []
        stop: str | None = None
        if target_ci_pct is not None:
            group = by_config.get(config_id)
            found = _interval_need(headline(group) if group is not None else None, target_ci_pct)
            if found is not None:
                more, why = found
                if more:
                    reasons.append(why)
                else:
                    stop = why
        if config_id in undecided:
            reasons.append(f"regression gate inconclusive ({undecided[config_id]})")
        if not reasons:
            if stop is not None:
                out.append(CycleNeed(config_id, done, stop, more=False))
            continue
        if config_id in broken:
            out.append(CycleNeed(config_id, done, "a cell failed this session; not given more cycles", more=False))
        elif done >= cap:
            out.append(CycleNeed(config_id, done, f"cap of {cap} cycles reached; " + "; ".join(reasons), more=False))
        else:
            out.append(CycleNeed(config_id, done, "; ".join(reasons), more=True))
    return out
