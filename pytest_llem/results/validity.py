"""Validity flags: cells whose figures are real but do not measure what the configuration asked for.

A flagged cell is not wrong (its energy and tokens were measured), but comparing it with others
would mislead, in the spirit of the ML.ENERGY leaderboard's checks: its window was too short to
trust, its batches never reached the requested size (so it measured a smaller batch than its
configuration names), warm-up never settled, or the GPU ran at its power or thermal limit (so
the figure is the limit's, not the configuration's). Each flag is a reason code and a sentence.

:func:`assess` judges a record from its own fields only, so the same function flags a cell as it
is written (``build_result`` stores ``validity``) and a record written before the field existed
(the loader computes it, :func:`record_validity`). Plain dicts in, plain dicts out: no pydantic.

What cannot be judged from a record is not flagged: vLLM records neither the number of requests
running at each step nor the KV cache's preemptions, so its achieved batch is bounded from
above (prompts in flight, KV cache capacity) rather than observed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_llem.results.fields import dotted_value

#: Every reason code, with what it means (the README's table says the same).
CODES: dict[str, str] = {
    "short_window": "the measured window is too short to trust: under MIN_WINDOW_S seconds, fewer than"
    " MIN_WINDOW_SAMPLES telemetry samples, or an energy-counter edge error above MAX_EDGE_ERROR_SHARE of its energy",
    "not_steady": "warm-up stopped at its cap before per-batch latency settled: the window may hold warm-up",
    "batch_underfilled": "the batch the engine could reach stayed below MIN_BATCH_FILL of the requested batch size"
    " (too few prompts per batch, or a KV cache too small for that many sequences)",
    "power_capped": "the GPU sat at its power limit: clocks slowed by a power cap in more than MAX_CAPPED_SHARE of"
    " the window's samples, or mean power at or above POWER_LIMIT_SHARE of the limit",
    "thermal_throttled": "clocks slowed by temperature in more than MAX_CAPPED_SHARE of the window's samples",
}

#: Thresholds of the rules, named in :data:`CODES` and in each flag's message.
MIN_WINDOW_S = 5.0
MIN_WINDOW_SAMPLES = 10
MAX_EDGE_ERROR_SHARE = 0.01  # the same 1 % as the record's "short window" warning
MIN_BATCH_FILL = 0.5
MAX_CAPPED_SHARE = 0.05  # the same 5 % as the record's throttling warning
POWER_LIMIT_SHARE = 0.95

#: NVML clock-event reasons (names as ``telemetry.throttle.reasons`` holds them) by flag.
POWER_REASONS = ("sw_power_cap", "hw_power_brake_slowdown")
THERMAL_REASONS = ("sw_thermal_slowdown", "hw_thermal_slowdown", "hw_slowdown")


@dataclass(frozen=True)
class ValidityFlag:
    """One reason a cell's figures should not be compared as they stand: a code of :data:`CODES`, a sentence."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None




def _short_window(record: Mapping[str, Any]) -> ValidityFlag | None:
    window = _number(record.get("total_inference_time_sec"))
    problems: list[str] = []
    if window is not None and window < MIN_WINDOW_S:
        problems.append(f"the window lasted {window:.2f} s (< {MIN_WINDOW_S:g} s)")
    samples = _number(dotted_value(record, "telemetry.samples_in_window"))
    if samples is not None and record.get("energy_meter") not in (None, "none") and samples < MIN_WINDOW_SAMPLES:
        problems.append(f"{samples:.0f} telemetry samples in the window (< {MIN_WINDOW_SAMPLES})")
    energy, bound = _number(record.get("total_energy_j")), _number(record.get("energy_error_bound_j"))
    if energy and bound is not None and bound / energy > MAX_EDGE_ERROR_SHARE:
        problems.append(
            f"the energy counter's edge error may reach {100 * bound / energy:.1f} % of the window's energy"
            f" (> {100 * MAX_EDGE_ERROR_SHARE:g} %)"
        )
    if not problems:
        return None
    return ValidityFlag("short_window", "; ".join(problems) + "; raise measurement.min_window_seconds")


def _not_steady(record: Mapping[str, Any]) -> ValidityFlag | None:
    warmup = record.get("warmup")
    if not isinstance(warmup, Mapping) or warmup.get("stable") is not False:
        return None
    cv, batches = _number(warmup.get("final_cv")), warmup.get("batches")
    detail = f" (final CV {cv:.3f})" if cv is not None else ""
    return ValidityFlag(
        "not_steady",
        f"warm-up stopped after {batches} batch(es) before per-batch latency settled{detail};"
        " raise measurement.warmup.max_batches",
    )


def _requested_batch(record: Mapping[str, Any]) -> tuple[float, str] | None:
    """The batch size the configuration asked for, and the setting that names it."""
    engine = record.get("engine")
    if engine == "transformers":
        value = _number(dotted_value(record, "config.transformers.batch_size"))
        return (value, "transformers.batch_size") if value else None
    if engine == "vllm":
        # The engine's resolved value first: a null max_num_seqs in the study takes vLLM's default.
        value = _number(dotted_value(record, "effective_settings.resolved.max_num_seqs"))
        value = value or _number(dotted_value(record, "config.vllm.max_num_seqs"))
        return (value, "vllm.max_num_seqs") if value else None
    if engine == "tensorrt":
        value = _number(dotted_value(record, "config.tensorrt.max_batch_size"))
        return (value, "tensorrt.max_batch_size") if value else None
    return None


