"""Idle power of each GPU: measuring it, caching it, and noticing when it drifts.

Idle power differs between boards and thermal states by tens of watts, which on a long window
is a large share of the energy; subtracting it gives the energy the workload itself cost
(``energy_adjusted_j``). It is measured in the state the cells run in: a process with a CUDA
context on the GPU, nothing running. Samples of instantaneous power give the spread; the energy
counter over the same span gives the mean, which is what the adjustment subtracts.

A measurement is cached per GPU (``baseline_cache_<uuid>.json`` in a study's
``_study-artefacts``) with its time, reused by later cells and later studies while younger than
its time-to-live, and thrown away when a cell's spot check finds idle power has drifted.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_llem.results.writer import write_json_atomic
from pytest_llem.study.ids import sanitise

ARTEFACTS_DIR = "_study-artefacts"


@dataclass
class IdleBaseline:
    """Idle power of one GPU."""

    gpu_uuid: str
    power_w: float  # the value subtracted: counter energy / duration, else the mean of samples
    mean_sampled_w: float
    std_w: float
    min_w: float
    max_w: float
    n_samples: int
    duration_s: float
    temperature_c: float | None
    measured_at: float  # Unix time
    method: str

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.measured_at)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IdleBaseline:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def sample_idle(gpu_uuids: list[str], duration_s: float, interval_s: float, method: str) -> list[IdleBaseline]:
    """Sample idle power of the GPUs for ``duration_s`` (call with the CUDA context already made)."""
    from pytest_llem.energy import _nvml
    from pytest_llem.energy.sampler import TelemetrySampler

    nvml = _nvml.load()
    handles = _nvml.open_handles(nvml, gpu_uuids)  # on failure it has released NVML itself
    try:
        sampler = TelemetrySampler(gpu_uuids, interval_s=interval_s)

        def counters() -> list[int | None]:
            values: list[int | None] = []
            for handle in handles:
                try:
                    values.append(int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)))
                except nvml.NVMLError:
                    values.append(None)
            return values

        before, started = counters(), time.perf_counter()
        sampler.start()
        time.sleep(duration_s)
        sampler.stop()
        after, elapsed = counters(), time.perf_counter() - started
    finally:
        _nvml.shutdown(nvml)
    baselines: list[IdleBaseline] = []
    for idx, uuid in enumerate(gpu_uuids):
        rows = [s for s in sampler.samples if s["gpu_idx"] == idx]
        powers = [float(s["power_w"]) for s in rows if s["power_w"] is not None]
        temps = [float(s["temperature_c"]) for s in rows if s["temperature_c"] is not None]
        if not powers:
            continue
        start_mj, end_mj = before[idx], after[idx]
        counter_w = (end_mj - start_mj) / 1000.0 / elapsed if start_mj is not None and end_mj is not None else None
        baselines.append(
            IdleBaseline(
                gpu_uuid=uuid,
                power_w=counter_w if counter_w is not None else statistics.fmean(powers),
                mean_sampled_w=statistics.fmean(powers),
                std_w=statistics.pstdev(powers),
                min_w=min(powers),
                max_w=max(powers),
                n_samples=len(powers),
                duration_s=elapsed,
                temperature_c=statistics.fmean(temps) if temps else None,
                measured_at=time.time(),
                method=method + ("; mean from the energy counter" if counter_w is not None else "; mean of power samples"),
            )
        )
    return baselines


def cache_file(study_dir: Path, gpu_uuid: str) -> Path:
    return study_dir / ARTEFACTS_DIR / f"baseline_cache_{sanitise(gpu_uuid)}.json"


def store(study_dir: Path, baseline: IdleBaseline) -> Path:
    path = cache_file(study_dir, baseline.gpu_uuid)
    write_json_atomic(path, baseline.to_json())
    return path


def load_fresh(path: Path, ttl_s: float) -> IdleBaseline | None:
    """The baseline cached at ``path`` if it is readable and younger than ``ttl_s``."""
    try:
        baseline = IdleBaseline.from_json(json.loads(path.read_text(encoding="utf-8")))
        fresh = baseline.age_s() <= ttl_s  # a non-numeric measured_at is a corrupt file too
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return baseline if fresh else None


def find_cached(results_root: Path, study_dir: Path, gpu_uuid: str, ttl_s: float) -> tuple[IdleBaseline, Path] | None:
    """The freshest cached baseline of this GPU: this study's first, then earlier studies'."""
    own = cache_file(study_dir, gpu_uuid)
    candidates = [own] + sorted(
        (p for p in results_root.glob(f"*/{ARTEFACTS_DIR}/{own.name}") if p != own),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for path in candidates:
        baseline = load_fresh(path, ttl_s)
        if baseline is not None:
            return baseline, path
    return None


def drift(baseline: IdleBaseline, spot_w: float) -> float:
    """Relative difference of a spot-check idle power from the baseline."""
    return abs(spot_w - baseline.power_w) / baseline.power_w if baseline.power_w > 0 else 0.0
