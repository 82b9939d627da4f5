"""The scientific record of one cell: ``result.json``, schema 3.0.

Built from the resolved experiment, the child's typed measurement and the idle baseline of the
GPUs it used; every field of the
public contract (``shared/spec/results-schema.md``) is present, null where a figure cannot
exist (no energy source, no baseline yet). Per-token figures name their denominator: the
headline is per *output* token.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.results.measurement import CellIdentity, CellIdlePower, CellMeasurement, TimelinePhase
from pytest_llem.results.provenance import provenance
from pytest_llem.results.validity import validity_json

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
#: What the notes say of a cell with its energy from Zeus, or with no energy at all (a CPU cell).
REPRODUCIBILITY_NOTES_BY_METER: dict[str, str] = {
    "nvml": REPRODUCIBILITY_NOTES,
    "zeus": "GPU energy from Zeus (ZeusMonitor, which reads the NVML counter; board accuracy about +/-5 %);"
    " window lengthened to min_window_seconds; figures vary with temperature, clocks and driver;"
    " compare cells by mj_per_tok_adjusted across cycles.",
    "none": "no energy measured (energy_unavailable_reason says why): only time, tokens and latency are"
    " figures here; timings on a shared CPU vary with the machine's other load.",
}


def timeline_json(phases: list[TimelinePhase]) -> list[dict[str, Any]]:
    """A cell's timeline as the record and the manifest write it: ``parts`` only where a phase has them."""
    return [phase.model_dump(exclude_none=True) for phase in phases]


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


def _zeus_total(details: dict[str, Any], key: str) -> float | None:
    """CPU or DRAM energy (RAPL, through Zeus), summed over packages; reported apart from GPU energy."""
    values = details.get(key)
    return float(sum(values.values())) if isinstance(values, dict) and values else None


def _adjusted(total_j: float | None, idle: CellIdlePower, window_s: float) -> tuple[float | None, str | None]:
    """Energy above idle over the window, or why it is invalid; ``(None, None)`` when it cannot exist.

    An idle baseline at or above the window's mean power leaves nothing (or less than nothing)
    for the workload: the baseline is wrong for this window (measured hotter, or drifted), not
    the workload free. Such a figure is invalid, never 0, because 0 passes every ``max:`` limit.
    So is one whose baseline the cell's own spot check showed wrong for its window
    (``idle.baseline_invalid_reason``: drifted, and no re-measured baseline agreed).
    """
    baseline_w = idle.baseline_power_w
    if total_j is None or baseline_w is None:
        return None, None
    if idle.baseline_invalid_reason:
        return None, idle.baseline_invalid_reason
    adjusted_j = total_j - baseline_w * window_s
    if adjusted_j > 0:
        return adjusted_j, None
    mean_w = total_j / window_s if window_s > 0 else float("nan")
    return None, (
        f"idle baseline {baseline_w:.1f} W is at or above the window's mean power {mean_w:.1f} W, which leaves"
        " no energy above idle; re-measure the baseline"
    )


def _adjusted_uncertainty(
    idle: CellIdlePower, adjusted_j: float | None, window_s: float, tokens: int
) -> dict[str, float | None]:
    """The baseline's 1-sigma uncertainty and what it means for each adjusted figure; null without one.

    ``energy_adjusted_j`` subtracts ``baseline_power_w x window``, so a baseline error of u watts
    moves it by u x window joules, and ``mj_per_tok_adjusted`` by that per output token. In a
    host-bound cell, whose power sits little above idle, this is the largest error of the figure.
    """
    u_w = idle.baseline_uncertainty_w if adjusted_j is not None else None
    energy_j = u_w * window_s if u_w is not None else None
    return {
        "baseline_uncertainty_w": u_w,
        "energy_adjusted_uncertainty_j": energy_j,
        "mj_per_tok_adjusted_uncertainty": _ratio(energy_j * 1000.0, tokens) if energy_j is not None else None,
    }


def _warnings(m: CellMeasurement, idle: CellIdlePower, adjusted_invalid_reason: str | None) -> list[str]:
    """The child's warnings, then what the record itself can say about missing figures."""
    warnings = list(m.warnings)
    if m.energy.unavailable_reason:
        warnings.append(f"no energy figures: {m.energy.unavailable_reason}")
    elif adjusted_invalid_reason:
        warnings.append(f"no baseline-adjusted figures: {adjusted_invalid_reason}")
    elif idle.baseline_power_w is None and idle.baseline_unavailable_reason:
        warnings.append(f"no baseline-adjusted figures: {idle.baseline_unavailable_reason}")
    return warnings


