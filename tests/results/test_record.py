"""results/record.py: build_result turns a typed measurement into the schema-3.0 record."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from pydantic import ValidationError

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.results.measurement import CellIdentity, CellIdlePower, CellMeasurement
from pytest_llem.results.record import CONTRACT_FIELDS, SCHEMA_VERSION, build_result

#: The result.json fields of shared/spec/results-schema.md, in its order: a public contract.
SPEC_FIELDS = (
    "schema_version", "experiment_id", "measurement_config_hash", "llenergymeasure_version", "engine",
    "engine_version", "model_name", "measurement_methodology", "warmup_excluded_samples",
    "reproducibility_notes", "total_tokens", "total_energy_j", "total_inference_time_sec",
    "avg_tokens_per_second", "avg_energy_per_token_j", "mj_per_tok_total", "mj_per_tok_adjusted",
    "total_flops", "flops_per_output_token", "flops_per_input_token", "flops_per_second",
    "baseline_power_w", "energy_adjusted_j", "energy_per_device_j", "timeseries",
)  # fmt: skip

ENERGY_DERIVED = (
    "total_energy_j", "avg_energy_per_token_j", "mj_per_tok_total", "mj_per_tok_adjusted", "energy_adjusted_j",
    "energy_per_device_j", "energy_per_input_and_output_token_j",
)  # fmt: skip


def measurement(**overrides: Any) -> dict[str, Any]:
    """A measurement as JSON, as it crosses from the child (baseline_* keys: the idle baseline)."""
    m: dict[str, Any] = {
        "engine": "transformers",
        "engine_version": "4.44.0",
        "effective_settings": {"dtype": "bfloat16"},
        "device": "NVIDIA H100",
        "gpus": [{"uuid": "GPU-1", "name": "H100", "cuda_index": 0}],
        "gpu_state_start": [{"memory_used_mib": 1000.0}],
        "gpu_state_end": [{"memory_used_mib": 9000.0}],
        "idle_spot_check": None,
        "model_path": "/models/m",
        "parameter_count": 1_000_000,
        "prompts_per_pass": 8,
        "input_tokens_per_pass": 400,
        "batches_per_pass": 2,
        "load_time_s": 3.5,
        "warmup": {"batches": 2, "full_pass": True, "latencies_s": [0.5, 0.4], "stable": True, "final_cv": 0.01, "rule": {}},
        "window_s": 10.0,
        "window_t_start_s": 4.2,
        "passes": 5,
        "output_tokens": 2000,
        "input_tokens": 500,
        "requests": 40,
        "batch_latencies_s": [1.0, 2.0, 3.0, 4.0],
        "ttft_s": [],
        "itl_s": [],
        "request_latency_s": [],
        "energy": {
            "meter": "nvml",
            "total_j": 1500.0,
            "per_device_j": [1500.0],
            "unavailable_reason": None,
            "error_bound_j": 1.2,
            "window_s": 10.0,
            "details": {},
        },
        "telemetry": {"throttle": None, "cross_check": [], "mean_utilization_gpu_pct": 95.0},
        "timeseries": "timeseries.parquet",
        "peak_memory_bytes": 123456789,
        "resident_memory_mib": [9000.0],
        "versions": {"python": "3.11.7", "pytest_llem": "0.1.0"},
        "warnings": [],
    }
    for key, value in overrides.items():
        if key == "energy":
            m["energy"] = {**m["energy"], **value}
        else:
            m[key] = value
    return m


IDENTITY: dict[str, Any] = {
    "study_name": "demo", "study_design_hash": None, "config_id": "cfg0", "cycle": 0, "position": 1,
    "nodeid": "demo.llem.yaml::cfg0::c0", "cell_wall_time_s": 20.0,
    "cell_started_at": "2026-11-30T00:00:00.000+00:00", "cell_ended_at": "2026-11-30T00:00:20.000+00:00",
}  # fmt: skip


def build(
    m: dict[str, Any] | None = None,
    config: ExperimentConfig | None = None,
    experiment_id: str = "cfg0-c0",
    config_hash: str = "0123456789abcdef",
    **identity: Any,
) -> dict[str, Any]:
    """build_result on a measurement given as JSON; its baseline_* keys become the cell's idle baseline."""
    data = dict(measurement() if m is None else m)
    idle = CellIdlePower.model_validate({k: data.pop(k) for k in list(data) if k.startswith("baseline_")})
    return build_result(
        experiment_id=experiment_id,
        config_hash=config_hash,
        config=config or ExperimentConfig(model="org/model"),
        measurement=CellMeasurement.model_validate(data),
        idle=idle,
        identity=CellIdentity.model_validate({**IDENTITY, **identity}),
        version="0.1.0",
    )


