"""The NVML meter: GPU energy from the driver's cumulative counter, per GPU opened by UUID.

``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the driver loaded, Volta and newer)
read before and after the window is the most direct figure the GPU offers; polling power and
integrating is what we fall back to, with a warning, only where that counter is missing.
"""

from __future__ import annotations

import os
import time
from types import ModuleType
from typing import Any

from pytest_llem.energy import _nvml
from pytest_llem.energy.sampler import TelemetrySampler
from pytest_llem.energy.validity import is_positive_finite, refuse_window
from pytest_llem.errors import MeterUnavailable
from pytest_llem.results.measurement import EnergyReading

#: How often the counter moves (seen on the H100 here: about every 100 ms).
COUNTER_UPDATE_PERIOD_S = 0.1

_COUNTER = "energy_counter"
_INTEGRAL = "power_integral"
_MIB = 1024 * 1024


class NvmlMeter:
    """Energy of a window on the given GPUs, from NVML's energy counter.

    A GPU whose counter is not supported (before Volta) is measured instead by integrating
    power sampled every ``fallback_interval_s`` over the window; the reading then carries a
    warning in ``details["warnings"]``.
    """

    name = "nvml"

    def __init__(self, gpu_uuids: list[str], fallback_interval_s: float = 0.1) -> None:
        if not gpu_uuids:
            raise MeterUnavailable("the nvml meter needs at least one GPU, and the cell uses none")
        self.gpu_uuids = list(gpu_uuids)
        self.fallback_interval_s = fallback_interval_s
        self._nvml, self._handles = _nvml.load_handles(self.gpu_uuids)
        try:
            self._methods = [self._probe_counter(handle) for handle in self._handles]
        except self._nvml.NVMLError as exc:
            _nvml.shutdown(self._nvml)
            raise MeterUnavailable(f"the NVML energy counter could not be read: {exc}") from exc
        self._closed = False
        self._t_start: float | None = None
        self._counter_start: list[int | None] = []
        self._sampler: TelemetrySampler | None = None

    def _probe_counter(self, handle: Any) -> str:
        """Which method measures this GPU: the counter, or (before Volta) the power integral."""
        try:
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except self._nvml.NVMLError_NotSupported:
            return _INTEGRAL
        return _COUNTER

    def _fallback_uuids(self) -> list[str]:
        return [uuid for uuid, method in zip(self.gpu_uuids, self._methods) if method == _INTEGRAL]

    def start(self) -> None:
        """Read every counter; start the power sampler first if some GPU lacks one."""
        if self._t_start is not None:
            raise RuntimeError("NvmlMeter.start() called twice without stop()")
        fallback = self._fallback_uuids()
        if fallback:
            # Started before the window opens, so its spin-up is not inside the window.
            self._sampler = TelemetrySampler(fallback, interval_s=self.fallback_interval_s)
            self._sampler.start()
        self._t_start = time.perf_counter()
        self._counter_start = self._read_counters()

    def _read_counters(self) -> list[int | None]:
        return [
            int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) if method == _COUNTER else None
            for handle, method in zip(self._handles, self._methods)
        ]

    def stop(self) -> EnergyReading:
        """Read every counter again and return the window's energy with its error bound.

        The error bound: the counter only moves every ~100 ms, so a read at time ``t`` returns
        the energy up to ``t - d`` for some lag ``d`` below one update period ``T``. The window's
        error is then ``P_start x d_start - P_end x d_end``, which lies within one period's
        worth of energy, ``T x P``, with ``P`` the power at the edges, taken as the window's
        mean (warm-up runs right up to the window, so both edges are under load). Summed over
        GPUs. On the H100, 10 s windows measured against the counter's interpolated ticks erred
        by 0.30 % on average and 0.68 % at most, inside this bound of 1 % (BENCHMARKS.md). For
        a GPU measured by integrating sampled power the same edge term is used; it does not
        cover transients between samples (the warning says so).

        Raises :class:`~pytest_llem.errors.MeasurementInvalid` when a GPU's energy is 0 J or
        less (its counter stuck or reset, or its sampled power 0 W): see :meth:`_problems`.
        """
        if self._t_start is None:
            raise RuntimeError("NvmlMeter.stop() called without start()")
        counter_end = self._read_counters()
        t_end = time.perf_counter()
        t_start, self._t_start = self._t_start, None
        window_s = t_end - t_start
        per_device: list[float | None] = [
            None if start_mj is None or end_mj is None else (end_mj - start_mj) / 1000.0
            for start_mj, end_mj in zip(self._counter_start, counter_end)
        ]
        details: dict[str, Any] = {"counter_unit": "mJ", "per_device_method": list(self._methods)}
        if self._sampler is not None:
            self._fill_from_integral(per_device, t_start, t_end, details)
        refuse_window(self.name, self._problems(per_device, counter_end, window_s))
        energies = [energy for energy in per_device if energy is not None]
        if len(energies) < len(per_device):
            return EnergyReading(
                meter=self.name,
                window_s=window_s,
                total_j=None,
                per_device_j=None,
                unavailable_reason="no power samples to integrate for a GPU without an energy counter",
                details=details,
            )
        mean_power_w = [energy / window_s if window_s > 0 else 0.0 for energy in energies]
        error_bound_j = sum(COUNTER_UPDATE_PERIOD_S * power for power in mean_power_w)
        return EnergyReading(
            meter=self.name,
            window_s=window_s,
            total_j=sum(energies),
            per_device_j=energies,
            error_bound_j=error_bound_j,
            details=details,
        )

    def _problems(self, per_device: list[float | None], counter_end: list[int | None], window_s: float) -> list[str]:
        """Why each GPU's energy cannot be true, one sentence a GPU (none: all are valid).

        A counter that did not move is stuck (or the window was shorter than its update
        period); one that went back was reset (a driver reload, a GPU reset). An integral of 0 J
        or less means the GPU reported no power. A GPU without any figure (no power samples)
        is not a problem here: the reading says the energy is unavailable.
        """
        problems: list[str] = []
        for uuid, energy, start_mj, end_mj in zip(self.gpu_uuids, per_device, self._counter_start, counter_end):
            if energy is None or is_positive_finite(energy):
                continue
            if start_mj is None or end_mj is None:
                problems.append(f"GPU {uuid}: the integral of its sampled power is {energy:.6g} J (no power drawn)")
            elif end_mj == start_mj:
                short = (
                    "; the window is shorter than two counter updates, raise measurement.min_window_seconds"
                    if window_s < 2 * COUNTER_UPDATE_PERIOD_S
                    else ""
                )
                problems.append(
                    f"GPU {uuid}: the NVML energy counter did not move in the {window_s:.3g} s window"
                    f" (stuck at {start_mj} mJ{short})"
                )
            elif end_mj < start_mj:
                problems.append(
                    f"GPU {uuid}: the NVML energy counter went back from {start_mj} to {end_mj} mJ during the"
                    " window (reset, e.g. by a driver reload or a GPU reset)"
                )
            else:
                problems.append(f"GPU {uuid}: the NVML energy counter gave {energy:.6g} J for the window")
        return problems

    def _fill_from_integral(
        self, per_device: list[float | None], t_start: float, t_end: float, details: dict[str, Any]
    ) -> None:
        """Put the sampled-power integral in place for GPUs without a counter, with a warning.

        Leaves those entries ``None`` when the sampler got no power reading at all.
        """
        sampler = self._sampler
        assert sampler is not None and sampler.t0 is not None
        sampler.stop()
        self._sampler = None
        details["warnings"] = [
            "the NVML energy counter is not supported on "
            + ", ".join(sampler.gpu_uuids)
            + f" (pre-Volta): energy integrated from power sampled every {sampler.interval_s} s,"
            " which misses transients shorter than the interval"
        ]
        details["sampling_interval_s"] = sampler.interval_s
        try:
            integrals = iter(sampler.integrate_power_j(t_start - sampler.t0, t_end - sampler.t0))
        except ValueError:
            return
        for idx, method in enumerate(self._methods):
            if method == _INTEGRAL:
                per_device[idx] = next(integrals)

    def close(self) -> None:
        """Stop a running fallback sampler and release NVML. Safe to call again."""
        if self._closed:
            return
        self._closed = True
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        _nvml.shutdown(self._nvml)


