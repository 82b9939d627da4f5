"""What a measurement is made of, typed: the figures a cell's child sends back, and idle power.

These models cross the parent/child boundary as JSON (the child dumps, the parent validates),
and :func:`pytest_llem.results.record.build_result` turns them into the public record. Every
unit is in the field's name (``_s`` seconds, ``_j`` joules, ``_w`` watts, ``_mib``/``_bytes``
memory) or its description. Unknown fields are refused, so parent and child cannot silently
disagree about the shape. Energy meters (:mod:`pytest_llem.energy`) produce
:class:`EnergyReading` and :class:`IdlePower`; the runner assembles :class:`CellMeasurement`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pytest_llem.config.experiment import WarmupConfig


class _Figures(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: Energy of a window, or idle power: finite and above zero. Zero is what a stuck energy counter
#: gives and a negative value what a reset one gives; either would pass every ``max:`` limit, so
#: no such figure may exist. Meters and idle sampling raise ``MeasurementInvalid`` with the
#: reason before building one; this bound keeps any other way in shut too.
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class EnergyReading(_Figures):
    """Energy of one measured window.

    ``total_j`` is null when the meter cannot measure (``unavailable_reason`` says why); the
    window length is always known, since timing never depends on a meter. Energies, where
    present, are above zero (see :data:`Positive`).
    """

    meter: str = Field(description="The meter that actually ran: nvml, zeus or none.")
    window_s: float
    total_j: Positive | None
    per_device_j: list[Positive] | None
    unavailable_reason: str | None = None
    error_bound_j: float | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="Meter-specific figures; 'warnings' holds its warnings.")


class IdlePower(_Figures):
    """Idle power of one GPU, measured with a CUDA context and nothing running.

    ``power_w`` is above zero and finite: an idle power of 0 W (a stuck counter) would be
    subtracted as nothing, a negative one (a reset counter) would add energy, so neither can be
    built, measured or read back from a cache file.
    """

    gpu_uuid: str
    power_w: Positive = Field(description="The value subtracted: counter energy / duration, else the mean of samples.")
    mean_sampled_w: float
    std_w: float
    min_w: float
    max_w: float
    n_samples: int
    duration_s: float
    temperature_c: float | None
    measured_at: float = Field(description="Unix time.")
    method: str
    # What the measurement was asked for, so that a cache file is reused only under the same
    # settings (a 15 s baseline is not a 30 s one). Null in files written before they were
    # recorded: such a baseline is measured afresh rather than trusted.
    requested_duration_s: float | None = Field(None, description="The sampling time asked for (duration_s is what elapsed).")
    sample_interval_s: float | None = Field(None, description="The interval of the power samples behind std_w.")

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.measured_at)


class GpuInfo(_Figures):
    """A GPU a cell ran on; NVML opens it by UUID (NVML ignores CUDA_VISIBLE_DEVICES)."""

    uuid: str
    name: str
    cuda_index: int


class WarmupSummary(_Figures):
    """How warm-up went: batches run until per-batch latency was stable, or the cap."""

    batches: int
    full_pass: bool = Field(description="Every measured batch shape ran at least once.")
    latencies_s: list[float]
    stable: bool
    final_cv: float | None
    rule: WarmupConfig


class WindowTelemetry(_Figures):
    """GPU telemetry over the measured window (empty where no GPU was sampled)."""

    throttle: dict[str, Any] | None = None
    cross_check: list[dict[str, Any]] = Field(default_factory=list, description="Counter vs integral of sampled power, per GPU.")
    mean_utilization_gpu_pct: float | None = None
    samples_in_window: int | None = None
    temperature_c: list[dict[str, Any]] = Field(default_factory=list, description="Per GPU: window start, end, peak.")


class CellMeasurement(_Figures):
    """Everything the child measured in one cell: the one thing that comes out of it."""

    engine: str
    engine_version: str | None
    effective_settings: dict[str, Any] = Field(description="The settings in force, engine defaults included.")
    device: str = Field(description="Where inference ran, in words.")
    gpus: list[GpuInfo]
    gpu_state_start: list[dict[str, Any]] = Field(description="NVML description of each GPU before the cell ran.")
    gpu_state_end: list[dict[str, Any]]
    idle_spot_check: dict[str, dict[str, float | None]] | None = Field(description="Idle power after load, per GPU UUID.")
    model_path: str = Field(description="The model directory or hub id the engine loaded.")
    parameter_count: int
    prompts_per_pass: int
    input_tokens_per_pass: int
    batches_per_pass: int
    load_time_s: float
    load_parts_s: dict[str, float] = Field(
        default_factory=dict,
        description="The load's parts, in order: 'prepare' (model path, tokenizer, prompts), 'engine_load' (the engine's"
        " own load: CUDA initialisation, model build, engine start with any compilation and graph capture).",
    )
    warmup: WarmupSummary
    window_s: float
    window_t_start_s: float | None = Field(description="Window start in the timeseries' clock.")
    passes: int
    output_tokens: int
    input_tokens: int
    requests: int
    batch_latencies_s: list[float]
    ttft_s: list[float]
    itl_s: list[float]
    request_latency_s: list[float]
    energy: EnergyReading
    telemetry: WindowTelemetry
    timeseries: str | None = Field(description="File name of the cell's timeseries, when saved.")
    peak_memory_bytes: int | None
    resident_memory_mib: list[float | None] | None
    versions: dict[str, str | None] = Field(description="Software versions in the child.")
    warnings: list[str]


class CellIdlePower(_Figures):
    """The idle baseline of the GPUs a cell used, summed; what ``energy_adjusted_j`` subtracts.

    Field names are the record's (``baseline_power_w`` is a contract field). An idle power is
    above zero and finite or absent (:data:`Positive`), never subtracted as 0 W.

    ``baseline_invalid_reason`` says why a baseline that exists must still not be subtracted
    from this cell's window (its spot check found idle power drifted, and re-measuring gave no
    baseline that agrees with it): the record's adjusted figures are then null with this reason.
    ``baseline_uncertainty_w`` is the baseline's 1-sigma error for this cell
    (:func:`pytest_llem.execution.idle_power.baseline_uncertainty_w` says how it is made); the
    record turns it into the adjusted figures' uncertainties. Both speak of the adjusted figures
    only, so the record shows them through those: the reason as ``energy_adjusted_invalid_reason``,
    the uncertainty only beside an adjusted figure (null where there is none).
    """

    baseline_power_w: Positive | None = None
    baseline_per_device_w: list[Positive] | None = None
    baseline_std_w: float | None = None
    baseline_age_s: float | None = None
    baseline_method: str | None = None
    baseline_source: str | None = None
    baseline_unavailable_reason: str | None = None
    baseline_uncertainty_w: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    baseline_invalid_reason: str | None = None


class TimelinePhase(_Figures):
    """One phase of a cell's timeline, as the parent saw it: when it began and how long it lasted.

    ``start_s`` counts from the cell's start (before the study's gap); phases follow each other
    without holes, so their ``seconds`` add up to the cell's time in the study. ``parts``: what
    the child timed within the phase itself (the load's, see ``CellMeasurement.load_parts_s``).
    """

    phase: str
    start_s: float = Field(ge=0.0)
    seconds: float = Field(ge=0.0)
    parts: dict[str, float] | None = None


class CellIdentity(_Figures):
    """Where a cell sits in its study, and how long it took from the parent's side.

    ``timeline`` runs from the cell's start to its record being built; the manifest entry's
    ``timeline`` adds ``result_write`` (the record's own writing, which comes after it).
    """

    study_name: str
    study_design_hash: str | None
    config_id: str
    cycle: int
    position: int
    nodeid: str
    cell_wall_time_s: float
    cell_started_at: str = Field(description="UTC, ISO 8601: when the parent spawned the cell's child.")
    cell_ended_at: str = Field(description="UTC, ISO 8601: when the child's measurement reached the parent.")
    timeline: list[TimelinePhase] = Field(default_factory=list, description="The cell's phases in order, parent-side clock.")
    timeline_total_s: float | None = Field(None, description="The sum of the timeline's phases.")
    cell_process: dict[str, Any] | None = Field(
        None,
        description="How the cell's process started and ended (execution keys): prestarted (a spare took it),"
        " compile_cache (mode, directory, warm: whether it held compiled entries before), teardown,"
        " skip_unused_kernels (what the engine left unbuilt is in effective_settings.skipped_kernels).",
    )
