"""The meter for when no energy can be measured: the window is still timed.

A CPU-only run, a machine without NVML, or ``meter: none`` in the study all end here. Energy
fields come back null with the reason attached, so a gate on energy can refuse to pass rather
than pass silently on a missing number.
"""

from __future__ import annotations

import time

from pytest_llem.results.measurement import EnergyReading


class NoMeter:
    """Times windows and reports no energy, saying why."""

    name = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self._t_start: float | None = None

    def start(self) -> None:
        """Note when the window opens."""
        if self._t_start is not None:
            raise RuntimeError("NoMeter.start() called twice without stop()")
        self._t_start = time.perf_counter()

    def stop(self) -> EnergyReading:
        """Return the window's length with null energy and the reason."""
        if self._t_start is None:
            raise RuntimeError("NoMeter.stop() called without start()")
        window_s = time.perf_counter() - self._t_start
        self._t_start = None
        return EnergyReading(
            meter=self.name,
            window_s=window_s,
            total_j=None,
            per_device_j=None,
            unavailable_reason=self.reason,
        )

    def close(self) -> None:
        """Nothing to release."""
