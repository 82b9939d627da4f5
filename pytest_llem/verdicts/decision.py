"""The regression gate's decision for one configuration and rule: pass, regressed or inconclusive.

The question a rule asks is not "did anything change" but "is the change beyond the tolerance",
so the test is one-sided against the tolerance itself:

* For a relative rule (``median:5%``) the per-cycle values are compared on a log scale: the
  difference of the mean logs is the log of the ratio of geometric means (current / stored),
  and the tolerance is ``log(1.05)`` for a figure where up is worse (energy, latency) or
  ``-log(0.95)`` where down is worse (throughput). An absolute rule compares plain means.
* Welch's t statistic (unequal variances, Welch-Satterthwaite degrees of freedom) gives
  ``p``, the probability of a change this far beyond the tolerance if the true change were
  exactly at it (H0: worse-by <= tolerance). A t test rather than a rank test: with 3 cycles a
  side, a one-sided Mann-Whitney test cannot go below p = 0.05, and ties are no problem.
* **regressed** when ``p`` stays below the significance level after Holm's correction over
  every configuration and rule of the session (done by the caller, :func:`holm`): the
  probability that a session with no change beyond the tolerance fails is at most 5 %, however
  many configurations it has. Holm (family-wise) rather than Benjamini-Hochberg (false
  discovery rate): a CI run either fails or not, and users bet on a failure being real.
* **pass** when the one-sided upper confidence bound of the change lies inside the tolerance.
* **inconclusive** otherwise, with the number of cycles per side that would decide it if the
  observed spread held (:attr:`Evidence.cycles_needed`).

The rule's STAT (``median``, ``mean``, ``min``, ``max``) is what the report shows; the test is
on the per-cycle values, as above.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

SIGNIFICANCE = 0.05
#: Cycles per side beyond which "cycles needed" is not worth stating.
MAX_CYCLES_NEEDED = 1000


@dataclass(frozen=True)
class Evidence:
    """What the per-cycle values say about a change against a tolerance (all on the test's scale)."""

    worse_by: float  # observed change in the worse direction (log ratio, or absolute); negative is better
    tolerance: float  # on the same scale
    p_value: float  # one-sided, H0: the true worse-by is at most the tolerance (not yet corrected)
    upper_bound: float  # one-sided (1 - significance) upper confidence bound of worse-by
    cycles_needed: int | None  # per side, for a decision at this spread; None: no number would do

    @property
    def within_tolerance(self) -> bool:
        return self.upper_bound < self.tolerance


def _mean_var(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.variance(values) if len(values) > 1 else 0.0


def _t_quantile(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def weigh(stored: list[float], current: list[float], *, worse_sign: float, tolerance: float) -> Evidence:
    """Welch's one-sided test of ``worse_sign * (mean(current) - mean(stored)) > tolerance``.

    ``stored`` and ``current`` are already on the test's scale (logs for a relative rule), two
    or more values each.
    """
    from scipy.stats import t

    m1, v1 = _mean_var(stored)
    m2, v2 = _mean_var(current)
    n1, n2 = len(stored), len(current)
    worse_by = worse_sign * (m2 - m1)
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0.0:  # no spread at all: the observed change is the change
        beyond = worse_by > tolerance
        return Evidence(worse_by, tolerance, 0.0 if beyond else 1.0, worse_by, None)
    df = se**4 / ((v1 / n1) ** 2 / max(n1 - 1, 1) + (v2 / n2) ** 2 / max(n2 - 1, 1))
    p_value = float(t.sf((worse_by - tolerance) / se, df))
    upper = worse_by + _t_quantile(1 - SIGNIFICANCE, df) * se
    return Evidence(worse_by, tolerance, p_value, upper, _cycles_needed(v1, v2, worse_by, tolerance))


def _cycles_needed(v1: float, v2: float, worse_by: float, tolerance: float) -> int | None:
    """Cycles per side at which a one-sided bound at this spread would clear the tolerance.

    Starts from the normal approximation (``2 (z s / gap)^2``) and steps up with t quantiles, so
    it stays cheap in simulations.
    """
    gap = abs(tolerance - worse_by)
    spread = math.sqrt((v1 + v2) / 2)
    if gap == 0.0 or spread == 0.0:
        return None
    z = statistics.NormalDist().inv_cdf(1 - SIGNIFICANCE)
    start = max(2, math.floor(2 * (z * spread / gap) ** 2))
    for n in range(start, MAX_CYCLES_NEEDED + 1):
        if _t_quantile(1 - SIGNIFICANCE, 2 * n - 2) * spread * math.sqrt(2 / n) < gap:
            return n
    return None


def holm(p_values: list[float], alpha: float = SIGNIFICANCE) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected, family-wise error at most ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] >= alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def holm_adjusted(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (monotone, capped at 1), in the order given; for the report."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
