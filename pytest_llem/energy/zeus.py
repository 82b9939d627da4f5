"""The Zeus meter: ``zeus.monitor.ZeusMonitor`` as an alternative source of GPU energy.

On Volta and newer Zeus reads the same NVML counter as :class:`NvmlMeter` (identical joules on
the H100 here); it is offered for users who already trust Zeus, and for its CPU/DRAM figures
(RAPL) where the machine exposes them. ``zeus`` is imported lazily: it is an optional extra,
and the ``pytest11`` entry point must not import it.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from pytest_llem.energy.nvml import COUNTER_UPDATE_PERIOD_S
from pytest_llem.energy.validity import is_positive_finite, refuse_window
from pytest_llem.errors import MeterUnavailable
from pytest_llem.results.measurement import EnergyReading

INSTALL_HINT = 'pip install "pytest-llem[zeus]"'

_window_ids = itertools.count()


def _check_visible_devices() -> None:
    """Refuse early where Zeus would fail obscurely.

    Zeus parses ``CUDA_VISIBLE_DEVICES`` as comma-separated integers and raises a bare
    ``ValueError`` on the GPU UUIDs our cell processes put there; MIG slices it refuses itself.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return
    entries = [entry.strip() for entry in visible.split(",")]
    if not all(entry.isdigit() for entry in entries):
        raise MeterUnavailable(
            f"the zeus meter needs CUDA_VISIBLE_DEVICES to hold integer indices, not {visible!r};"
            " use the nvml meter, which opens GPUs by UUID"
        )


class ZeusMeter:
    """Energy of a window on the given GPUs through ``ZeusMonitor``.

    ``cuda_indices`` are the CUDA indices of the GPUs as this process sees them (after
    ``CUDA_VISIBLE_DEVICES``), one per UUID and in the same order: that is how Zeus names
    GPUs. The UUIDs are kept for the record.
    """

    name = "zeus"

    def __init__(self, gpu_uuids: list[str], cuda_indices: list[int]) -> None:
        if not gpu_uuids:
            raise MeterUnavailable("the zeus meter needs at least one GPU, and the cell uses none")
        if len(cuda_indices) != len(gpu_uuids):
            raise ValueError(f"got {len(cuda_indices)} CUDA indices for {len(gpu_uuids)} GPU UUIDs")
        self.gpu_uuids = list(gpu_uuids)
        self.cuda_indices = list(cuda_indices)
        try:
            from zeus.monitor import ZeusMonitor
        except ImportError as exc:
            raise MeterUnavailable(f"the zeus meter needs the zeus package ({INSTALL_HINT})") from exc
        _check_visible_devices()
        try:
            self._monitor: Any = ZeusMonitor(gpu_indices=self.cuda_indices)
        except Exception as exc:  # Zeus raises its own error classes, which vary by version.
            raise MeterUnavailable(f"Zeus could not open GPUs {self.cuda_indices}: {exc}") from exc
        self._window: str | None = None

    def start(self) -> None:
        """Open a Zeus window; the caller has already synchronised the device."""
        if self._window is not None:
            raise RuntimeError("ZeusMeter.start() called twice without stop()")
        self._window = f"llem-{os.getpid()}-{next(_window_ids)}"
        # sync_execution=False: synchronising is the measurement loop's job, and Zeus's own
        # would import torch here.
        self._monitor.begin_window(self._window, sync_execution=False)

    def stop(self) -> EnergyReading:
        """Close the window and convert Zeus's ``Measurement`` into a reading.

        Raises :class:`~pytest_llem.errors.MeasurementInvalid` when Zeus reports 0 J or less
        for a GPU: Zeus takes the difference of the same NVML counter, so that is a stuck or
        reset counter, and Zeus passes it on as a number.
        """
        if self._window is None:
            raise RuntimeError("ZeusMeter.stop() called without start()")
        window, self._window = self._window, None
        measurement = self._monitor.end_window(window, sync_execution=False)
        window_s = float(measurement.time)
        per_device_j = [float(measurement.gpu_energy[idx]) for idx in self.cuda_indices]
        refuse_window(
            self.name,
            [
                f"GPU {uuid} (cuda:{idx}): Zeus reported {energy:.6g} J for the {window_s:.3g} s window"
                " (its NVML energy counter did not move, or went back after a reset)"
                for uuid, idx, energy in zip(self.gpu_uuids, self.cuda_indices, per_device_j)
                if not is_positive_finite(energy)
            ],
        )
        mean_power_w = [energy / window_s if window_s > 0 else 0.0 for energy in per_device_j]
        details: dict[str, Any] = {"cuda_indices": list(self.cuda_indices)}
        # CPU and DRAM energy (RAPL) exist in newer Zeus only, and only where readable.
        for field in ("cpu_energy", "dram_energy"):
            value = getattr(measurement, field, None)
            if value:
                details[f"{field}_j"] = {int(k): float(v) for k, v in value.items()}
        return EnergyReading(
            meter=self.name,
            window_s=window_s,
            total_j=sum(per_device_j),
            per_device_j=per_device_j,
            # Same counter as NvmlMeter, so the same edge error: see NvmlMeter.stop.
            error_bound_j=sum(COUNTER_UPDATE_PERIOD_S * power for power in mean_power_w),
            details=details,
        )

    def close(self) -> None:
        """Drop the monitor; Zeus shuts NVML down when its GPU objects are collected."""
        self._monitor = None
