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


def test_ci_contains_the_mean_and_uses_bca() -> None:
    s = summarise(VALUES, "m", n_resamples=FAST)
    assert s.ci_method == "bca"
    assert s.ci_low is not None and s.ci_high is not None and s.mean is not None
    assert s.ci_low < s.mean < s.ci_high


def test_ci_matches_scipy_bootstrap_called_directly() -> None:
    s = summarise(VALUES, "m", n_resamples=FAST, seed=7)
    low, high = _scipy_ci(VALUES, "BCa", FAST, 7)
    assert (s.ci_low, s.ci_high) == (low, high)


def test_ci_narrows_as_n_grows() -> None:
    draws = np.random.default_rng(123).normal(100.0, 5.0, size=200).tolist()
    widths = []
    for n in (5, 20, 200):
        s = summarise(draws[:n], "m", n_resamples=FAST)
        assert s.ci_method == "bca"
        assert s.ci_low is not None and s.ci_high is not None and s.mean is not None
        assert s.ci_low <= s.mean <= s.ci_high
        widths.append(s.ci_high - s.ci_low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_two_values_use_percentile() -> None:
    s = summarise([1.0, 2.0], "m", n_resamples=FAST, seed=3)
    assert s.ci_method == "percentile"
    assert (s.ci_low, s.ci_high) == _scipy_ci([1.0, 2.0], "percentile", FAST, 3)
    assert s.std == pytest.approx(math.sqrt(0.5))


def test_bca_failure_falls_back_to_percentile() -> None:
    # One 1 among thirty zeros, two resamples: with this seed both resample means fall on the same
    # side of the sample mean, so BCa's bias correction is infinite and scipy returns NaN bounds.
    values = [0.0] * 30 + [1.0]
    with pytest.warns(stats.DegenerateDataWarning), np.errstate(all="ignore"):
        low, high = _scipy_ci(values, "BCa", 2, 11)
    assert math.isnan(low) and math.isnan(high)
    s = summarise(values, "m", n_resamples=2, seed=11)  # no warning escapes (filterwarnings=error)
    assert s.ci_method == "percentile"
    assert (s.ci_low, s.ci_high) == _scipy_ci(values, "percentile", 2, 11)


def test_constant_values_are_degenerate() -> None:
    s = summarise([2.5, 2.5, 2.5, 2.5], "m", n_resamples=FAST)
    assert s.ci_method == "degenerate"
    assert s.ci_low == s.ci_high == s.mean == 2.5
    assert s.std == 0.0 and s.cv == 0.0


def test_single_and_empty() -> None:
    one = summarise([3.0], "m")
    assert (one.n, one.mean, one.median) == (1, 3.0, 3.0)
    assert one.std is None and one.cv is None and one.ci_method is None and one.ci_low is None
    none = summarise([], "m")
    assert none.n == 0 and none.mean is None and none.values == ()


def test_zero_mean_has_no_cv() -> None:
    s = summarise([-1.0, 1.0, 0.0], "m", n_resamples=FAST)
    assert s.mean == 0.0 and s.cv is None and s.std == pytest.approx(1.0)


def test_none_values_are_ignored() -> None:
    s = summarise([1.0, None, 3.0, None, 2.0], "m", n_resamples=FAST)
    assert s.n == 3
    assert s.values == (1.0, 3.0, 2.0)
    assert s.mean == pytest.approx(2.0)


def test_reproducible_with_same_seed() -> None:
    a = summarise(VALUES, "m", n_resamples=FAST, seed=5)
    b = summarise(VALUES, "m", n_resamples=FAST, seed=5)
    assert a == b
    c = summarise(VALUES, "m", n_resamples=FAST, seed=6)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_bad_confidence_is_rejected() -> None:
    with pytest.raises(ValueError, match="confidence"):
        summarise(VALUES, "m", confidence=95)


def test_to_json_round_trips_through_json() -> None:
    s = summarise(VALUES, "m", n_resamples=FAST)
    data = json.loads(json.dumps(s.to_json()))
    assert data["values"] == VALUES and data["ci_method"] == "bca" and data["n"] == 6
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
    assert mj.mean == pytest.approx(1.5) and mj.ci_method == "bca"
    assert a.metrics["energy_adjusted_j"].n == 0
    assert a.metrics["itl_s.median"].n == 0
    assert a.metrics["ttft_s.median"].values == (0.1, 0.1, 0.1)
    assert a.metrics["ttft_s.median"].ci_method == "degenerate"
    c = groups[2]
    assert c.metrics["ttft_s.median"].n == 1  # the null latency summary is left out
    assert c.metrics["mj_per_tok_total"].ci_method == "percentile"


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
    assert "bca" in data["ci_methods"]
    assert len(data["groups"]) == 3
    assert data["groups"][0]["key"] == {"precision": "fp16", "transformers.batch_size": 1}
    assert data["groups"][0]["metrics"]["mj_per_tok_total"]["values"] == [1.0, 2.0, 1.5]

    with csv_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [
        "precision", "transformers.batch_size",
        "metric", "n", "mean", "median", "std", "cv", "ci_low", "ci_high", "ci_method",
    ]  # fmt: skip
    assert len(rows) == 1 + 3 * len(metrics)
    first = dict(zip(rows[0], rows[1]))
    assert first["precision"] == "fp16" and first["metric"] == "mj_per_tok_total"
    assert float(first["mean"]) == pytest.approx(1.5) and first["ci_method"] == "bca"
    empty = dict(zip(rows[0], rows[3]))
    assert empty["metric"] == "energy_adjusted_j" and empty["n"] == "0" and empty["mean"] == ""
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind
