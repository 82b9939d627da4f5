"""verdicts/statistics.py: per-configuration repetition statistics, checked against numpy/scipy."""

from __future__ import annotations

import csv
import inspect
import json
import math
import statistics as pystats
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from pytest_llem.verdicts.statistics import (
    BCA_MIN_N,
    METRICS,
    GroupSummary,
    MetricSummary,
    group_records,
    summarise,
    summarise_groups,
    write_summary,
)

VALUES = [4.2, 3.9, 4.5, 4.1, 4.0, 4.4]
FAST = 999
#: Enough values for the BCa bootstrap (normal draws, mean 100, sd 5).
LARGE = np.random.default_rng(123).normal(100.0, 5.0, size=BCA_MIN_N + 20).tolist()


def _scipy_ci(values: list[float], method: str, n_resamples: int, seed: int) -> tuple[float, float]:
    """scipy.stats.bootstrap called directly, with the generator passed the way this scipy prefers."""
    gen = np.random.default_rng(seed)
    kwargs: dict[str, Any] = (
        {"rng": gen} if "rng" in inspect.signature(stats.bootstrap).parameters else {"random_state": gen}
    )
    res = stats.bootstrap(
        (values,), np.mean, confidence_level=0.95, n_resamples=n_resamples, method=method, **kwargs
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def test_point_statistics_match_numpy_and_statistics() -> None:
    s = summarise(VALUES, "mj_per_tok_total", n_resamples=FAST)
    assert s.metric == "mj_per_tok_total"
    assert s.n == 6
    assert s.mean == pytest.approx(pystats.fmean(VALUES))
    assert s.median == pytest.approx(pystats.median(VALUES))
    assert s.std == pytest.approx(pystats.stdev(VALUES))
    assert s.std == pytest.approx(float(np.std(VALUES, ddof=1)))
    assert s.cv == pytest.approx(pystats.stdev(VALUES) / pystats.fmean(VALUES))
    assert s.values == tuple(VALUES)


def _t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """mean +- t(1 - alpha/2, n - 1) * s / sqrt(n), from the standard library and scipy's t quantile."""
    n = len(values)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * pystats.stdev(values) / math.sqrt(n)
    return pystats.fmean(values) - half, pystats.fmean(values) + half


@pytest.mark.parametrize("n", [2, 3, 5, 10, 20, BCA_MIN_N - 1])
def test_below_bca_min_n_the_interval_is_student_t_and_labelled(n: int) -> None:
    values = LARGE[:n]
    s = summarise(values, "m", n_resamples=FAST)
    assert s.ci_method == "student-t" and s.n == n
    assert (s.ci_low, s.ci_high) == pytest.approx(_t_interval(values), rel=1e-12)


def test_student_t_interval_by_hand() -> None:
    # [1, 2, 3]: mean 2, s = 1, t(0.975, 2) = 4.3027 (any t table): 2 -+ 4.3027 / sqrt(3).
    s = summarise([1.0, 2.0, 3.0], "m")
    assert s.ci_method == "student-t" and s.n == 3
    assert s.ci_low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-6)
    assert s.ci_high == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-6)
    # VALUES: mean 4.18333, s = 0.231661, t(0.975, 5) = 2.570582.
    s6 = summarise(VALUES, "m")
    assert (s6.ci_low, s6.ci_high) == pytest.approx((3.940220, 4.426446), abs=1e-6)
    # Another level: t(0.95, 2) = 2.919986 for a 90 % interval.
    s90 = summarise([1.0, 2.0, 3.0], "m", confidence=0.90)
    assert (s90.ci_low, s90.ci_high) == pytest.approx((2 - 2.919986 / math.sqrt(3), 2 + 2.919986 / math.sqrt(3)), abs=1e-6)


def test_three_cycles_give_a_half_width_of_about_two_and_a_half_standard_deviations() -> None:
    # What the README says an interval from 3 cycles means: t(0.975, 2) / sqrt(3) = 2.484 s.
    s = summarise([10.0, 10.4, 9.7], "m")
    assert s.ci_low is not None and s.ci_high is not None and s.std is not None
    assert (s.ci_high - s.ci_low) / 2 / s.std == pytest.approx(2.484, abs=1e-3)


