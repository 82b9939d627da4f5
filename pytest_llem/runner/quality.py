"""Judging a cell's conditions: pre-flight checks, throttling, and quality warnings.

Plain functions over the numbers the cell collected (GPU state from NVML, telemetry samples,
the energy reading), so each rule is easy to read and to test. A warning is a sentence a
researcher can act on; none of them changes a figure.
"""

from __future__ import annotations

import statistics
from typing import Any

#: NVML clock-event (throttle) reason bits, by name.
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: Reasons that slow a busy GPU down (idle, a clock setting or sync boost do not).
SLOWDOWN_BITS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80

BUSY_UTILISATION_PCT = 10.0
LOW_UTILISATION_PCT = 50.0
THERMAL_DRIFT_C = 10.0
THROTTLED_SHARE = 0.05
SHORT_WINDOW_ERROR_SHARE = 0.01


def spot_summary(samples: list[dict[str, Any]], uuids: list[str]) -> dict[str, dict[str, float | None]]:
    """Mean power and utilisation per GPU over an idle spot check."""
    out: dict[str, dict[str, float | None]] = {}
    for idx, uuid in enumerate(uuids):
        rows = [s for s in samples if s["gpu_idx"] == idx]
        powers = [s["power_w"] for s in rows if s.get("power_w") is not None]
        utils = [s["utilization_gpu_pct"] for s in rows if s.get("utilization_gpu_pct") is not None]
        out[uuid] = {
            "power_w": statistics.fmean(powers) if powers else None,
            "utilization_gpu_pct": statistics.fmean(utils) if utils else None,
            "n_samples": float(len(rows)),
        }
    return out


def preflight_problems(
    gpu_state: list[dict[str, Any]],
    spot: dict[str, dict[str, float | None]],
    idle_reference_w: dict[str, float],
    drift_threshold: float,
) -> list[str]:
    """What makes a GPU unfit to measure on right now: other work on it, or it is not idle."""
    problems: list[str] = []
    for state in gpu_state:
        uuid = state.get("uuid", "?")
        foreign = state.get("foreign_compute_processes")
        if foreign:
            memory = state.get("foreign_memory_mib")
            extra = f", holding {memory:.0f} MiB" if isinstance(memory, (int, float)) and memory else ""
            problems.append(f"GPU {uuid}: {foreign} other compute process(es) running{extra}")
        figures = spot.get(uuid, {})
        util = figures.get("utilization_gpu_pct")
        if util is not None and util > BUSY_UTILISATION_PCT:
            problems.append(f"GPU {uuid}: {util:.0f} % utilisation while this cell was idle")
        power = figures.get("power_w")
        reference = idle_reference_w.get(uuid)
        if power is not None and reference and power > reference * (1.0 + drift_threshold):
            problems.append(
                f"GPU {uuid}: idle power {power:.1f} W is above the baseline {reference:.1f} W by more than"
                f" {drift_threshold:.0%}"
            )
    return problems