def test_contract_fields_match_spec() -> None:
    assert CONTRACT_FIELDS == SPEC_FIELDS


@pytest.mark.parametrize(
    "m",
    [
        measurement(),
        measurement(baseline_power_w=50.0),
        measurement(energy={"total_j": None, "per_device_j": None, "unavailable_reason": "no GPU"}),
        measurement(output_tokens=0, input_tokens=0, window_s=0.0, parameter_count=0, batch_latencies_s=[]),
    ],
    ids=["plain", "baseline", "no-energy", "all-zero"],
)
def test_every_contract_field_present_and_json_ready(m: dict[str, Any]) -> None:
    original = copy.deepcopy(m)
    record = build(m)
    assert [f for f in CONTRACT_FIELDS if f not in record] == []
    assert list(record)[: len(CONTRACT_FIELDS)] == list(CONTRACT_FIELDS)  # contract first, in order
    assert json.loads(json.dumps(record)) == record  # plain JSON, no default= needed
    assert m == original  # the measurement is not modified
    assert record["schema_version"] == SCHEMA_VERSION == "3.0"
    assert record["experiment_id"] == "cfg0-c0"
    assert record["measurement_config_hash"] == "0123456789abcdef"
    assert record["llenergymeasure_version"] == "0.1.0"
    assert record["engine"] == "transformers" and record["engine_version"] == "4.44.0"
    assert record["model_name"] == "org/model"
    assert record["measurement_methodology"] in ("total", "steady_state", "windowed")
    assert isinstance(record["reproducibility_notes"], str) and record["reproducibility_notes"]
    assert isinstance(record["total_tokens"], int)
    assert record["study_name"] == "demo" and record["cycle"] == 0  # identity merged in


def test_per_token_and_throughput_figures() -> None:
    record = build()
    assert record["total_tokens"] == 2000
    assert record["total_energy_j"] == 1500.0
    assert record["total_inference_time_sec"] == 10.0
    assert record["avg_tokens_per_second"] == pytest.approx(200.0)
    assert record["avg_energy_per_token_j"] == pytest.approx(0.75)
    assert record["mj_per_tok_total"] == pytest.approx(1000 * 1500.0 / 2000)
    assert record["energy_per_input_and_output_token_j"] == pytest.approx(1500.0 / 2500)
    assert record["total_input_tokens"] == 500
    assert record["energy_per_device_j"] == [1500.0]
    assert record["timeseries"] == "timeseries.parquet"
    assert record["warmup_excluded_samples"] == 2
    # No baseline: adjusted figures are null, not silently equal to the raw ones.
    assert record["baseline_power_w"] is None
    assert record["energy_adjusted_j"] is None
    assert record["mj_per_tok_adjusted"] is None


def test_baseline_adjusted_energy() -> None:
    record = build(measurement(baseline_power_w=60.0))
    assert record["baseline_power_w"] == 60.0
    assert record["energy_adjusted_j"] == pytest.approx(1500.0 - 60.0 * 10.0)  # 900 J
    assert record["mj_per_tok_adjusted"] == pytest.approx(1000 * 900.0 / 2000)
    assert record["mj_per_tok_total"] == pytest.approx(750.0)  # raw figure untouched
    assert record["total_energy_j"] == 1500.0


