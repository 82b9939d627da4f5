"""Energy meters and GPU telemetry.

Nothing here imports ``pynvml``, ``zeus`` or ``torch`` at import time: the plugin's entry point
imports this package in every pytest run, GPU or not. The libraries load when a meter opens.
"""

from pytest_llem.energy.protocol import EnergyMeter, EnergyReading
from pytest_llem.energy.select import open_meter

__all__ = ["EnergyMeter", "EnergyReading", "open_meter"]
