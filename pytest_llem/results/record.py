"""The scientific record of one cell: ``result.json``, schema 3.0.

Built from the resolved experiment and the child's plain measurement; every field of the
public contract (``shared/spec/results-schema.md``) is present, null where a figure cannot
exist (no energy source, no baseline yet). Per-token figures name their denominator: the
headline is per *output* token.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

SCHEMA_VERSION = "3.0"

#: The contract's fields, in its order; a test checks every record has exactly these and more.
CONTRACT_FIELDS: tuple[str, ...] = (
    "schema_version", "experiment_id", "measurement_config_hash", "llenergymeasure_version", "engine",
    "engine_version", "model_name", "measurement_methodology", "warmup_excluded_samples",
    "reproducibility_notes", "total_tokens", "total_energy_j", "total_inference_time_sec",
    "avg_tokens_per_second", "avg_energy_per_token_j", "mj_per_tok_total", "mj_per_tok_adjusted",
    "total_flops", "flops_per_output_token", "flops_per_input_token", "flops_per_second",
    "baseline_power_w", "energy_adjusted_j", "energy_per_device_j", "timeseries",
)  # fmt: skip

REPRODUCIBILITY_NOTES = (
    "GPU energy from the NVML cumulative counter (board accuracy about +/-5 %); window lengthened to"
    " min_window_seconds to bound the counter's ~100 ms edge error; figures vary with temperature,"
    " clocks and driver; compare cells by mj_per_tok_adjusted across cycles."
)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _latency_summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def pct(q: float) -> float:
        # Nearest-rank percentile (the ceil(q n)-th value): always one actually observed. The
        # rounding guard keeps q n = 95.00000000000001 from jumping a rank.
        rank = math.ceil(round(q * len(ordered), 9))
        return ordered[min(len(ordered), max(1, rank)) - 1]

    return {
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "min": ordered[0],
        "max": ordered[-1],
    }


def _zeus_total(details: dict[str, Any] | None, key: str) -> float | None:
    """CPU or DRAM energy (RAPL, through Zeus), summed over packages; reported apart from GPU energy."""
    values = (details or {}).get(key)
    return float(sum(values.values())) if isinstance(values, dict) and values else None


def build_result(
    *,
    experiment_id: str,
    config_hash: str,
    config: dict[str, Any],
    measurement: dict[str, Any],
    version: str,
    identity: dict[str, Any],
) -> dict[str, Any]:
    """The result.json record of a completed cell."""
    energy = measurement["energy"]
    tokens = int(measurement["output_tokens"])
    input_tokens = int(measurement["input_tokens"])
    window = float(measurement["window_s"])
    total_j = energy["total_j"]
    baseline_w = measurement.get("baseline_power_w")
    adjusted_j = max(0.0, total_j - baseline_w * window) if total_j is not None and baseline_w is not None else None
    params = int(measurement.get("parameter_count") or 0)
    flops_prefill = 2.0 * params * input_tokens
    flops_decode = 2.0 * params * tokens
    total_flops = flops_prefill + flops_decode
    per_token_j = _ratio(total_j, tokens)
    warnings = list(measurement.get("warnings", []))
    if energy["unavailable_reason"]:
        warnings.append(f"no energy figures: {energy['unavailable_reason']}")
    elif total_j is not None and baseline_w is not None and window and baseline_w * window > total_j:
        warnings.append(
            f"idle baseline {baseline_w:.1f} W is above the window's mean power {total_j / window:.1f} W:"
            " adjusted energy was clamped to zero; re-measure the baseline"
        )
    elif baseline_w is None and measurement.get("baseline_unavailable_reason"):
        warnings.append(f"no baseline-adjusted figures: {measurement['baseline_unavailable_reason']}")
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "experiment_id": experiment_id,
        "measurement_config_hash": config_hash,
        "llenergymeasure_version": version,
        "engine": measurement["engine"],
        "engine_version": measurement["engine_version"],
        "model_name": config["model"],
        "measurement_methodology": "windowed",
        "warmup_excluded_samples": int(measurement["warmup"]["batches"]),
        "reproducibility_notes": REPRODUCIBILITY_NOTES,
        "total_tokens": tokens,
        "total_energy_j": total_j,
        "total_inference_time_sec": window,
        "avg_tokens_per_second": _ratio(tokens, window),
        "avg_energy_per_token_j": per_token_j,
        "mj_per_tok_total": per_token_j * 1000.0 if per_token_j is not None else None,
        "mj_per_tok_adjusted": _ratio(adjusted_j * 1000.0, tokens) if adjusted_j is not None else None,
        "total_flops": total_flops,
        "flops_per_output_token": _ratio(total_flops, tokens),
        "flops_per_input_token": _ratio(total_flops, input_tokens),
        "flops_per_second": _ratio(total_flops, window),
        "baseline_power_w": baseline_w,
        "energy_adjusted_j": adjusted_j,
        "energy_per_device_j": energy["per_device_j"],
        "timeseries": measurement.get("timeseries"),
        # Beyond the contract (optional fields, null when unknown).
        **identity,
        "energy_meter": energy["meter"],
        "energy_unavailable_reason": energy["unavailable_reason"],
        "energy_error_bound_j": energy.get("error_bound_j"),
        "energy_per_input_and_output_token_j": _ratio(total_j, tokens + input_tokens),
        "total_input_tokens": input_tokens,
        "total_requests": measurement["requests"],
        "passes": measurement["passes"],
        "flops_prefill": flops_prefill,
        "flops_decode": flops_decode,
        "parameter_count": params,
        "device": measurement["device"],
        "gpus": measurement["gpus"],
        "gpu_state_start": measurement["gpu_state_start"],
        "gpu_state_end": measurement["gpu_state_end"],
        "load_time_s": measurement["load_time_s"],
        "warmup": measurement["warmup"],
        "batch_latency_s": _latency_summary(measurement["batch_latencies_s"]),
        "ttft_s": _latency_summary(measurement.get("ttft_s", [])),
        "itl_s": _latency_summary(measurement.get("itl_s", [])),
        "request_latency_s": _latency_summary(measurement.get("request_latency_s", [])),
        "baseline_per_device_w": measurement.get("baseline_per_device_w"),
        "baseline_std_w": measurement.get("baseline_std_w"),
        "baseline_age_s": measurement.get("baseline_age_s"),
        "baseline_method": measurement.get("baseline_method"),
        "baseline_source": measurement.get("baseline_source"),
        "baseline_unavailable_reason": measurement.get("baseline_unavailable_reason"),
        "idle_spot_check": measurement.get("idle_spot_check"),
        "window_t_start_s": measurement.get("window_t_start_s"),
        "telemetry": measurement.get("telemetry"),
        "energy_details": energy.get("details"),
        "cpu_energy_j": _zeus_total(energy.get("details"), "cpu_energy_j"),
        "dram_energy_j": _zeus_total(energy.get("details"), "dram_energy_j"),
        "peak_memory_bytes": measurement["peak_memory_bytes"],
        "resident_memory_mib": measurement.get("resident_memory_mib"),
        "software_versions": measurement["versions"],
        "effective_settings": measurement["effective_settings"],
        "warnings": warnings,
        "config": config,
    }
    return record