@pytest.mark.parametrize("baseline_w", [200.0, 150.0], ids=["above", "equal"])
def test_adjusted_figures_are_invalid_not_zero_when_baseline_reaches_average_power(baseline_w: float) -> None:
    # Average power 150 W: a baseline of 150 W or more leaves no energy above idle. It was once
    # clamped to 0 J / 0 mJ per token, which passes every max: limit.
    record = build(measurement(baseline_power_w=baseline_w))
    assert record["energy_adjusted_j"] is None
    assert record["mj_per_tok_adjusted"] is None
    reason = record["energy_adjusted_invalid_reason"]
    assert reason.startswith(f"idle baseline {baseline_w:.1f} W is at or above the window's mean power 150.0 W")
    assert f"no baseline-adjusted figures: {reason}" in record["warnings"]
    assert record["baseline_power_w"] == baseline_w  # what was refused stays on record
    assert record["total_energy_j"] == 1500.0
    assert record["mj_per_tok_total"] == pytest.approx(750.0)


def test_an_invalid_adjusted_figure_breaks_a_max_limit_instead_of_passing_it() -> None:
    from pytest_llem.verdicts.limits import Limit, breaches

    record = build(measurement(baseline_power_w=200.0))
    limits = [Limit("mj_per_tok_adjusted", "max", 50.0, "t.llem.yaml:3"), Limit("energy_adjusted_j", "max", 1.0, "cli")]
    found = breaches(record, limits)
    assert len(found) == 2 and all("not measured" in line for line in found)


def test_a_valid_adjusted_figure_has_no_invalid_reason() -> None:
    assert build(measurement(baseline_power_w=60.0))["energy_adjusted_invalid_reason"] is None
    assert build(measurement())["energy_adjusted_invalid_reason"] is None  # no baseline: unavailable, not invalid


@pytest.mark.parametrize("power_w", [0.0, -5.0, float("nan"), float("inf")])
def test_the_cells_idle_power_cannot_be_impossible(power_w: float) -> None:
    with pytest.raises(ValidationError, match="baseline_power_w"):
        CellIdlePower(baseline_power_w=power_w)
    with pytest.raises(ValidationError, match="baseline_per_device_w"):
        CellIdlePower(baseline_power_w=70.0, baseline_per_device_w=[70.0, power_w])


def test_baseline_reason_warned_when_missing() -> None:
    record = build(measurement(baseline_power_w=None, baseline_unavailable_reason="no idle baseline fixture in use"))
    assert record["energy_adjusted_j"] is None and record["mj_per_tok_adjusted"] is None
    assert any("no idle baseline fixture in use" in w for w in record["warnings"])
    assert record["baseline_unavailable_reason"] == "no idle baseline fixture in use"


def test_no_energy_means_null_energy_figures_and_a_warning() -> None:
    m = measurement(
        energy={"meter": "none", "total_j": None, "per_device_j": None, "unavailable_reason": "NVML not available"},
        baseline_power_w=55.0,
        warnings=["earlier warning"],
    )
    record = build(m)
    for field in ENERGY_DERIVED:
        assert record[field] is None, field
    assert record["energy_unavailable_reason"] == "NVML not available"
    assert record["warnings"][0] == "earlier warning"
    assert any("NVML not available" in w and "energy" in w for w in record["warnings"][1:])
    # Figures that do not need energy are still there.
    assert record["avg_tokens_per_second"] == pytest.approx(200.0)
    assert record["total_flops"] == pytest.approx(2 * 1_000_000 * 2500)
    assert m["warnings"] == ["earlier warning"]  # the measurement's list is not appended to
    # A cell without energy is not described as measured by the NVML counter (a CPU cell was).
    assert record["reproducibility_notes"].startswith("no energy measured") and "NVML" not in record["reproducibility_notes"]
    assert "NVML cumulative counter" in build(measurement())["reproducibility_notes"]


def test_zero_tokens_and_zero_window_give_null_ratios() -> None:
    record = build(measurement(output_tokens=0, window_s=0.0, baseline_power_w=10.0))
    assert record["avg_tokens_per_second"] is None
    assert record["avg_energy_per_token_j"] is None
    assert record["mj_per_tok_total"] is None
    assert record["mj_per_tok_adjusted"] is None
    assert record["flops_per_output_token"] is None
    assert record["flops_per_second"] is None
    assert record["energy_adjusted_j"] == 1500.0  # 0 s window: nothing to subtract


