"""Idle power of each GPU, measured: :func:`sample_idle` in a process holding a CUDA context.

Idle power differs between boards and thermal states by tens of watts, which on a long window
is a large share of the energy; subtracting it gives the energy the workload itself cost
(``energy_adjusted_j``). It is measured in the state the cells run in: a process with a CUDA
context on the GPU, nothing running. Samples of instantaneous power give the spread; the energy
counter over the same span gives the mean, which is what the adjustment subtracts.

An idle power of 0 W or less, or not finite, is refused where it is measured (a stuck counter
gives 0 W, a reset one a negative figure): subtracting it would leave the energy unadjusted, or
add to it, while the record claimed an adjustment.

Caching a measurement for later cells and studies, and noticing drift, are the parent's side:
:mod:`pytest_llem.execution.idle_power`.
"""

from __future__ import annotations

import statistics
import time

from pytest_llem.energy.validity import is_positive_finite
from pytest_llem.errors import MeasurementInvalid
from pytest_llem.results.measurement import IdlePower


def sample_idle(gpu_uuids: list[str], duration_s: float, interval_s: float, method: str) -> list[IdlePower]:
    """Sample idle power of the GPUs for ``duration_s`` (call with the CUDA context already made).

    Each baseline records the ``duration_s`` and ``interval_s`` it was asked for (beside the time
    that actually elapsed): a cached baseline is reused only under the same settings.

    Raises :class:`~pytest_llem.errors.MeasurementInvalid`, naming every GPU concerned, when
    an idle power comes out at 0 W or less or not finite: no baseline is then subtracted, and
    the cells' records say why.
    """
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
    baselines: list[IdlePower] = []
    problems: list[str] = []
    for idx, uuid in enumerate(gpu_uuids):
        rows = [s for s in sampler.samples if s["gpu_idx"] == idx]
        powers = [float(s["power_w"]) for s in rows if s["power_w"] is not None]
        temps = [float(s["temperature_c"]) for s in rows if s["temperature_c"] is not None]
        if not powers:
            continue
        start_mj, end_mj = before[idx], after[idx]
        counter_w = (end_mj - start_mj) / 1000.0 / elapsed if start_mj is not None and end_mj is not None else None
        power_w = counter_w if counter_w is not None else statistics.fmean(powers)
        if not is_positive_finite(power_w):
            problems.append(_idle_problem(uuid, power_w, start_mj, end_mj, elapsed))
            continue
        baselines.append(
            IdlePower(
                gpu_uuid=uuid,
                power_w=power_w,
                mean_sampled_w=statistics.fmean(powers),
                std_w=statistics.pstdev(powers),
                min_w=min(powers),
                max_w=max(powers),
                n_samples=len(powers),
                duration_s=elapsed,
                temperature_c=statistics.fmean(temps) if temps else None,
                measured_at=time.time(),
                method=method + ("; mean from the energy counter" if counter_w is not None else "; mean of power samples"),
                requested_duration_s=duration_s,
                sample_interval_s=interval_s,
            )
        )
    if problems:
        raise MeasurementInvalid("idle power cannot be subtracted: " + "; ".join(problems))
    return baselines


def _idle_problem(uuid: str, power_w: float, start_mj: int | None, end_mj: int | None, elapsed_s: float) -> str:
    """Why one GPU's idle power is impossible, in a sentence."""
    if start_mj is None or end_mj is None:
        return f"GPU {uuid}: its power samples average {power_w:.6g} W"
    if end_mj == start_mj:
        return f"GPU {uuid}: the NVML energy counter did not move in {elapsed_s:.3g} s of idling (stuck at {start_mj} mJ)"
    if end_mj < start_mj:
        return f"GPU {uuid}: the NVML energy counter went back from {start_mj} to {end_mj} mJ while idling (reset)"
    return f"GPU {uuid}: the NVML energy counter gives an idle power of {power_w:.6g} W"
