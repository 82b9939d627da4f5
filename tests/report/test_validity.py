"""results/validity.py: each reason code is raised by its condition, and only by it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.results.validity import CODES, assess, record_validity
from tests.results.test_record import build, measurement

ROOT = Path(__file__).resolve().parents[2]
H200_VLLM = ROOT / "benchmarks/results/2026-11-30-h200-timeline/res/engines-llama3-8b_2026-11-30T07-13-18"


def codes(record: dict[str, Any]) -> list[str]:
    return [f.code for f in assess(record)]


def test_a_sound_cell_has_no_flag_and_build_result_stores_the_field() -> None:
    record = build(measurement())
    assert record["validity"] == [] and codes(record) == []


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"window_s": 2.0}, "short_window", "2.00 s"),
        ({"energy": {"error_bound_j": 30.0}}, "short_window", "2.0 %"),
        ({"telemetry": {"samples_in_window": 4}}, "short_window", "4 telemetry samples"),
        ({"warmup": {"batches": 20, "full_pass": True, "latencies_s": [], "stable": False, "final_cv": 0.2, "rule": {}}},
         "not_steady", "final CV 0.200"),
        ({"telemetry": {"throttle": {"n_samples": 100, "slowed_share": 0.3, "reasons": {"sw_power_cap": 0.3}}}},
         "power_capped", "sw_power_cap in 30 %"),
        ({"gpu_state_start": [{"power_limit_w": 150.0}]}, "power_capped", "100 % of its 150 W limit"),
        ({"telemetry": {"throttle": {"n_samples": 100, "slowed_share": 0.2, "reasons": {"hw_thermal_slowdown": 0.2}}}},
         "thermal_throttled", "hw_thermal_slowdown in 20 %"),
    ],
    ids=["window-seconds", "edge-error", "few-samples", "warmup", "power-reason", "power-vs-limit", "thermal"],
)  # fmt: skip
def test_each_code_and_its_reason(overrides: dict[str, Any], code: str, words: str) -> None:
    m = measurement(**overrides)
    if "telemetry" in overrides:
        m["telemetry"] = {"throttle": None, "cross_check": [], "mean_utilization_gpu_pct": 95.0, **overrides["telemetry"]}
    record = build(m)
    (flag,) = assess(record)
    assert flag.code == code and code in CODES and words in flag.message, flag.message
    assert record["validity"] == [flag.to_json()]


def test_below_the_thresholds_nothing_is_flagged() -> None:
    m = measurement(window_s=5.0, gpu_state_start=[{"power_limit_w": 700.0}])
    m["telemetry"] = {"throttle": {"n_samples": 100, "slowed_share": 0.05, "reasons": {"sw_power_cap": 0.05}},
                      "cross_check": [], "samples_in_window": 10}  # fmt: skip
    assert codes(build(m)) == []


def test_a_batch_below_half_the_requested_size_is_flagged() -> None:
    config = ExperimentConfig.model_validate({"model": "org/model", "transformers": {"batch_size": 32}})
    record = build(measurement(prompts_per_pass=8, batches_per_pass=1), config=config)
    (flag,) = assess(record)
    assert flag.code == "batch_underfilled" and "8 prompt(s) in 1 batch(es)" in flag.message
    assert "transformers.batch_size = 32" in flag.message
    full = ExperimentConfig.model_validate({"model": "org/model", "transformers": {"batch_size": 8}})
    assert codes(build(measurement(prompts_per_pass=8, batches_per_pass=1), config=full)) == []


def test_vllm_batch_is_bounded_by_prompts_and_by_its_kv_cache() -> None:
    config = ExperimentConfig.model_validate({"model": "org/model", "engine": "vllm", "max_output_tokens": 256})
    resolved = {"max_num_seqs": 256, "num_gpu_blocks": 100, "block_size": 16}  # 1600 tokens: 5 sequences of 300
    m = measurement(engine="vllm", prompts_per_pass=64, batches_per_pass=1, input_tokens_per_pass=64 * 40,
                    effective_settings={"resolved": resolved})  # fmt: skip
    (flag,) = assess(build(m, config=config))
    assert flag.code == "batch_underfilled" and "KV cache holds about 5 sequence(s)" in flag.message
    assert "vllm.max_num_seqs = 256" in flag.message


def test_a_real_h200_vllm_cell_at_its_power_cap_is_flagged() -> None:
    (path,) = H200_VLLM.glob("*vllm*/result.json")
    record = json.loads(path.read_text())
    assert "validity" not in record  # written before the field: judged on loading
    flags = record_validity(record)
    assert [f["code"] for f in flags] == ["power_capped"] and "sw_power_cap in 26 %" in flags[0]["message"]


def test_a_stored_field_is_kept_as_written() -> None:
    assert record_validity({"validity": [{"code": "x", "message": "y"}], "total_inference_time_sec": 0.1}) == [
        {"code": "x", "message": "y"}
    ]