def _kv_capacity(record: Mapping[str, Any]) -> float | None:
    """How many sequences of this cell's length vLLM's KV cache holds at once; None where not recorded."""
    resolved = dotted_value(record, "effective_settings.resolved")
    if not isinstance(resolved, Mapping):
        return None
    blocks, block_size = _number(resolved.get("num_gpu_blocks")), _number(resolved.get("block_size"))
    prompts, input_tokens = _number(record.get("prompts_per_pass")), _number(record.get("input_tokens_per_pass"))
    output = _number(dotted_value(record, "config.max_output_tokens"))
    if not (blocks and block_size and prompts and input_tokens is not None and output):
        return None
    per_sequence = math.ceil((input_tokens / prompts + output) / block_size) * block_size
    return blocks * block_size / per_sequence


def _batch_underfilled(record: Mapping[str, Any]) -> ValidityFlag | None:
    requested = _requested_batch(record)
    prompts, batches = _number(record.get("prompts_per_pass")), _number(record.get("batches_per_pass"))
    if requested is None or not prompts or not batches:
        return None
    size, setting = requested
    reachable, why = prompts / batches, f"{prompts:.0f} prompt(s) in {batches:.0f} batch(es) per pass"
    capacity = _kv_capacity(record) if record.get("engine") == "vllm" else None
    if capacity is not None and capacity < reachable:
        reachable, why = capacity, f"the KV cache holds about {capacity:.0f} sequence(s) of this length"
    if reachable >= MIN_BATCH_FILL * size:
        return None
    return ValidityFlag(
        "batch_underfilled",
        f"at most {reachable:.1f} sequence(s) per batch ({why}) against {setting} = {size:.0f}"
        f" (< {100 * MIN_BATCH_FILL:g} %): the cell measured a smaller batch than it names",
    )


def _slowed_share(record: Mapping[str, Any], reasons: tuple[str, ...]) -> tuple[float, str] | None:
    shares = dotted_value(record, "telemetry.throttle.reasons")
    if not isinstance(shares, Mapping):
        return None
    found = [(share, name) for name in reasons if (share := _number(shares.get(name))) is not None]
    return max(found) if found else None


def _mean_power_share(record: Mapping[str, Any]) -> tuple[float, float] | None:
    """The window's mean power per GPU against the lowest power limit, as (share, limit in W)."""
    energy, window = _number(record.get("total_energy_j")), _number(record.get("total_inference_time_sec"))
    states = record.get("gpu_state_start")
    if not energy or not window or not isinstance(states, list) or not states:
        return None
    limits = [limit for s in states if isinstance(s, Mapping) and (limit := _number(s.get("power_limit_w")))]
    if len(limits) != len(states):
        return None
    return energy / window / len(states) / min(limits), min(limits)


def _power_capped(record: Mapping[str, Any]) -> ValidityFlag | None:
    problems: list[str] = []
    slowed = _slowed_share(record, POWER_REASONS)
    if slowed is not None and slowed[0] > MAX_CAPPED_SHARE:
        problems.append(f"clocks slowed by {slowed[1]} in {100 * slowed[0]:.0f} % of the window's samples")
    power = _mean_power_share(record)
    if power is not None and power[0] >= POWER_LIMIT_SHARE:
        problems.append(f"mean power {power[0] * power[1]:.0f} W per GPU is {100 * power[0]:.0f} % of its {power[1]:.0f} W limit")
    if not problems:
        return None
    return ValidityFlag("power_capped", "; ".join(problems) + ": the figure is the power limit's as much as the configuration's")


def _thermal_throttled(record: Mapping[str, Any]) -> ValidityFlag | None:
    slowed = _slowed_share(record, THERMAL_REASONS)
    if slowed is None or slowed[0] <= MAX_CAPPED_SHARE:
        return None
    return ValidityFlag(
        "thermal_throttled", f"clocks slowed by {slowed[1]} in {100 * slowed[0]:.0f} % of the window's samples"
    )


_RULES = (_short_window, _not_steady, _batch_underfilled, _power_capped, _thermal_throttled)


def assess(record: Mapping[str, Any]) -> list[ValidityFlag]:
    """The validity flags of a record, judged from its own fields; empty when nothing is wrong or nothing is known."""
    return [flag for rule in _RULES if (flag := rule(record)) is not None]


def validity_json(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """:func:`assess` as the record stores it: a list of ``{"code", "message"}``."""
    return [flag.to_json() for flag in assess(record)]


def record_validity(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The record's stored ``validity``, or, for a record written before the field, the flags computed now."""
    stored = record.get("validity")
    if isinstance(stored, list):
        return [dict(f) for f in stored if isinstance(f, Mapping)]
    return validity_json(record)


def validity_codes(record: Mapping[str, Any]) -> list[str]:
    """The reason codes of :func:`record_validity`, in order."""
    return [str(flag.get("code")) for flag in record_validity(record)]