def test_two_values_use_student_t() -> None:
    # With one degree of freedom, t(0.975, 1) = 12.706: wide, and honest for normal data.
    s = summarise([1.0, 2.0], "m", n_resamples=FAST, seed=3)
    assert s.ci_method == "student-t" and s.n == 2
    assert (s.ci_low, s.ci_high) == pytest.approx((1.5 - 12.706205 * 0.5, 1.5 + 12.706205 * 0.5), abs=1e-6)
    assert s.std == pytest.approx(math.sqrt(0.5))


def test_student_t_does_not_depend_on_seed_or_resamples() -> None:
    a = summarise(VALUES, "m", n_resamples=FAST, seed=5)
    b = summarise(VALUES, "m", n_resamples=50, seed=6)
    assert (a.ci_low, a.ci_high, a.ci_method) == (b.ci_low, b.ci_high, b.ci_method)


def test_interval_covers_the_true_mean_at_three_cycles() -> None:
    # 300 seeded studies of 3 normal cycles: deterministic, no timing. Student t covers 95 % in
    # theory; the bootstrap this replaced covered about 73 %. The upper bound catches an interval
    # made honest by being absurdly wide.
    draws = np.random.default_rng(2024).normal(100.0, 5.0, size=(300, 3))
    covered = 0
    for row in draws:
        s = summarise(row.tolist(), "m", n_resamples=FAST)
        assert s.ci_low is not None and s.ci_high is not None
        covered += s.ci_low <= 100.0 <= s.ci_high
    assert 0.90 <= covered / 300 <= 0.99


def test_from_bca_min_n_the_interval_is_bca_matching_scipy() -> None:
    s = summarise(LARGE, "m", n_resamples=FAST, seed=7)
    assert s.ci_method == "bca" and s.n == len(LARGE)
    assert (s.ci_low, s.ci_high) == _scipy_ci(LARGE, "BCa", FAST, 7)
    assert s.ci_low is not None and s.ci_high is not None and s.mean is not None
    assert s.ci_low < s.mean < s.ci_high
    edge = summarise(LARGE[:BCA_MIN_N], "m", n_resamples=FAST)
    assert edge.ci_method == "bca" and edge.n == BCA_MIN_N


def test_ci_narrows_as_n_grows() -> None:
    draws = np.random.default_rng(123).normal(100.0, 5.0, size=200).tolist()
    widths = []
    for n, method in ((5, "student-t"), (20, "student-t"), (200, "bca")):
        s = summarise(draws[:n], "m", n_resamples=FAST)
        assert s.ci_method == method and s.n == n
        assert s.ci_low is not None and s.ci_high is not None and s.mean is not None
        assert s.ci_low <= s.mean <= s.ci_high
        widths.append(s.ci_high - s.ci_low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_bca_failure_falls_back_to_student_t() -> None:
    # One 1 among zeros, two resamples: with this seed both resample means fall below the sample
    # mean, so BCa's bias correction is infinite and scipy returns NaN bounds.
    values = [0.0] * (BCA_MIN_N - 1) + [1.0]
    with pytest.warns(stats.DegenerateDataWarning), np.errstate(all="ignore"):
        low, high = _scipy_ci(values, "BCa", 2, 3)
    assert math.isnan(low) and math.isnan(high)
    s = summarise(values, "m", n_resamples=2, seed=3)  # no warning escapes (filterwarnings=error)
    assert s.ci_method == "student-t" and s.n == BCA_MIN_N
    assert (s.ci_low, s.ci_high) == pytest.approx(_t_interval(values), rel=1e-12)


def test_constant_values_are_degenerate() -> None:
    s = summarise([2.5, 2.5, 2.5, 2.5], "m", n_resamples=FAST)
    assert s.ci_method == "degenerate" and s.n == 4
    assert s.ci_low == s.ci_high == s.mean == 2.5
    assert s.std == 0.0 and s.cv == 0.0


def test_single_and_empty() -> None:
    one = summarise([3.0], "m")
    assert (one.n, one.mean, one.median) == (1, 3.0, 3.0)
    assert one.std is None and one.cv is None and one.ci_method is None and one.ci_low is None
    none = summarise([], "m")
    assert none.n == 0 and none.mean is None and none.values == () and none.ci_method is None
    one_of_three = summarise([None, 3.0, float("nan")], "m")
    assert one_of_three.n == 1 and one_of_three.ci_method is None and one_of_three.ci_high is None


def test_zero_mean_has_no_cv() -> None:
    s = summarise([-1.0, 1.0, 0.0], "m", n_resamples=FAST)
    assert s.mean == 0.0 and s.cv is None and s.std == pytest.approx(1.0)


def test_none_values_are_ignored() -> None:
    s = summarise([1.0, None, 3.0, None, 2.0], "m", n_resamples=FAST)
    assert s.n == 3
    assert s.values == (1.0, 3.0, 2.0)
    assert s.mean == pytest.approx(2.0)


def test_n_counts_values_not_records_and_sets_the_degrees_of_freedom() -> None:
    # Five records, two with no figure (None, NaN): three values, so t has 2 degrees of freedom.
    s = summarise([1.0, None, 3.0, float("nan"), 2.0], "m")
    assert s.n == 3 and s.ci_method == "student-t"
    assert (s.ci_low, s.ci_high) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-6)


