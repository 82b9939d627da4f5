"""What every energy meter offers the measurement loop.

A meter brackets the measured window: :meth:`EnergyMeter.start` just before it, after the
device was synchronised, and :meth:`EnergyMeter.stop` just after the closing synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class EnergyReading:
    """Energy of one measured window.

    ``total_j`` is null when the meter cannot measure (``unavailable_reason`` says why); the
    window length is always known, since timing never depends on a meter.
    """

    meter: str  # the meter that actually ran: "nvml", "zeus" or "none"
    window_s: float
    total_j: float | None
    per_device_j: list[float] | None
    unavailable_reason: str | None = None
    error_bound_j: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class EnergyMeter(Protocol):
    """The contract of an energy meter module."""

    name: str

    def start(self) -> None:
        """Begin a window."""

    def stop(self) -> EnergyReading:
        """End the window begun by :meth:`start` and return its energy."""

    def close(self) -> None:
        """Release the library handles."""
