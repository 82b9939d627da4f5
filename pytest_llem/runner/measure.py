"""The cell's timeline inside the child: load, warm up, measure, report.

Nothing here knows pytest or YAML: it receives a validated experiment and returns a typed
:class:`~pytest_llem.results.measurement.CellMeasurement`. The order of events is the method (see
``shared/design/measurement.md``): the model is loaded outside the measured window; warm-up runs
the very batches that will be measured until per-batch latency is stable; the window opens and
closes on a synchronised device and holds nothing but inference, repeated in whole passes until
it is long enough for the energy counter to be accurate.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.config.experiment import ExperimentConfig, WarmupConfig
from pytest_llem.energy.protocol import EnergyMeter
from pytest_llem.energy.sampler import TelemetrySampler
from pytest_llem.engines.protocol import BatchResult, Engine, LoadRequest
from pytest_llem.errors import MeasurementInvalid, MeasurementRefused, MeterUnavailable
from pytest_llem.results.measurement import (
    CellMeasurement,
    EnergyReading,
    GpuInfo,
    WarmupSummary,
    WindowTelemetry,
)
from pytest_llem.runner.quality import (
    cross_check,
    cross_check_failures,
    preflight_problems,
    spot_summary,
    throttle_summary,
    window_temperatures,
    window_warnings,
)
from pytest_llem.version import __version__

TIMESERIES_NAME = "timeseries.parquet"

Batches = list[list[list[int]]]


def warm_up(engine: Engine, batches: Batches, rule: WarmupConfig) -> WarmupSummary:
    """Run the measured batches until the latency of the last ``window`` is stable.

    The batches run in measured order, so warm-up sees the very shapes the window will see
    (compilation, autotuning and graph capture for them happen here, not in the window). It
    runs at least ``min_batches`` and one whole pass (unless ``max_batches`` comes first), then
    stops once the coefficient of variation of the last ``window`` latencies is below
    ``cv_threshold``; ``max_batches`` bounds it either way.
    """
    latencies: list[float] = []
    stable = False
    cv: float | None = None
    floor = max(rule.min_batches, len(batches))
    while len(latencies) < rule.max_batches:
        latencies.append(engine.run_batch(batches[len(latencies) % len(batches)]).wall_time_s)
        if len(latencies) >= rule.window:
            recent = latencies[-rule.window :]
            mean = statistics.fmean(recent)
            cv = statistics.pstdev(recent) / mean if mean > 0 else 0.0
            if len(latencies) >= floor and cv < rule.cv_threshold:
                stable = True
                break
    return WarmupSummary(
        batches=len(latencies),
        full_pass=len(latencies) >= len(batches),
        latencies_s=latencies,
        stable=stable,
        final_cv=cv,
        rule=rule,
    )


def _warmup_warnings(warmup: WarmupSummary) -> list[str]:
    if warmup.stable or warmup.rule.max_batches == 0:
        return []
    final_cv = "n/a" if warmup.final_cv is None else f"{warmup.final_cv:.3f}"
    return [
        f"warm-up stopped at measurement.warmup.max_batches ({warmup.batches}) before latency was stable"
        f" (CV {final_cv}, threshold {warmup.rule.cv_threshold:g})"
        + ("" if warmup.full_pass else "; not every measured batch shape was warmed up")
    ]


def _eos_token_ids(model_path: str, tokenizer: Any) -> tuple[int, ...]:
    """Every id that ends a request: the tokenizer's EOS and the model's generation config's.

    Instruct models often end turns with a second id (Llama 3's ``<|eot_id|>``); counting
    output only up to the tokenizer's EOS would count tokens after the real end.
    """
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    from transformers import GenerationConfig

    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's EOS is all there is
        configured = None
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return tuple(ids)


@dataclass
class _Workload:
    """The loaded model and the token ids every engine gets alike."""

    model_path: str
    prompts: list[list[int]]
    load_time_s: float
    load_parts_s: dict[str, float] = field(default_factory=dict)


def _load(config: ExperimentConfig, engine: Engine, base_dir: Path, skip_unused_kernels: bool) -> _Workload:
    """Resolve the model, tokenise the prompts once, and load the engine (outside any window)."""
    from pytest_llem.models.loading import resolve_model_path
    from pytest_llem.models.tiny import resolve_model
    from pytest_llem.runner.prompts import load_prompt_texts, tokenize_prompts

    started = time.perf_counter()
    model_path = resolve_model(resolve_model_path(config.model, base_dir))
    from transformers import (
        AutoTokenizer,  # every engine shares one tokenisation: identical inputs
    )

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = config.prompts if config.prompts is not None else load_prompt_texts(
        config.dataset.source, config.dataset.n_prompts, field=config.dataset.field, base_dir=base_dir
    )
    prompts = tokenize_prompts(tokenizer, list(texts), config.max_input_tokens)
    eos_ids = _eos_token_ids(model_path, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else None)
    prepared = time.perf_counter()
    engine.load(
        LoadRequest(
            model=model_path,
            precision=config.precision,
            settings=config.engine_section,
            decoding=config.decoding,
            max_output_tokens=config.max_output_tokens,
            ignore_eos=config.ignore_eos,
            eos_token_ids=eos_ids,
            pad_token_id=pad,
            device=config.measurement.device,
            skip_unused_kernels=skip_unused_kernels,
        )
    )
    loaded = time.perf_counter()
    parts = {"prepare": prepared - started, "engine_load": loaded - prepared}
    return _Workload(model_path, prompts, loaded - started, parts)


def _preflight(
    config: ExperimentConfig, uuids: list[str], idle_reference_w: dict[str, float], interval_s: float
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | None]], list[str]]:
    """GPU state, an idle spot check and the pre-flight verdict, before anything runs."""
    from pytest_llem.energy.nvml import describe_gpus

    state = describe_gpus(uuids)
    for gpu in state:
        if gpu.get("mig_mode"):
            raise MeasurementRefused(
                f"GPU {gpu['uuid']} is in MIG mode: its energy counter covers the whole board, not the"
                " slice this cell runs on, so per-cell energy cannot be measured; disable MIG"
            )
    spot: dict[str, dict[str, float | None]] = {}
    seconds = config.measurement.baseline.spot_check_seconds
    if seconds > 0:
        with TelemetrySampler(uuids, interval_s=interval_s) as idle:
            time.sleep(seconds)
        spot = spot_summary(idle.samples, uuids)
    problems: list[str] = []
    if config.measurement.preflight != "off":
        problems = preflight_problems(state, spot, idle_reference_w, config.measurement.baseline.drift_threshold)
        if problems and config.measurement.preflight == "fail":
            raise MeasurementRefused("pre-flight failed (measurement.preflight: fail): " + "; ".join(problems))
    return state, spot, problems


@dataclass
class _Instruments:
    """The meter and the sampler of a cell, with what the pre-flight saw before they opened."""

    gpus: list[GpuInfo]
    meter: EnergyMeter
    sampler: TelemetrySampler | None
    gpu_state_start: list[dict[str, Any]] = field(default_factory=list)
    spot: dict[str, dict[str, float | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def uuids(self) -> list[str]:
        return [g.uuid for g in self.gpus]


def _open_instruments(
    config: ExperimentConfig, engine: Engine, idle_reference_w: dict[str, float], phase: Callable[[str], None]
) -> _Instruments:
    """Pre-flight the engine's GPUs, open the meter, and start sampling (warm-up included)."""
    from pytest_llem.energy.select import open_meter

    gpus = engine.gpus
    uuids = [g.uuid for g in gpus]
    interval_s = config.measurement.sample_interval_ms / 1000.0
    state: list[dict[str, Any]] = []
    spot: dict[str, dict[str, float | None]] = {}
    warnings: list[str] = []
    telemetry_ok = bool(gpus)
    if gpus:
        phase("preflight")
        try:
            state, spot, problems = _preflight(config, uuids, idle_reference_w, interval_s)
            warnings.extend(f"pre-flight: {p}" for p in problems)
        except MeterUnavailable as exc:
            if config.measurement.energy == "nvml":
                raise
            telemetry_ok = False  # no NVML: no GPU state, telemetry or pre-flight, said plainly
            warnings.append(f"no GPU telemetry or pre-flight checks: {exc}")
    meter = open_meter(config.measurement.energy, uuids, [g.cuda_index for g in gpus])
    sampler = TelemetrySampler(uuids, interval_s=interval_s) if telemetry_ok else None
    if sampler is not None:
        sampler.start()  # covers warm-up too, so the timeseries shows the whole cell
    return _Instruments(gpus, meter, sampler, state, spot, warnings)


@dataclass
class _Tally:
    """Counts and latencies of the batches run inside the window."""

    passes: int = 0
    output_tokens: int = 0
    input_tokens: int = 0
    requests: int = 0
    batch_latencies_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    request_latency_s: list[float] = field(default_factory=list)

    def add(self, batch: list[list[int]], result: BatchResult) -> None:
        counts = [len(ids) for ids in result.output_token_ids]
        self.batch_latencies_s.append(result.wall_time_s)
        self.requests += len(counts)
        self.output_tokens += sum(counts)
        self.input_tokens += sum(len(p) for p in batch)
        self.ttft_s.extend(result.ttft_s)
        self.itl_s.extend(result.itl_s)
        self.request_latency_s.extend(result.per_request_time_s)


@dataclass
class _Window:
    """What happened between the window's two synchronised edges (``perf_counter`` times)."""

    tally: _Tally
    reading: EnergyReading
    t_start: float
    t_end: float

    @property
    def window_s(self) -> float:
        return self.t_end - self.t_start


#: Seconds between two reports of how far the window is (the user's progress line).
WINDOW_PROGRESS_EVERY_S = 1.0


def _measured_window(
    engine: Engine, batches: Batches, meter: EnergyMeter, config: ExperimentConfig,
    progress: Callable[[float, float], None] | None = None,
) -> _Window:  # fmt: skip
    """Whole passes over the batches between two synchronised edges, until the window is long enough.

    The engine synchronises the device at the end of every batch, so the meter's readings at
    the edges bracket exactly the work inside. ``progress(elapsed, target)`` hears after a
    pass how far the window is, at most once a second (a pipe write: nothing the GPU waits for).
    """
    tally = _Tally()
    target = config.measurement.min_window_seconds
    meter.start()
    started = time.perf_counter()
    reported = started
    while True:
        for batch in batches:
            tally.add(batch, engine.run_batch(batch))
        tally.passes += 1
        now = time.perf_counter()
        elapsed = now - started
        if elapsed >= target or tally.passes >= config.measurement.max_passes:
            break
        if progress is not None and now - reported >= WINDOW_PROGRESS_EVERY_S:
            progress(elapsed, target)
            reported = now
    reading = meter.stop()
    return _Window(tally, reading, started, time.perf_counter())


def _window_telemetry(sampler: TelemetrySampler, uuids: list[str], window: _Window) -> WindowTelemetry:
    """Throttling, utilisation and the counter-vs-integral cross-check over the window."""
    t0 = sampler.t0 or 0.0
    lo, hi = window.t_start - t0, window.t_end - t0
    inside = [s for s in sampler.samples if lo <= s["t"] <= hi]
    utils = [s["utilization_gpu_pct"] for s in inside if s.get("utilization_gpu_pct") is not None]
    try:
        integral: list[float] | None = sampler.integrate_power_j(lo, hi)
    except ValueError:  # no power sample at all: nothing to cross-check against
        integral = None
    return WindowTelemetry(
        throttle=throttle_summary(inside),
        cross_check=cross_check(uuids, window.reading.per_device_j, integral),
        mean_utilization_gpu_pct=statistics.fmean(utils) if utils else None,
        samples_in_window=len(inside),
        temperature_c=window_temperatures(inside, uuids),
    )


@dataclass
class _Closing:
    """What the instruments say once the window is over."""

    gpu_state_end: list[dict[str, Any]] = field(default_factory=list)
    telemetry: WindowTelemetry = field(default_factory=WindowTelemetry)
    timeseries: str | None = None
    warnings: list[str] = field(default_factory=list)


def _close_instruments(instruments: _Instruments, window: _Window, config: ExperimentConfig, cell_dir: Path) -> _Closing:
    """Stop sampling, describe the GPUs again, write the timeseries, and judge the window."""
    sampler = instruments.sampler
    if sampler is not None:
        sampler.stop()
    instruments.meter.close()
    closing = _Closing()
    if window.window_s < config.measurement.min_window_seconds:
        closing.warnings.append(
            f"measured window {window.window_s:.2f} s is shorter than min_window_seconds"
            f" {config.measurement.min_window_seconds:g} s (max_passes {config.measurement.max_passes} reached)"
        )
    if sampler is not None:
        from pytest_llem.energy.nvml import describe_gpus

        closing.gpu_state_end = describe_gpus(instruments.uuids)
        closing.telemetry = _window_telemetry(sampler, instruments.uuids, window)
        if config.output.save_timeseries:
            sampler.write_parquet(cell_dir / TIMESERIES_NAME)
            closing.timeseries = TIMESERIES_NAME
        closing.warnings.extend(
            window_warnings(
                energy_j=window.reading.total_j,
                error_bound_j=window.reading.error_bound_j,
                cross_check=closing.telemetry.cross_check,
                cross_check_tolerance=config.measurement.cross_check_tolerance,
                gpu_state_start=instruments.gpu_state_start,
                temperatures=closing.telemetry.temperature_c,
                throttle=closing.telemetry.throttle or {},
                mean_utilisation_pct=closing.telemetry.mean_utilization_gpu_pct,
            )
        )
    closing.warnings.extend(window.reading.details.get("warnings", []))
    return closing


def _abandon_instruments(instruments: _Instruments, config: ExperimentConfig, cell_dir: Path) -> None:
    """Stop sampling and release the meter after the meter refused the window.

    The timeseries is still written where the study keeps one: it shows what the counter did
    (its ``energy_mj`` column) and is the evidence for the failure. Writing it must not hide
    that failure, so an error doing so is dropped.
    """
    sampler = instruments.sampler
    if sampler is not None:
        sampler.stop()
        if config.output.save_timeseries:
            with contextlib.suppress(Exception):
                sampler.write_parquet(cell_dir / TIMESERIES_NAME)
    instruments.meter.close()


def _refuse_disagreement(closing: _Closing, config: ExperimentConfig) -> None:
    """Fail the cell when the counter and the sampled-power integral disagree beyond the failing bound.

    Between ``cross_check_tolerance`` and ``cross_check_fail_tolerance`` the gap is a warning
    (already among ``closing.warnings``); beyond, one of the two sources is wrong and no energy
    figure of the window can be trusted. Without power samples there is no integral, no row,
    and nothing to fail on.
    """
    failures = cross_check_failures(closing.telemetry.cross_check, config.measurement.cross_check_fail_tolerance)
    if failures:
        raise MeasurementInvalid(
            "the measured window's energy cannot be trusted: " + "; ".join(failures)
            + (f" (timeseries in {closing.timeseries})" if closing.timeseries else "")
        )


def _software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "pytest_llem": __version__}
    for module in ("torch", "transformers", "vllm", "tensorrt_llm", "pynvml", "zeus"):
        mod = sys.modules.get(module)
        versions[module] = getattr(mod, "__version__", None) if mod is not None else None
    torch_version = getattr(sys.modules.get("torch"), "version", None)
    versions["cuda_runtime"] = getattr(torch_version, "cuda", None)  # the CUDA torch was built for; None on CPU builds
    return versions