def throttle_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of samples per throttle reason, and the share slowed down by power or heat."""
    reasons = [int(s["throttle_reasons"]) for s in samples if s.get("throttle_reasons") is not None]
    if not reasons:
        return {"n_samples": 0, "slowed_share": None, "reasons": {}}
    shares = {
        name: sum(1 for r in reasons if r & bit) / len(reasons)
        for bit, name in THROTTLE_BITS.items()
        if any(r & bit for r in reasons)
    }
    return {
        "n_samples": len(reasons),
        "slowed_share": sum(1 for r in reasons if r & SLOWDOWN_BITS) / len(reasons),
        "reasons": shares,
    }


def window_temperatures(samples: list[dict[str, Any]], uuids: list[str]) -> list[dict[str, Any]]:
    """Each GPU's temperature at the first and last sample of the window, and its peak.

    The rise that matters for a reading is the one inside the window: power draw grows with
    temperature (leakage), so a window that starts before the GPU has settled trends upward.
    The rise over the whole cell says little, since a cell starts from an idle, cool GPU and
    warm-up heats it (15-26 C on an H100 for an 8 B model).
    """
    rows = []
    for idx, uuid in enumerate(uuids):
        temps = [s["temperature_c"] for s in samples if s["gpu_idx"] == idx and s.get("temperature_c") is not None]
        rows.append(
            {
                "gpu_uuid": uuid,
                "start_c": temps[0] if temps else None,
                "end_c": temps[-1] if temps else None,
                "max_c": max(temps) if temps else None,
            }
        )
    return rows


def window_warnings(
    *,
    energy_j: float | None,
    error_bound_j: float | None,
    cross_check: list[dict[str, Any]],
    cross_check_tolerance: float,
    gpu_state_start: list[dict[str, Any]],
    temperatures: list[dict[str, Any]],
    throttle: dict[str, Any],
    mean_utilisation_pct: float | None,
) -> list[str]:
    """Quality warnings about a measured window."""
    warnings: list[str] = []
    if energy_j and error_bound_j is not None and error_bound_j / energy_j > SHORT_WINDOW_ERROR_SHARE:
        warnings.append(
            f"short window: the energy counter's edge error may reach {100 * error_bound_j / energy_j:.1f} %"
            " of the window's energy; raise measurement.min_window_seconds"
        )
    for check in cross_check:
        gap = check.get("relative_gap")
        if gap is not None and gap > cross_check_tolerance:
            warnings.append(
                f"GPU {check['gpu_uuid']}: energy counter ({check['counter_j']:.1f} J) and integral of sampled power"
                f" ({check['integral_j']:.1f} J) differ by {100 * gap:.1f} %"
            )
    for start in gpu_state_start:
        if start.get("persistence_mode") is False:
            warnings.append(f"GPU {start.get('uuid')}: persistence mode is off (clocks and idle power less stable)")
    for row in temperatures:
        t0, t1 = row.get("start_c"), row.get("end_c")
        if t0 is not None and t1 is not None and t1 - t0 > THERMAL_DRIFT_C:
            warnings.append(
                f"GPU {row.get('gpu_uuid')}: temperature rose {t1 - t0:.0f} C during the measured window (thermal"
                " drift: the GPU had not settled; raise measurement.warmup.min_batches)"
            )
    slowed = throttle.get("slowed_share")
    if slowed is not None and slowed > THROTTLED_SHARE:
        warnings.append(f"GPU clocks were slowed by power or thermal limits in {100 * slowed:.0f} % of the window's samples")
    if mean_utilisation_pct is not None and mean_utilisation_pct < LOW_UTILISATION_PCT:
        warnings.append(
            f"low GPU utilisation ({mean_utilisation_pct:.0f} % on average): the host, not the GPU, sets the pace;"
            " expect larger variation between cycles"
        )
    return warnings


def cross_check(
    uuids: list[str], counter_j: list[float] | None, integral_j: list[float] | None
) -> list[dict[str, Any]]:
    """Counter energy against the integral of sampled power, per GPU.

    The gap is relative to the counter, the measurement. A counter of 0 J or less is the very
    case the check exists for (stuck or reset), so there the gap is taken relative to the
    integral instead (100 % or more whenever power was drawn); only when neither source saw any
    energy is there nothing to compare (``None``).
    """
    if not counter_j or not integral_j:
        return []
    rows = []
    for uuid, counter, integral in zip(uuids, counter_j, integral_j):
        reference = counter if counter > 0 else integral
        gap = abs(counter - integral) / reference if reference > 0 else None
        rows.append({"gpu_uuid": uuid, "counter_j": counter, "integral_j": integral, "relative_gap": gap})
    return rows


def cross_check_failures(cross_check: list[dict[str, Any]], fail_tolerance: float) -> list[str]:
    """One sentence per GPU whose counter and sampled-power integral disagree beyond ``fail_tolerance``.

    Below it a gap is a warning (:func:`window_warnings`); beyond it one of the two sources is
    wrong (a counter that stalls or jumps, power readings that are not this GPU's), so the
    window's energy cannot be trusted and the cell fails. A GPU without power samples has no
    row, and so no verdict.
    """
    return [
        f"GPU {row['gpu_uuid']}: energy counter ({row['counter_j']:.1f} J) and integral of sampled power"
        f" ({row['integral_j']:.1f} J) differ by {100 * row['relative_gap']:.1f} %, beyond"
        f" measurement.cross_check_fail_tolerance ({100 * fail_tolerance:g} %)"
        for row in cross_check
        if row.get("relative_gap") is not None and row["relative_gap"] > fail_tolerance
    ]
