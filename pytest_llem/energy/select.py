"""Choosing the meter for a cell from the study's ``meter`` setting.

``auto`` does the best the machine allows and says so when that is nothing; a meter named
explicitly either works or raises :class:`MeterUnavailable`, because a user who asked for NVML
must not receive a silently empty result instead.
"""

from __future__ import annotations

from pytest_llem.config.experiment import METER_KINDS
from pytest_llem.energy.none import NoMeter
from pytest_llem.energy.nvml import NvmlMeter
from pytest_llem.energy.protocol import EnergyMeter
from pytest_llem.energy.zeus import ZeusMeter
from pytest_llem.errors import MeterUnavailable

CPU_ONLY_REASON = "inference ran on the CPU: no GPU energy counter applies"


def open_meter(kind: str, gpu_uuids: list[str], cuda_indices: list[int] | None = None) -> EnergyMeter:
    """Open the meter ``kind`` for the GPUs the cell uses.

    ``gpu_uuids`` are the cell's GPUs (empty when inference runs on the CPU). ``cuda_indices``,
    their CUDA indices inside this process in the same order, are needed by ``zeus`` only.

    - ``auto``: :class:`NvmlMeter` when there are GPUs and NVML opens them, otherwise
      :class:`NoMeter` carrying the reason.
    - ``nvml``: :class:`NvmlMeter`, or :class:`MeterUnavailable`.
    - ``zeus``: :class:`ZeusMeter`, or :class:`MeterUnavailable` (naming the extra to install).
    - ``none``: :class:`NoMeter`; the window is timed, energy is null.
    """
    if kind == "none":
        return NoMeter("energy measurement was switched off (meter: none)")
    if kind == "auto":
        if not gpu_uuids:
            return NoMeter(CPU_ONLY_REASON)
        try:
            return NvmlMeter(gpu_uuids)
        except MeterUnavailable as exc:
            return NoMeter(str(exc))
    if kind == "nvml":
        if not gpu_uuids:
            raise MeterUnavailable(f"the nvml meter was requested but {CPU_ONLY_REASON}")
        return NvmlMeter(gpu_uuids)
    if kind == "zeus":
        if not gpu_uuids:
            raise MeterUnavailable(f"the zeus meter was requested but {CPU_ONLY_REASON}")
        if cuda_indices is None:
            raise ValueError("the zeus meter needs the CUDA indices of the cell's GPUs (cuda_indices)")
        return ZeusMeter(gpu_uuids, cuda_indices)
    raise ValueError(f"unknown meter {kind!r}; expected one of {', '.join(METER_KINDS)}")