def measure_cell(
    config: ExperimentConfig,
    *,
    engine: Engine,
    base_dir: Path,
    cell_dir: Path,
    phase: Callable[[str], None],
    idle_reference_w: dict[str, float] | None = None,
    window_progress: Callable[[float, float], None] | None = None,
    skip_unused_kernels: bool = True,
) -> CellMeasurement:
    """Measure one cell with an engine already imported: load, pre-flight, warm up, window, report.

    Raises :class:`~pytest_llem.errors.MeasurementInvalid` when the window's energy cannot be
    true (a stuck or reset counter, said by the meter) or cannot be trusted (counter and sampled
    power apart beyond ``measurement.cross_check_fail_tolerance``): the cell then fails with that
    reason instead of recording a figure.
    """
    phase("load")
    workload = _load(config, engine, base_dir, skip_unused_kernels)
    instruments = _open_instruments(config, engine, idle_reference_w or {}, phase)
    batches = engine.plan_batches(workload.prompts)
    phase("warmup")
    warmup = warm_up(engine, batches, config.measurement.warmup)
    phase("measure")
    try:
        window = _measured_window(engine, batches, instruments.meter, config, window_progress)
    except MeasurementInvalid:  # a stuck or reset counter: the window has no energy to record
        _abandon_instruments(instruments, config, cell_dir)
        raise
    phase("report")
    closing = _close_instruments(instruments, window, config, cell_dir)
    _refuse_disagreement(closing, config)
    sampler = instruments.sampler
    measurement = CellMeasurement(
        engine=engine.name,
        engine_version=engine.version(),
        effective_settings=engine.effective_settings(),
        device=engine.device_description,
        gpus=instruments.gpus,
        gpu_state_start=instruments.gpu_state_start,
        gpu_state_end=closing.gpu_state_end,
        idle_spot_check=instruments.spot,
        model_path=workload.model_path,
        parameter_count=engine.parameter_count(),
        prompts_per_pass=len(workload.prompts),
        input_tokens_per_pass=sum(len(p) for p in workload.prompts),
        batches_per_pass=len(batches),
        load_time_s=workload.load_time_s,
        load_parts_s=workload.load_parts_s,
        warmup=warmup,
        window_s=window.window_s,
        window_t_start_s=window.t_start - sampler.t0 if sampler is not None and sampler.t0 is not None else None,
        passes=window.tally.passes,
        output_tokens=window.tally.output_tokens,
        input_tokens=window.tally.input_tokens,
        requests=window.tally.requests,
        batch_latencies_s=window.tally.batch_latencies_s,
        ttft_s=window.tally.ttft_s,
        itl_s=window.tally.itl_s,
        request_latency_s=window.tally.request_latency_s,
        energy=window.reading,
        telemetry=closing.telemetry,
        timeseries=closing.timeseries,
        peak_memory_bytes=engine.peak_memory_bytes(),
        resident_memory_mib=[s.get("memory_used_mib") for s in closing.gpu_state_end] or None,
        versions=_software_versions(),
        warnings=instruments.warnings + _warmup_warnings(warmup) + closing.warnings,
    )
    return measurement  # the caller releases the engine, after the measurement is safe with the parent