def describe_gpus(gpu_uuids: list[str]) -> list[dict[str, Any]]:
    """The state of each GPU for the result's record, one dict per UUID, in order.

    A field is ``None`` where its query raises an NVML error (unsupported, no permission), so
    one missing figure never costs the others. ``index`` is NVML's index, which is not the CUDA
    index when ``CUDA_VISIBLE_DEVICES`` reorders or hides GPUs. ``foreign_compute_processes``
    counts compute processes outside this process and its descendants (vLLM and TensorRT-LLM
    run the model in worker processes of their own); it is ``None`` (unknown) inside a PID
    namespace (a container), where NVML's host PIDs cannot be matched with ours.

    Raises :class:`MeterUnavailable` when NVML cannot initialise or a UUID is not found.
    """
    nvml, handles = _nvml.load_handles(list(gpu_uuids))
    own = None if pid_namespace_is_nested() else own_process_tree()
    try:
        driver = _nvml.query(nvml, nvml.nvmlSystemGetDriverVersion)
        return [_describe_one(nvml, uuid, handle, driver, own) for uuid, handle in zip(gpu_uuids, handles)]
    finally:
        _nvml.shutdown(nvml)


def _describe_one(
    nvml: ModuleType, uuid: str, handle: Any, driver: str | bytes | None, own: set[int] | None
) -> dict[str, Any]:
    q = _nvml.query
    name = q(nvml, nvml.nvmlDeviceGetName, handle)
    limit_mw = q(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    persistence = q(nvml, nvml.nvmlDeviceGetPersistenceMode, handle)
    memory = q(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    mig = q(nvml, nvml.nvmlDeviceGetMigMode, handle)
    processes = q(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle)
    if own is None:  # NVML's PIDs are the host's and cannot be matched with ours: unknown
        processes = None
    foreign = [] if processes is None or own is None else [proc for proc in processes if proc.pid not in own]
    return {
        "uuid": uuid,
        "index": q(nvml, nvml.nvmlDeviceGetIndex, handle),
        "name": None if name is None else _nvml.as_text(name),
        "driver_version": None if driver is None else _nvml.as_text(driver),
        "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
        "sm_clock_mhz": q(nvml, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
        "max_sm_clock_mhz": q(nvml, nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM),
        "persistence_mode": None if persistence is None else persistence == nvml.NVML_FEATURE_ENABLED,
        "temperature_c": q(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU),
        "memory_total_mib": None if memory is None else memory.total / _MIB,
        "memory_used_mib": None if memory is None else memory.used / _MIB,
        # nvmlDeviceGetMigMode returns [current, pending]; only the current mode matters now.
        "mig_mode": None if mig is None else mig[0] == nvml.NVML_DEVICE_MIG_ENABLE,
        "foreign_compute_processes": None if processes is None else len(foreign),
        # usedGpuMemory is None where the driver will not tell (e.g. without privileges).
        "foreign_memory_mib": (
            None if processes is None else sum((getattr(p, "usedGpuMemory", None) or 0) for p in foreign) / _MIB
        ),
    }


def pid_namespace_is_nested() -> bool:
    """True inside a container with its own PID namespace (``NSpid`` lists more than one PID).

    NVML reports the host's PIDs, which then match nothing in this process's ``/proc``.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return len(line.split()) > 2
    except OSError:
        pass
    return False


def own_process_tree() -> set[int]:
    """This process and every process descended from it, from ``/proc`` (Linux).

    Elsewhere, or where ``/proc`` cannot be read, just this process.
    """
    me = os.getpid()
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {me}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Field 4 is the parent PID; the command name (field 2) may hold spaces, so split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = {me}, [me]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree
