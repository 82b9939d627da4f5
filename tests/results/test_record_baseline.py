"""The record's idle-baseline figures: invalid after drift, and the baseline's uncertainty carried along.

An adjusted figure subtracts ``baseline_power_w x window``; an error of the baseline moves it by
that error times the window, which in a host-bound cell is a large share. Each record therefore
carries the baseline's 1-sigma uncertainty and what it means for both adjusted figures.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem.verdicts.limits import Limit, breaches
from tests.results.test_record import build, measurement

UNCERTAINTY_FIELDS = ("baseline_uncertainty_w", "energy_adjusted_uncertainty_j", "mj_per_tok_adjusted_uncertainty")


def _with_baseline(**idle: Any) -> dict[str, Any]:
    return build(measurement(baseline_power_w=60.0, **idle))


def test_the_adjusted_figures_carry_the_baselines_uncertainty() -> None:
    record = _with_baseline(baseline_std_w=1.5, baseline_uncertainty_w=2.0)
    assert record["energy_adjusted_j"] == pytest.approx(900.0)
    assert record["baseline_uncertainty_w"] == 2.0
    assert record["energy_adjusted_uncertainty_j"] == pytest.approx(2.0 * 10.0)  # x the 10 s window
    assert record["mj_per_tok_adjusted_uncertainty"] == pytest.approx(1000 * 20.0 / 2000)  # per output token
    assert record["baseline_std_w"] == 1.5  # the spread alone is still recorded as before


@pytest.mark.parametrize(
    "m",
    [
        measurement(),  # no baseline
        measurement(baseline_power_w=200.0, baseline_uncertainty_w=2.0),  # clamped: invalid
        measurement(
            baseline_power_w=55.0,
            baseline_uncertainty_w=2.0,
            energy={"meter": "none", "total_j": None, "per_device_j": None, "unavailable_reason": "no NVML"},
        ),
    ],
    ids=["no-baseline", "clamped", "no-energy"],
)
def test_no_adjusted_figure_no_uncertainty(m: dict[str, Any]) -> None:
    record = build(m)
    assert record["energy_adjusted_j"] is None
    for field in UNCERTAINTY_FIELDS:
        assert field in record and record[field] is None, field


def test_a_baseline_invalidated_by_drift_leaves_no_adjusted_figures_and_says_why() -> None:
    why = "the idle baseline drifted during the cell and idle power moved: GPU GPU-1 baseline 70.0 W, spot check 90.0 W"
    record = _with_baseline(baseline_uncertainty_w=2.0, baseline_invalid_reason=why)
    assert record["energy_adjusted_j"] is None and record["mj_per_tok_adjusted"] is None
    assert record["energy_adjusted_invalid_reason"] == why
    assert f"no baseline-adjusted figures: {why}" in record["warnings"]
    assert record["baseline_power_w"] == 60.0  # what the cell ran against stays on record
    assert all(record[f] is None for f in UNCERTAINTY_FIELDS)
    assert record["total_energy_j"] == 1500.0 and record["mj_per_tok_total"] == pytest.approx(750.0)
    found = breaches(record, [Limit("mj_per_tok_adjusted", "max", 1e9, "t.llem.yaml:3")])
    assert len(found) == 1 and "not measured" in found[0]  # a max: limit cannot pass on a missing figure
