"""What every energy meter offers the measurement loop.

A meter brackets the measured window: :meth:`EnergyMeter.start` just before it, after the
device was synchronised, and :meth:`EnergyMeter.stop` just after the closing synchronisation,
which returns the window's :class:`~pytest_llem.results.measurement.EnergyReading`.
"""

from __future__ import annotations

from typing import Protocol

from pytest_llem.results.measurement import EnergyReading


class EnergyMeter(Protocol):
    """The contract of an energy meter module."""

    name: str

    def start(self) -> None:
        """Begin a window."""

    def stop(self) -> EnergyReading:
        """End the window begun by :meth:`start` and return its energy."""

    def close(self) -> None:
        """Release the library handles."""
