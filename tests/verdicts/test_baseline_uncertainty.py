"""The interval of an adjusted figure across cycles includes the idle baseline's uncertainty.

The cycles of a configuration are measured against one baseline (or a few), so its error is
shared by them: it does not average out with more cycles. The half-width of the interval of
``mj_per_tok_adjusted`` and ``energy_adjusted_j`` is widened to sqrt(hw^2 + (z u)^2), u being the
mean of the cells' recorded 1-sigma uncertainties of that figure, and u is recorded beside it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from pytest_llem.verdicts.adaptive import relative_half_width
from pytest_llem.verdicts.statistics import BCA_MIN_N, summarise, summarise_groups, write_summary

VALUES = [4.2, 3.9, 4.5, 4.1, 4.0, 4.4]
Z95 = float(stats.norm.ppf(0.975))


def _t_half_width(values: list[float], confidence: float = 0.95) -> float:
    n = len(values)
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)


def test_the_t_interval_is_widened_by_the_baseline_uncertainty() -> None:
    plain = summarise(VALUES, "mj_per_tok_adjusted")
    s = summarise(VALUES, "mj_per_tok_adjusted", baseline_uncertainty=0.2)
    hw = _t_half_width(VALUES)
    widened = math.sqrt(hw**2 + (Z95 * 0.2) ** 2)
    assert s.ci_method == "student-t" == plain.ci_method and s.n == 6
    assert s.mean == plain.mean and s.std == plain.std
    assert (s.ci_low, s.ci_high) == pytest.approx((s.mean - widened, s.mean + widened), rel=1e-12)
    assert s.baseline_uncertainty == 0.2 and plain.baseline_uncertainty is None


def test_the_quantile_follows_the_confidence() -> None:
    s = summarise(VALUES, "energy_adjusted_j", confidence=0.90, baseline_uncertainty=0.3)
    z90 = float(stats.norm.ppf(0.95))
    widened = math.sqrt(_t_half_width(VALUES, 0.90) ** 2 + (z90 * 0.3) ** 2)
    assert s.ci_high - s.ci_low == pytest.approx(2 * widened, rel=1e-12)  # type: ignore[operator]


def test_more_cycles_cannot_narrow_it_below_the_baselines_share() -> None:
    many = np.random.default_rng(7).normal(10.0, 0.01, size=60).tolist()
    s = summarise(many, "mj_per_tok_adjusted", baseline_uncertainty=0.5)
    assert (s.ci_high - s.ci_low) / 2 >= Z95 * 0.5  # type: ignore[operator]


def test_equal_values_get_the_baselines_share_and_keep_their_method() -> None:
    s = summarise([5.0, 5.0, 5.0], "mj_per_tok_adjusted", baseline_uncertainty=0.1)
    assert s.ci_method == "degenerate"
    assert (s.ci_low, s.ci_high) == pytest.approx((5.0 - Z95 * 0.1, 5.0 + Z95 * 0.1))


def test_the_bootstrap_interval_is_widened_on_each_side() -> None:
    data = np.random.default_rng(3).lognormal(0.0, 0.5, size=BCA_MIN_N + 5).tolist()
    plain = summarise(data, "mj_per_tok_adjusted", n_resamples=999)
    s = summarise(data, "mj_per_tok_adjusted", n_resamples=999, baseline_uncertainty=0.05)
    assert s.ci_method == plain.ci_method == "bca"
    extra = (Z95 * 0.05) ** 2
    assert s.mean - s.ci_low == pytest.approx(math.sqrt((plain.mean - plain.ci_low) ** 2 + extra))  # type: ignore[operator]
    assert s.ci_high - s.mean == pytest.approx(math.sqrt((plain.ci_high - plain.mean) ** 2 + extra))  # type: ignore[operator]


def test_one_value_still_has_no_interval() -> None:
    s = summarise([5.0], "mj_per_tok_adjusted", baseline_uncertainty=0.1)
    assert s.ci_low is None and s.ci_high is None and s.ci_method is None


@pytest.mark.parametrize("u", [-1.0, float("nan"), float("inf")])
def test_an_impossible_uncertainty_is_refused(u: float) -> None:
    with pytest.raises(ValueError, match="baseline_uncertainty"):
        summarise(VALUES, "mj_per_tok_adjusted", baseline_uncertainty=u)


def _record(cycle: int, adjusted: float | None, u_mj: float | None, energy: float | None, u_j: float | None) -> dict[str, Any]:
    return {
        "measurement_config_hash": "h", "config_id": "a", "cycle": cycle,
        "mj_per_tok_total": 10.0 + cycle, "mj_per_tok_adjusted": adjusted, "mj_per_tok_adjusted_uncertainty": u_mj,
        "energy_adjusted_j": energy, "energy_adjusted_uncertainty_j": u_j, "config": {},
    }  # fmt: skip


RECORDS = [
    _record(0, 4.0, 0.2, 400.0, 20.0),
    _record(1, 4.4, 0.4, 440.0, 40.0),
    _record(2, 4.2, 0.3, 420.0, 30.0),
    _record(3, None, None, None, None),  # no adjusted figure: neither a value nor an uncertainty
    _record(4, 4.1, None, 410.0, None),  # an older record without the field: a value, no uncertainty
]


def test_groups_use_the_mean_of_the_cells_recorded_uncertainties() -> None:
    (group,) = summarise_groups(RECORDS, metrics=("mj_per_tok_total", "mj_per_tok_adjusted", "energy_adjusted_j"))
    adjusted, energy, total = (group.metrics[m] for m in ("mj_per_tok_adjusted", "energy_adjusted_j", "mj_per_tok_total"))
    assert adjusted.baseline_uncertainty == pytest.approx(0.3) and adjusted.n == 4
    assert energy.baseline_uncertainty == pytest.approx(30.0)
    assert total.baseline_uncertainty is None  # not an adjusted figure
    values = [4.0, 4.4, 4.2, 4.1]
    widened = math.sqrt(_t_half_width(values) ** 2 + (Z95 * 0.3) ** 2)
    assert adjusted.ci_high - adjusted.ci_low == pytest.approx(2 * widened)  # type: ignore[operator]
    # The adaptive stop rule reads the same field for the share more cycles cannot remove.
    assert relative_half_width(adjusted) == pytest.approx(widened / adjusted.mean)  # type: ignore[operator]


def test_groups_without_recorded_uncertainties_are_unchanged() -> None:
    old = [{k: v for k, v in r.items() if not k.endswith(("_uncertainty", "_uncertainty_j"))} for r in RECORDS]
    (group,) = summarise_groups(old, metrics=("mj_per_tok_adjusted",))
    adjusted = group.metrics["mj_per_tok_adjusted"]
    assert adjusted.baseline_uncertainty is None
    assert adjusted.ci_high - adjusted.ci_low == pytest.approx(2 * _t_half_width([4.0, 4.4, 4.2, 4.1]))  # type: ignore[operator]


def test_the_summary_files_show_the_uncertainty_used(tmp_path: Path) -> None:
    groups = summarise_groups(RECORDS, metrics=("mj_per_tok_total", "mj_per_tok_adjusted"))
    json_path, csv_path = write_summary(tmp_path, groups)
    data = json.loads(json_path.read_text())
    metrics = data["groups"][0]["metrics"]
    assert metrics["mj_per_tok_adjusted"]["baseline_uncertainty"] == pytest.approx(0.3)
    assert metrics["mj_per_tok_total"]["baseline_uncertainty"] is None
    assert metrics["mj_per_tok_adjusted"]["ci_method"] == "student-t"
    assert "baseline" in data["ci_rule"]
    with csv_path.open(newline="") as handle:
        rows = {row["metric"]: row for row in csv.DictReader(handle)}
    assert float(rows["mj_per_tok_adjusted"]["baseline_uncertainty"]) == pytest.approx(0.3)
    assert rows["mj_per_tok_total"]["baseline_uncertainty"] == ""