def test_reproducible_with_same_seed() -> None:
    a = summarise(LARGE, "m", n_resamples=FAST, seed=5)
    b = summarise(LARGE, "m", n_resamples=FAST, seed=5)
    assert a == b and a.ci_method == "bca"
    c = summarise(LARGE, "m", n_resamples=FAST, seed=6)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_bad_confidence_is_rejected() -> None:
    with pytest.raises(ValueError, match="confidence"):
        summarise(VALUES, "m", confidence=95)


def test_to_json_round_trips_through_json() -> None:
    s = summarise(VALUES, "m", n_resamples=FAST)
    data = json.loads(json.dumps(s.to_json()))
    assert data["values"] == VALUES and data["ci_method"] == "student-t" and data["n"] == 6
    assert isinstance(s, MetricSummary)


def _record(cid: str, cycle: int, precision: str, batch: int, mj: float | None, ttft: float | None = 0.1) -> dict[str, Any]:
    return {
        "config_id": cid,
        "cycle": cycle,
        "measurement_config_hash": f"hash-{cid}",
        "engine": "transformers",
        "mj_per_tok_total": mj,
        "mj_per_tok_adjusted": None if mj is None else mj * 0.8,
        "avg_tokens_per_second": 100.0 + cycle,
        "total_energy_j": 50.0 + cycle,
        "energy_adjusted_j": None,
        "total_inference_time_sec": 10.0,
        "ttft_s": None if ttft is None else {"mean": ttft, "median": ttft, "p95": ttft * 2, "p99": ttft * 3},
        "itl_s": None,
        "request_latency_s": None,
        "config": {
            "model": "tiny",
            "engine": "transformers",
            "precision": precision,
            "transformers": {"batch_size": batch},
        },
    }


RECORDS = [
    _record("a", 1, "fp16", 1, 2.0),
    _record("b", 0, "bf16", 1, 3.0),
    _record("a", 0, "fp16", 1, 1.0),
    _record("c", 0, "fp16", 8, 0.5, ttft=None),
    _record("b", 1, "bf16", 1, 3.5),
    _record("c", 1, "fp16", 8, 0.7),
    _record("a", 2, "fp16", 1, 1.5),
]


def test_group_by_precision() -> None:
    groups = group_records(RECORDS, by=["precision"])
    assert list(groups) == [("fp16",), ("bf16",)]
    assert sorted(r["config_id"] for r in groups[("fp16",)]) == ["a", "a", "a", "c", "c"]
    assert [r["config_id"] for r in groups[("bf16",)]] == ["b", "b"]


def test_group_by_nested_config_path() -> None:
    groups = group_records(RECORDS, by=("transformers.batch_size",))
    assert {k: len(v) for k, v in groups.items()} == {(1,): 5, (8,): 2}


def test_group_by_several_paths_and_default() -> None:
    assert list(group_records(RECORDS)) == [("hash-a",), ("hash-b",), ("hash-c",)]
    both = group_records(RECORDS, by=("engine", "config_id"))
    assert list(both) == [("transformers", "a"), ("transformers", "b"), ("transformers", "c")]


def test_missing_path_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="quantisation.bits") as info:
        group_records(RECORDS, by=("quantisation.bits",))
    assert "config_id" in str(info.value)  # lists available keys