def build_result(
    *,
    experiment_id: str,
    config_hash: str,
    config: ExperimentConfig,
    measurement: CellMeasurement,
    idle: CellIdlePower,
    identity: CellIdentity,
    version: str,
) -> dict[str, Any]:
    """The result.json record of a completed cell: the contract's fields first, in its order."""
    m = measurement
    energy = m.energy
    tokens, input_tokens, window = m.output_tokens, m.input_tokens, m.window_s
    total_j = energy.total_j
    baseline_w = idle.baseline_power_w
    adjusted_j, adjusted_invalid_reason = _adjusted(total_j, idle, window)
    flops_prefill = 2.0 * m.parameter_count * input_tokens
    flops_decode = 2.0 * m.parameter_count * tokens
    total_flops = flops_prefill + flops_decode
    per_token_j = _ratio(total_j, tokens)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "experiment_id": experiment_id,
        "measurement_config_hash": config_hash,
        "llenergymeasure_version": version,
        "engine": m.engine,
        "engine_version": m.engine_version,
        "model_name": config.model,
        "measurement_methodology": "windowed",
        "warmup_excluded_samples": m.warmup.batches,
        "reproducibility_notes": REPRODUCIBILITY_NOTES_BY_METER.get(energy.meter, REPRODUCIBILITY_NOTES),
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
        "energy_per_device_j": energy.per_device_j,
        "timeseries": m.timeseries,
        # Beyond the contract (optional fields, null when unknown).
        **identity.model_dump(exclude={"timeline"}),
        # Where the cell's time went, phase by phase (parent-side clock); the window is
        # total_inference_time_sec, the rest is the cell's overhead.
        "timeline": timeline_json(identity.timeline),
        "energy_meter": energy.meter,
        "energy_unavailable_reason": energy.unavailable_reason,
        "energy_adjusted_invalid_reason": adjusted_invalid_reason,
        **_adjusted_uncertainty(idle, adjusted_j, window, tokens),
        "energy_error_bound_j": energy.error_bound_j,
        "energy_per_input_and_output_token_j": _ratio(total_j, tokens + input_tokens),
        "total_input_tokens": input_tokens,
        "total_requests": m.requests,
        "passes": m.passes,
        "flops_prefill": flops_prefill,
        "flops_decode": flops_decode,
        "parameter_count": m.parameter_count,
        "model_path": m.model_path,
        "prompts_per_pass": m.prompts_per_pass,
        "input_tokens_per_pass": m.input_tokens_per_pass,
        "batches_per_pass": m.batches_per_pass,
        "device": m.device,
        "gpus": [g.model_dump() for g in m.gpus],
        "gpu_state_start": m.gpu_state_start,
        "gpu_state_end": m.gpu_state_end,
        "load_time_s": m.load_time_s,
        "load_parts_s": m.load_parts_s,
        "warmup": m.warmup.model_dump(mode="json"),
        "batch_latency_s": _latency_summary(m.batch_latencies_s),
        "ttft_s": _latency_summary(m.ttft_s),
        "itl_s": _latency_summary(m.itl_s),
        "request_latency_s": _latency_summary(m.request_latency_s),
        # Said through the adjusted figures above: the reason and the uncertainty.
        **idle.model_dump(exclude={"baseline_power_w", "baseline_invalid_reason", "baseline_uncertainty_w"}),
        "idle_spot_check": m.idle_spot_check,
        "window_t_start_s": m.window_t_start_s,
        "telemetry": m.telemetry.model_dump(mode="json"),
        "energy_details": {k: v for k, v in energy.details.items() if k != "warnings"},  # warnings are above
        "cpu_energy_j": _zeus_total(energy.details, "cpu_energy_j"),
        "dram_energy_j": _zeus_total(energy.details, "dram_energy_j"),
        "peak_memory_bytes": m.peak_memory_bytes,
        "resident_memory_mib": m.resident_memory_mib,
        "software_versions": m.versions,
        "provenance": provenance(identity.nodeid, m.versions),  # host, job ids, git, driver: for merged shards
        "effective_settings": m.effective_settings,
        "warnings": _warnings(m, idle, adjusted_invalid_reason),
        "config": config.model_dump(mode="json"),
    }
    record["validity"] = validity_json(record)  # reason codes of results/validity.py: flagged cells
    return record
