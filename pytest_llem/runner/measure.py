"""The cell's timeline inside the child: load, warm up, measure, report.

Nothing here knows pytest or YAML: it receives a validated experiment and returns plain
figures. The order of events is the method (see ``shared/design/measurement.md``): the model is
loaded outside the measured window; warm-up runs the very batches that will be measured until
per-batch latency is stable; the window opens and closes on a synchronised device and holds
nothing but inference, repeated in whole passes until it is long enough for the energy counter
to be accurate.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_llem.config.experiment import ExperimentConfig, WarmupConfig
from pytest_llem.energy.protocol import EnergyReading
from pytest_llem.engines.protocol import Decoding, Engine, LoadRequest
from pytest_llem.errors import MeasurementRefused, MeterUnavailable
from pytest_llem.runner.quality import (
    cross_check,
    preflight_problems,
    spot_summary,
    throttle_summary,
    window_temperatures,
    window_warnings,
)

TIMESERIES_NAME = "timeseries.parquet"


def warm_up(engine: Engine, batches: list[list[list[int]]], rule: WarmupConfig) -> dict[str, Any]:
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
    return {
        "batches": len(latencies),
        "full_pass": len(latencies) >= len(batches),
        "latencies_s": latencies,
        "stable": stable,
        "final_cv": cv,
        "rule": rule.model_dump(),
    }


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


def _preflight(
    config: ExperimentConfig, uuids: list[str], idle_reference_w: dict[str, float], interval_s: float
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | None]], list[str]]:
    """GPU state, an idle spot check and the pre-flight verdict, before anything runs."""
    from pytest_llem.energy.nvml import describe_gpus
    from pytest_llem.energy.sampler import TelemetrySampler

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


def _measured_window(engine: Engine, batches: list[list[list[int]]], meter: Any, config: ExperimentConfig) -> dict[str, Any]:
    """Whole passes over the batches between two synchronised edges, until the window is long enough.

    The engine synchronises the device at the end of every batch, so the meter's readings at
    the edges bracket exactly the work inside.
    """
    out: dict[str, Any] = {
        "output_tokens": 0, "input_tokens": 0, "passes": 0, "batch_latencies": [],
        "per_request_tokens": [], "ttft": [], "itl": [], "e2e": [],
    }  # fmt: skip
    meter.start()
    out["t_start"] = started = time.perf_counter()
    while True:
        for batch in batches:
            result = engine.run_batch(batch)
            counts = [len(ids) for ids in result.output_token_ids]
            out["batch_latencies"].append(result.wall_time_s)
            out["per_request_tokens"].extend(counts)
            out["output_tokens"] += sum(counts)
            out["input_tokens"] += sum(len(p) for p in batch)
            out["ttft"].extend(getattr(result, "ttft_s", []))
            out["itl"].extend(getattr(result, "itl_s", []))
            out["e2e"].extend(result.per_request_time_s)
        out["passes"] += 1
        elapsed = time.perf_counter() - started
        if elapsed >= config.measurement.min_window_seconds or out["passes"] >= config.measurement.max_passes:
            break
    out["reading"] = meter.stop()
    out["t_end"] = time.perf_counter()
    out["window_s"] = out["t_end"] - started
    return out


def _window_telemetry(sampler: Any, uuids: list[str], window: dict[str, Any], reading: EnergyReading) -> dict[str, Any]:
    """Throttling, utilisation and the counter-vs-integral cross-check over the window."""
    t0 = sampler.t0
    lo, hi = window["t_start"] - t0, window["t_end"] - t0
    inside = [s for s in sampler.samples if lo <= s["t"] <= hi]
    utils = [s["utilization_gpu_pct"] for s in inside if s.get("utilization_gpu_pct") is not None]
    try:
        integral = sampler.integrate_power_j(lo, hi)
    except ValueError:  # no power sample at all: nothing to cross-check against
        integral = None
    return {
        "throttle": throttle_summary(inside),
        "cross_check": cross_check(uuids, reading.per_device_j, integral),
        "mean_utilization_gpu_pct": statistics.fmean(utils) if utils else None,
        "samples_in_window": len(inside),
        "temperature_c": window_temperatures(inside, uuids),
    }


def _software_versions() -> dict[str, str | None]:
    from pytest_llem.version import __version__

    versions: dict[str, str | None] = {"python": platform.python_version(), "pytest_llem": __version__}
    for module in ("torch", "transformers", "vllm", "tensorrt_llm", "pynvml", "zeus"):
        mod = sys.modules.get(module)
        versions[module] = getattr(mod, "__version__", None) if mod is not None else None
    return versions


def measure_cell(
    config: ExperimentConfig,
    *,
    engine: Engine,
    base_dir: Path,
    cell_dir: Path,
    phase: Callable[[str], None],
    idle_reference_w: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Measure one cell with an engine already imported; return plain, JSON-ready figures."""
    from pytest_llem.energy.select import open_meter
    from pytest_llem.models.tiny import resolve_model
    from pytest_llem.runner.prompts import load_prompt_texts, tokenize_prompts

    warnings: list[str] = []
    idle_reference_w = idle_reference_w or {}
    phase("load")
    load_started = time.perf_counter()
    model_path = resolve_model(config.model)
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
    d = config.decoding
    engine.load(
        LoadRequest(
            model=model_path,
            precision=config.precision,
            settings=getattr(config, config.engine).model_dump(mode="json"),
            decoding=Decoding(d.temperature, d.top_p, d.top_k, d.repetition_penalty, d.seed),
            max_output_tokens=config.max_output_tokens,
            ignore_eos=config.ignore_eos,
            eos_token_ids=eos_ids,
            pad_token_id=pad,
            device=config.measurement.device,
        )
    )
    load_time_s = time.perf_counter() - load_started
    gpus = engine.gpus
    uuids = [g.uuid for g in gpus]
    interval_s = config.measurement.sample_interval_ms / 1000.0
    gpu_state_start: list[dict[str, Any]] = []
    spot: dict[str, dict[str, float | None]] = {}
    telemetry_ok = bool(gpus)
    if gpus:
        phase("preflight")
        try:
            gpu_state_start, spot, problems = _preflight(config, uuids, idle_reference_w, interval_s)
            warnings.extend(f"pre-flight: {p}" for p in problems)
        except MeterUnavailable as exc:
            if config.measurement.energy == "nvml":
                raise
            telemetry_ok = False  # no NVML: no GPU state, telemetry or pre-flight, said plainly
            warnings.append(f"no GPU telemetry or pre-flight checks: {exc}")
    meter = open_meter(config.measurement.energy, uuids, [g.cuda_index for g in gpus])
    sampler = None
    if telemetry_ok:
        from pytest_llem.energy.sampler import TelemetrySampler

        sampler = TelemetrySampler(uuids, interval_s=interval_s)
        sampler.start()  # covers warm-up too, so the timeseries shows the whole cell
    batches = engine.plan_batches(prompts)

    phase("warmup")
    warmup = warm_up(engine, batches, config.measurement.warmup)
    if not warmup["stable"] and config.measurement.warmup.max_batches > 0:
        final_cv = "n/a" if warmup["final_cv"] is None else f"{warmup['final_cv']:.3f}"
        warnings.append(
            f"warm-up stopped at measurement.warmup.max_batches ({warmup['batches']}) before latency was stable"
            f" (CV {final_cv}, threshold {config.measurement.warmup.cv_threshold:g})"
            + ("" if warmup["full_pass"] else "; not every measured batch shape was warmed up")
        )

    phase("measure")
    window = _measured_window(engine, batches, meter, config)
    if sampler is not None:
        sampler.stop()
    meter.close()
    phase("report")
    reading: EnergyReading = window["reading"]
    if window["window_s"] < config.measurement.min_window_seconds:
        warnings.append(
            f"measured window {window['window_s']:.2f} s is shorter than min_window_seconds"
            f" {config.measurement.min_window_seconds:g} s (max_passes {config.measurement.max_passes} reached)"
        )
    gpu_state_end: list[dict[str, Any]] = []
    telemetry: dict[str, Any] = {
        "throttle": None,
        "cross_check": [],
        "mean_utilization_gpu_pct": None,
        "temperature_c": [],
    }
    timeseries: str | None = None
    if sampler is not None:
        from pytest_llem.energy.nvml import describe_gpus

        gpu_state_end = describe_gpus(uuids)
        telemetry = _window_telemetry(sampler, uuids, window, reading)
        if config.output.save_timeseries:
            sampler.write_parquet(cell_dir / TIMESERIES_NAME)
            timeseries = TIMESERIES_NAME
        warnings.extend(
            window_warnings(
                energy_j=reading.total_j,
                error_bound_j=reading.error_bound_j,
                cross_check=telemetry["cross_check"],
                cross_check_tolerance=config.measurement.cross_check_tolerance,
                gpu_state_start=gpu_state_start,
                temperatures=telemetry["temperature_c"],
                throttle=telemetry["throttle"],
                mean_utilisation_pct=telemetry["mean_utilization_gpu_pct"],
            )
        )
    warnings.extend(reading.details.get("warnings", []))
    measurement = {
        "engine": engine.name,
        "engine_version": engine.version(),
        "effective_settings": engine.effective_settings(),
        "device": engine.device_description,
        "gpus": [{"uuid": g.uuid, "name": g.name, "cuda_index": g.cuda_index} for g in gpus],
        "gpu_state_start": gpu_state_start,
        "gpu_state_end": gpu_state_end,
        "idle_spot_check": spot,
        "model_path": model_path,
        "parameter_count": engine.parameter_count(),
        "n_prompts": len(prompts),
        "input_tokens_per_pass": sum(len(p) for p in prompts),
        "batches_per_pass": len(batches),
        "load_time_s": load_time_s,
        "warmup": warmup,
        "window_s": window["window_s"],
        "window_t_start_s": window["t_start"] - sampler.t0 if sampler is not None and sampler.t0 is not None else None,
        "passes": window["passes"],
        "output_tokens": window["output_tokens"],
        "input_tokens": window["input_tokens"],
        "requests": len(window["per_request_tokens"]),
        "batch_latencies_s": window["batch_latencies"],
        "ttft_s": window["ttft"],
        "itl_s": window["itl"],
        "request_latency_s": window["e2e"],
        "energy": {
            "meter": reading.meter,
            "total_j": reading.total_j,
            "per_device_j": reading.per_device_j,
            "unavailable_reason": reading.unavailable_reason,
            "error_bound_j": reading.error_bound_j,
            "window_s": reading.window_s,
            "details": {k: v for k, v in reading.details.items() if k != "warnings"},
        },
        "telemetry": telemetry,
        "timeseries": timeseries,
        "peak_memory_bytes": engine.peak_memory_bytes(),
        "resident_memory_mib": [s.get("memory_used_mib") for s in gpu_state_end] or None,
        "versions": _software_versions(),
        "warnings": warnings,
    }
    engine.release()
    return measurement