def test_flops_estimate() -> None:
    record = build(measurement(parameter_count=7_000_000_000, input_tokens=500, output_tokens=2000, window_s=10.0))
    total = 2.0 * 7e9 * (500 + 2000)
    assert record["total_flops"] == pytest.approx(total)
    assert record["flops_prefill"] == pytest.approx(2.0 * 7e9 * 500)
    assert record["flops_decode"] == pytest.approx(2.0 * 7e9 * 2000)
    assert record["flops_per_output_token"] == pytest.approx(total / 2000)
    assert record["flops_per_input_token"] == pytest.approx(total / 500)
    assert record["flops_per_second"] == pytest.approx(total / 10.0)
    assert record["parameter_count"] == 7_000_000_000


def test_flops_null_when_divisor_zero() -> None:
    record = build(measurement(input_tokens=0))
    assert record["total_flops"] == pytest.approx(2.0 * 1e6 * 2000)
    assert record["flops_per_input_token"] is None
    assert record["flops_per_output_token"] == pytest.approx(2.0 * 1e6)
    record = build(measurement(output_tokens=0))
    assert record["flops_per_output_token"] is None
    assert record["flops_per_input_token"] == pytest.approx(2.0 * 1e6)
    # No parameters counted: zero FLOPs, not a crash; a missing count is refused at the boundary.
    assert build(measurement(parameter_count=0))["total_flops"] == 0.0
    with pytest.raises(ValidationError, match="parameter_count"):
        build(measurement(parameter_count=None))


def test_cpu_and_dram_energy_from_zeus_details() -> None:
    details = {"cpu_energy_j": {"0": 10.0, "1": 5.5}, "dram_energy_j": {"0": 2.0}}
    record = build(measurement(energy={"details": details}))
    assert record["cpu_energy_j"] == pytest.approx(15.5)
    assert record["dram_energy_j"] == pytest.approx(2.0)
    assert record["total_energy_j"] == 1500.0  # GPU energy is reported apart
    plain = build()
    assert plain["cpu_energy_j"] is None and plain["dram_energy_j"] is None


# --- latency summaries --------------------------------------------------------------------


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = -(-round(q * len(ordered) * 1e6) // 1_000_000)  # ceil(q*n), robust to float fuzz
    return ordered[max(1, rank) - 1]


def test_latency_summary_on_known_list() -> None:
    values = [float(v) for v in range(1, 11)]
    random.Random(0).shuffle(values)
    record = build(measurement(batch_latencies_s=values, ttft_s=[0.2, 0.1, 0.3], itl_s=[0.01], request_latency_s=[]))
    assert record["batch_latency_s"] == {"mean": 5.5, "median": 5.5, "p95": 10.0, "p99": 10.0, "min": 1.0, "max": 10.0}
    assert record["ttft_s"] == {
        "mean": pytest.approx(0.2), "median": 0.2, "p95": 0.3, "p99": 0.3, "min": 0.1, "max": 0.3,
    }  # fmt: skip
    assert record["itl_s"] == {"mean": 0.01, "median": 0.01, "p95": 0.01, "p99": 0.01, "min": 0.01, "max": 0.01}
    assert record["request_latency_s"] is None  # no samples: no summary


def test_latency_summary_of_empty_lists() -> None:
    record = build(measurement(batch_latencies_s=[], ttft_s=[], itl_s=[], request_latency_s=[]))
    assert record["batch_latency_s"] is None
    assert record["ttft_s"] is None and record["itl_s"] is None and record["request_latency_s"] is None


@pytest.mark.parametrize("n", [1, 2, 3, 10, 19, 21, 40, 99, 101])
def test_latency_percentiles_nearest_rank(n: int) -> None:
    values = [float(v) for v in range(1, n + 1)]
    summary = build(measurement(batch_latencies_s=values))["batch_latency_s"]
    assert summary["p95"] == _nearest_rank(values, 0.95)
    assert summary["p99"] == _nearest_rank(values, 0.99)
    assert summary["p95"] in values and summary["p99"] in values


@pytest.mark.parametrize("n", [20, 100, 60])
def test_latency_percentiles_nearest_rank_integral_rank(n: int) -> None:
    values = [float(v) for v in range(1, n + 1)]
    summary = build(measurement(batch_latencies_s=values))["batch_latency_s"]
    assert (summary["p95"], summary["p99"]) == (_nearest_rank(values, 0.95), _nearest_rank(values, 0.99))
