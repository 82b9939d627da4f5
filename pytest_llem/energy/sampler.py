"""GPU telemetry sampled on a background thread: the cell's ``timeseries.parquet``.

The energy counter is the measurement; these samples are its context (was the GPU throttling,
hot, busy?) and its cross-check (the integral of sampled power should agree with the counter
within a few percent). On GPUs without the counter (before Volta) the integral is the
measurement, with a warning.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from typing_extensions import Self

from pytest_llem.energy import _nvml

#: The columns of the results contract, in order, with their Arrow types (results-schema.md).
CONTRACT_COLUMNS: dict[str, str] = {
    "t": "float64",
    "gpu_idx": "int32",
    "power_w": "float64",
    "temperature_c": "float64",
    "memory_used_mib": "float64",
    "sm_clock_mhz": "float64",
}
#: Columns we add beyond the contract (allowed: new fields are optional).
EXTRA_COLUMNS: dict[str, str] = {
    "utilization_gpu_pct": "float64",
    "throttle_reasons": "int64",
    "energy_mj": "int64",
}

_MIB = 1024 * 1024


class TelemetrySampler:
    """Sample power, temperature, memory, clock, utilisation, throttling and energy per GPU.

    ``t`` in every sample is seconds since ``t0``, a :func:`time.perf_counter` value: pass the
    experiment's start so the timeseries shares the result's clock, or leave it out and the
    sampler's own start is used. ``gpu_idx`` is the position in ``gpu_uuids``.

    A sampler runs once: :meth:`start`, then :meth:`stop` (idempotent). It is also a context
    manager.
    """

    def __init__(self, gpu_uuids: list[str], interval_s: float = 0.1, t0: float | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.gpu_uuids = list(gpu_uuids)
        self.interval_s = interval_s
        self._t0 = t0
        self._samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: ModuleType | None = None
        self._handles: list[Any] = []
        self._counter_supported: list[bool] = []
        self._throttle_fn: Callable[[Any], int] | None = None

    @property
    def t0(self) -> float | None:
        """The :func:`time.perf_counter` value that ``t`` counts from (set by :meth:`start`)."""
        return self._t0

    @property
    def samples(self) -> list[dict[str, Any]]:
        """A copy of the samples taken so far, safe to read while the thread runs."""
        with self._lock:
            return [dict(sample) for sample in self._samples]

    def start(self) -> None:
        """Open the GPUs (raising :class:`MeterUnavailable` if impossible) and start sampling."""
        if self._thread is not None:
            raise RuntimeError("a TelemetrySampler runs once; create a new one")
        self._nvml, self._handles = _nvml.load_handles(self.gpu_uuids)
        self._counter_supported = [True] * len(self._handles)
        self._throttle_fn = _nvml.throttle_reasons_fn(self._nvml)
        if self._t0 is None:
            self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="llem-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling after one closing sample, and release NVML. Safe to call again."""
        if self._thread is None or self._stop_event.is_set():
            return
        self._stop_event.set()
        self._thread.join()
        if self._nvml is not None:
            _nvml.shutdown(self._nvml)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        """Sample on a fixed schedule (no drift from slow queries), then once more at the end.

        The closing sample makes sure a window that ends between two ticks is still covered
        when power is integrated up to its end.
        """
        assert self._t0 is not None
        next_tick = time.perf_counter()
        while not self._stop_event.is_set():
            self._sample_all()
            next_tick += self.interval_s
            self._stop_event.wait(max(0.0, next_tick - time.perf_counter()))
        self._sample_all()

    def _sample_all(self) -> None:
        rows = [self._sample_one(idx, handle) for idx, handle in enumerate(self._handles)]
        with self._lock:
            self._samples.extend(rows)

    def _sample_one(self, idx: int, handle: Any) -> dict[str, Any]:
        """One row; a query that fails (an NVMLError) leaves its field null, never the thread."""
        nvml = self._nvml
        assert nvml is not None and self._t0 is not None
        t = time.perf_counter() - self._t0
        power_mw = _nvml.query(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        temperature = _nvml.query(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        memory = _nvml.query(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        sm_clock = _nvml.query(nvml, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)
        utilization = _nvml.query(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        reasons = None if self._throttle_fn is None else _nvml.query(nvml, self._throttle_fn, handle)
        return {
            "t": t,
            "gpu_idx": idx,
            "power_w": None if power_mw is None else power_mw / 1000.0,
            "temperature_c": None if temperature is None else float(temperature),
            "memory_used_mib": None if memory is None else memory.used / _MIB,
            "sm_clock_mhz": None if sm_clock is None else float(sm_clock),
            "utilization_gpu_pct": None if utilization is None else float(utilization.gpu),
            "throttle_reasons": None if reasons is None else int(reasons),
            "energy_mj": self._read_counter(nvml, idx, handle),
        }

    def _read_counter(self, nvml: ModuleType, idx: int, handle: Any) -> int | None:
        """The cumulative energy counter, remembered as unsupported after the first refusal."""
        if not self._counter_supported[idx]:
            return None
        try:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except nvml.NVMLError_NotSupported:
            self._counter_supported[idx] = False
        except nvml.NVMLError:
            pass
        return None

    def integrate_power_j(self, t_start: float, t_end: float) -> list[float]:
        """Energy per GPU between two times on the ``t`` axis, by the trapezoid rule over power.

        Power at the window's edges is interpolated linearly between the neighbouring samples
        (held constant beyond the first or last one), so a window need not fall on ticks.
        Raises ``ValueError`` for a GPU with no power sample at all.
        """
        if t_end < t_start:
            raise ValueError(f"t_end ({t_end}) is before t_start ({t_start})")
        samples = self.samples
        energies: list[float] = []
        for idx, uuid in enumerate(self.gpu_uuids):
            points = sorted(
                (s["t"], s["power_w"]) for s in samples if s["gpu_idx"] == idx and s["power_w"] is not None
            )
            if not points:
                raise ValueError(f"no power samples for GPU {uuid}")
            t = np.array([p[0] for p in points])
            power = np.array([p[1] for p in points])
            inside = (t > t_start) & (t < t_end)
            grid = np.concatenate(([t_start], t[inside], [t_end]))
            on_grid = np.interp(grid, t, power)
            # Trapezoid rule written out: np.trapz is deprecated and np.trapezoid needs numpy 2.
            energies.append(float(np.sum((on_grid[1:] + on_grid[:-1]) * np.diff(grid)) / 2.0))
        return energies

    def write_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write the samples with the contract's columns and types, atomically.

        The file appears complete or not at all (temporary file in the same directory, then
        :func:`os.replace`), so a reader never sees half a timeseries after a crash.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {**CONTRACT_COLUMNS, **EXTRA_COLUMNS}
        schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in columns.items()])
        schema = schema.with_metadata(
            {"llem.gpu_uuids": ",".join(self.gpu_uuids), "llem.interval_s": repr(self.interval_s)}
        )
        samples = self.samples
        table = pa.Table.from_pydict({name: [s[name] for s in samples] for name in columns}, schema=schema)
        target = Path(path)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            pq.write_table(table, tmp_name)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