def test_summarise_groups_in_first_seen_order_and_cycle_order() -> None:
    groups = summarise_groups(RECORDS, n_resamples=FAST)
    assert [g.key for g in groups] == [
        {"measurement_config_hash": "hash-a"},
        {"measurement_config_hash": "hash-b"},
        {"measurement_config_hash": "hash-c"},
    ]
    a = groups[0]
    assert isinstance(a, GroupSummary)
    assert a.config_ids == ["a"] and a.n_records == 3
    assert list(a.metrics) == list(METRICS)
    mj = a.metrics["mj_per_tok_total"]
    assert mj.values == (1.0, 2.0, 1.5)  # cycles 0, 1, 2
    assert mj.mean == pytest.approx(1.5) and mj.ci_method == "student-t" and mj.n == 3
    assert a.metrics["energy_adjusted_j"].n == 0
    assert a.metrics["itl_s.median"].n == 0
    assert a.metrics["ttft_s.median"].values == (0.1, 0.1, 0.1)
    assert a.metrics["ttft_s.median"].ci_method == "degenerate"
    c = groups[2]
    assert c.n_records == 2
    assert c.metrics["ttft_s.median"].n == 1  # the null latency summary is left out
    assert c.metrics["ttft_s.median"].ci_method is None  # one value: no interval
    assert c.metrics["mj_per_tok_total"].ci_method == "student-t" and c.metrics["mj_per_tok_total"].n == 2


def test_summarise_groups_n_counts_values_not_records() -> None:
    # Five cycles of one configuration, the energy meter failing in two: mJ/token has 3 values.
    records = [_record("e", cycle, "fp16", 1, mj) for cycle, mj in enumerate([1.0, None, 3.0, None, 2.0])]
    (group,) = summarise_groups(records, metrics=("mj_per_tok_total", "total_energy_j"))
    assert group.n_records == 5
    mj = group.metrics["mj_per_tok_total"]
    assert mj.n == 3 and mj.values == (1.0, 3.0, 2.0) and mj.ci_method == "student-t"
    assert (mj.ci_low, mj.ci_high) == pytest.approx(_t_interval([1.0, 3.0, 2.0]), rel=1e-12)  # 2 degrees of freedom
    energy = group.metrics["total_energy_j"]
    assert energy.n == 5 and energy.ci_method == "student-t"
    assert group.to_json()["metrics"]["mj_per_tok_total"]["n"] == 3


def test_summarise_groups_by_precision_pools_configs() -> None:
    groups = summarise_groups(RECORDS, by=("precision",), metrics=("mj_per_tok_total",), n_resamples=FAST)
    fp16 = groups[0]
    assert fp16.key == {"precision": "fp16"}
    assert fp16.config_ids == ["a", "c"] and fp16.n_records == 5
    assert fp16.metrics["mj_per_tok_total"].n == 5


def test_write_summary(tmp_path: Path) -> None:
    metrics = ("mj_per_tok_total", "ttft_s.median", "energy_adjusted_j")
    groups = summarise_groups(RECORDS, by=("precision", "transformers.batch_size"), metrics=metrics, n_resamples=FAST)
    json_path, csv_path = write_summary(tmp_path, groups)
    assert json_path == tmp_path / "summary.json" and csv_path == tmp_path / "summary.csv"

    data = json.loads(json_path.read_text())
    assert data["confidence"] == 0.95 and data["n_resamples"] == FAST
    assert set(data["ci_methods"]) == {"student-t", "bca", "degenerate", "null"}  # what the methods mean
    assert f"bca from n >= {BCA_MIN_N}" in data["ci_rule"]
    mj = data["groups"][0]["metrics"]["mj_per_tok_total"]
    assert mj["ci_method"] == "student-t" and mj["n"] == 3
    assert len(data["groups"]) == 3
    # The key holds the grouping values, then what the group is (config_id, model, engine).
    assert data["groups"][0]["key"] == {
        "precision": "fp16", "transformers.batch_size": 1, "config_id": "a", "model": "tiny", "engine": "transformers",
    }  # fmt: skip
    assert data["groups"][0]["group_by"] == ["precision", "transformers.batch_size"]
    assert data["groups"][0]["metrics"]["mj_per_tok_total"]["values"] == [1.0, 2.0, 1.5]

    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "precision", "transformers.batch_size", "config_id", "model", "engine",
        "metric", "n", "mean", "median", "std", "cv", "ci_low", "ci_high", "ci_method", "baseline_uncertainty",
    ]  # fmt: skip
    assert len(rows) == 1 + 3 * len(metrics)
    first = dict(zip(rows[0], rows[1]))
    assert first["precision"] == "fp16" and first["metric"] == "mj_per_tok_total"
    assert float(first["mean"]) == pytest.approx(1.5) and first["ci_method"] == "student-t" and first["n"] == "3"
    empty = dict(zip(rows[0], rows[3]))
    assert empty["metric"] == "energy_adjusted_j" and empty["n"] == "0" and empty["mean"] == ""
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
