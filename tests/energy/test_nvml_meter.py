"""The meters and their selection, against the fake NVML (and a fake Zeus) at the import boundary."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.energy.none import NoMeter
from pytest_llem.energy.nvml import NvmlMeter, describe_gpus
from pytest_llem.energy.select import CPU_ONLY_REASON, open_meter
from pytest_llem.energy.zeus import ZeusMeter
from pytest_llem.errors import MeasurementInvalid, MeterUnavailable

if TYPE_CHECKING:
    from conftest import FakeNvml


def _measure(meter: Any, seconds: float) -> Any:
    meter.start()
    time.sleep(seconds)
    return meter.stop()


def test_window_on_one_gpu_is_power_times_time(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0", power_w=300.0))
    meter = NvmlMeter(["GPU-fake-0"])
    try:
        reading = _measure(meter, 0.5)
    finally:
        meter.close()
    assert reading.meter == "nvml"
    assert reading.total_j == pytest.approx(150.0, rel=0.10)
    assert reading.total_j == pytest.approx(300.0 * reading.window_s, rel=0.02)
    assert reading.per_device_j == [reading.total_j]
    assert reading.unavailable_reason is None
    assert reading.details["counter_unit"] == "mJ"
    # Two counter update periods (0.1 s each) at the window's mean power.
    assert reading.error_bound_j == pytest.approx(0.1 * 300.0, rel=0.05)
    assert fake_nvml.init_count() == 0


def test_two_gpus_are_measured_separately(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0), fake_nvml.gpu("GPU-b", power_w=100.0))
    meter = NvmlMeter(["GPU-a", "GPU-b"])
    try:
        reading = _measure(meter, 0.5)
    finally:
        meter.close()
    assert reading.per_device_j == pytest.approx([150.0, 50.0], rel=0.10)
    assert reading.total_j == pytest.approx(sum(reading.per_device_j))
    assert reading.error_bound_j == pytest.approx(0.1 * 400.0, rel=0.05)


def test_gpus_are_reported_in_the_order_asked(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0), fake_nvml.gpu("GPU-b", power_w=100.0))
    meter = NvmlMeter(["GPU-b", "GPU-a"])
    try:
        reading = _measure(meter, 0.3)
    finally:
        meter.close()
    assert reading.per_device_j[0] == pytest.approx(reading.per_device_j[1] / 3, rel=0.05)


def test_counter_granularity_stays_within_the_error_bound(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-q", power_w=400.0, counter_period_s=0.1))
    meter = NvmlMeter(["GPU-q"])
    try:
        readings = [_measure(meter, 0.25) for _ in range(3)]
    finally:
        meter.close()
    for reading in readings:
        assert abs(reading.total_j - 400.0 * reading.window_s) <= reading.error_bound_j


def test_unsupported_counter_falls_back_to_integrated_power(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-old", power_w=250.0, supports_energy=False))
    meter = NvmlMeter(["GPU-old"], fallback_interval_s=0.05)
    try:
        reading = _measure(meter, 0.5)
    finally:
        meter.close()
    assert reading.total_j == pytest.approx(250.0 * reading.window_s, rel=0.05)
    assert reading.details["per_device_method"] == ["power_integral"]
    [warning] = reading.details["warnings"]
    assert "not supported" in warning and "GPU-old" in warning
    assert fake_nvml.init_count() == 0


def test_mixed_gpus_use_the_counter_where_there_is_one(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(
        fake_nvml.gpu("GPU-new", power_w=300.0), fake_nvml.gpu("GPU-old", power_w=100.0, supports_energy=False)
    )
    meter = NvmlMeter(["GPU-new", "GPU-old"], fallback_interval_s=0.05)
    try:
        reading = _measure(meter, 0.4)
    finally:
        meter.close()
    assert reading.details["per_device_method"] == ["energy_counter", "power_integral"]
    assert reading.per_device_j == pytest.approx([300.0 * reading.window_s, 100.0 * reading.window_s], rel=0.05)
    assert "GPU-new" not in reading.details["warnings"][0]


def test_fallback_without_power_readings_reports_no_energy(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(
        fake_nvml.gpu("GPU-old", supports_energy=False, fail={"nvmlDeviceGetPowerUsage": -1})
    )
    meter = NvmlMeter(["GPU-old"], fallback_interval_s=0.05)
    try:
        reading = _measure(meter, 0.1)
    finally:
        meter.close()
    assert reading.total_j is None and reading.per_device_j is None
    assert "no power samples" in reading.unavailable_reason


def test_unknown_uuid_is_named_in_the_error(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"))
    with pytest.raises(MeterUnavailable, match="GPU-missing"):
        NvmlMeter(["GPU-fake-0", "GPU-missing"])
    assert fake_nvml.init_count() == 0


def test_nvml_init_failure_is_meter_unavailable(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"), init_error=True)
    with pytest.raises(MeterUnavailable, match="Driver Not Loaded"):
        NvmlMeter(["GPU-fake-0"])


def test_close_releases_nvml_once(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"))
    meter = NvmlMeter(["GPU-fake-0"])
    assert fake_nvml.init_count() == 1
    meter.close()
    meter.close()
    assert fake_nvml.init_count() == 0


def test_stop_without_start_is_an_error(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"))
    meter = NvmlMeter(["GPU-fake-0"])
    try:
        with pytest.raises(RuntimeError, match="without start"):
            meter.stop()
    finally:
        meter.close()


# --- impossible windows: a stuck or reset counter is an error, never 0 J ---------------------


def test_a_stuck_counter_fails_instead_of_reading_zero(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-ok", power_w=300.0), fake_nvml.gpu("GPU-stuck", power_w=300.0, counter_w=0.0))
    meter = NvmlMeter(["GPU-ok", "GPU-stuck"])
    try:
        meter.start()
        with pytest.raises(MeasurementInvalid) as caught:
            meter.stop()
    finally:
        meter.close()
    message = str(caught.value)
    assert "GPU GPU-stuck: the NVML energy counter did not move" in message and "stuck at 0 mJ" in message
    assert "GPU-ok" not in message  # only the GPU at fault is named
    assert fake_nvml.init_count() == 0


def test_a_counter_that_goes_back_fails_naming_a_reset(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-reset", power_w=300.0, counter_w=-50.0))
    meter = NvmlMeter(["GPU-reset"])
    try:
        meter.start()
        with pytest.raises(MeasurementInvalid, match=r"GPU GPU-reset: the NVML energy counter went back from -?\d+ to -?\d+ mJ"):
            meter.stop()
        # The meter is left usable: the next window is refused for the same reason, not a state error.
        meter.start()
        with pytest.raises(MeasurementInvalid, match="reset"):
            meter.stop()
    finally:
        meter.close()


def test_a_stuck_counter_in_a_very_short_window_says_the_window_is_short(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-q"))
    meter = NvmlMeter(["GPU-q"])
    try:
        meter._counter_start = [5000]
        short = meter._problems([0.0], [5000], window_s=0.05)
        long = meter._problems([0.0], [5000], window_s=10.0)
    finally:
        meter.close()
    assert short == [
        (
            "GPU GPU-q: the NVML energy counter did not move in the 0.05 s window (stuck at 5000 mJ; the window is"
            " shorter than two counter updates, raise measurement.min_window_seconds)"
        )
    ]
    assert long == ["GPU GPU-q: the NVML energy counter did not move in the 10 s window (stuck at 5000 mJ)"]


def test_a_zero_power_integral_fails_on_a_gpu_without_counter(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-old", power_w=0.0, supports_energy=False))
    meter = NvmlMeter(["GPU-old"], fallback_interval_s=0.01)
    try:
        meter.start()
        with pytest.raises(MeasurementInvalid, match=r"GPU GPU-old: the integral of its sampled power is 0 J"):
            meter.stop()
    finally:
        meter.close()
    assert fake_nvml.init_count() == 0


# --- open_meter ---------------------------------------------------------------------------


def test_auto_without_gpus_is_no_meter_with_a_reason() -> None:
    meter = open_meter("auto", [])
    assert isinstance(meter, NoMeter)
    reading = _measure(meter, 0.05)
    assert reading.meter == "none"
    assert reading.total_j is None and reading.per_device_j is None
    assert reading.unavailable_reason == CPU_ONLY_REASON
    assert reading.window_s >= 0.05


def test_auto_with_gpus_opens_nvml(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"))
    meter = open_meter("auto", ["GPU-fake-0"])
    try:
        assert isinstance(meter, NvmlMeter)
    finally:
        meter.close()


def test_auto_degrades_to_no_meter_with_the_nvml_error(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"), init_error=True)
    meter = open_meter("auto", ["GPU-fake-0"])
    assert isinstance(meter, NoMeter)
    assert "Driver Not Loaded" in _measure(meter, 0.01).unavailable_reason


def test_explicit_nvml_never_degrades(fake_nvml: FakeNvml) -> None:
    with pytest.raises(MeterUnavailable, match="CPU"):
        open_meter("nvml", [])
    fake_nvml.configure(fake_nvml.gpu("GPU-fake-0"), init_error=True)
    with pytest.raises(MeterUnavailable, match="Driver Not Loaded"):
        open_meter("nvml", ["GPU-fake-0"])


def test_without_nvml_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    meter = open_meter("auto", ["GPU-fake-0"])
    assert isinstance(meter, NoMeter)
    assert "nvidia-ml-py" in meter.reason
    with pytest.raises(MeterUnavailable, match="nvidia-ml-py"):
        open_meter("nvml", ["GPU-fake-0"])


def test_none_and_unknown_kinds() -> None:
    assert isinstance(open_meter("none", ["GPU-fake-0"]), NoMeter)
    with pytest.raises(ValueError, match="auto, nvml, zeus, none"):
        open_meter("rapl", [])


def test_importing_the_package_loads_no_gpu_library() -> None:
    code = (
        "import sys, pytest_llem.energy, pytest_llem.energy.select, pytest_llem.energy.sampler;"
        "print(sorted({'pynvml', 'torch', 'zeus'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- zeus ---------------------------------------------------------------------------------


def test_zeus_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeus", None)
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)
    with pytest.raises(MeterUnavailable, match=r'pip install "pytest-llem\[zeus\]"'):
        open_meter("zeus", ["GPU-fake-0"], cuda_indices=[0])


def _install_fake_zeus(monkeypatch: pytest.MonkeyPatch, energies: dict[int, float]) -> list[Any]:
    """A ``zeus.monitor`` whose ZeusMonitor returns ``energies``; returns the monitors made."""
    made: list[Any] = []

    class ZeusMonitor:
        def __init__(self, gpu_indices: list[int]) -> None:
            self.gpu_indices = gpu_indices
            self.open: set[str] = set()
            made.append(self)

        def begin_window(self, key: str, sync_execution: bool = True) -> None:
            assert not sync_execution
            self.open.add(key)

        def end_window(self, key: str, sync_execution: bool = True) -> SimpleNamespace:
            self.open.remove(key)
            return SimpleNamespace(time=2.0, gpu_energy={i: energies[i] for i in self.gpu_indices})

    zeus, monitor = ModuleType("zeus"), ModuleType("zeus.monitor")
    monitor.ZeusMonitor = ZeusMonitor  # type: ignore[attr-defined]
    zeus.monitor = monitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zeus", zeus)
    monkeypatch.setitem(sys.modules, "zeus.monitor", monitor)
    return made


def test_zeus_maps_cuda_indices_to_the_uuid_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    made = _install_fake_zeus(monkeypatch, {0: 100.0, 2: 40.0})
    meter = open_meter("zeus", ["GPU-x", "GPU-y"], cuda_indices=[2, 0])
    assert isinstance(meter, ZeusMeter)
    reading = _measure(meter, 0.0)
    meter.close()
    assert made[0].gpu_indices == [2, 0] and not made[0].open
    assert reading.meter == "zeus"
    assert reading.per_device_j == [40.0, 100.0]
    assert reading.total_j == 140.0
    assert reading.window_s == 2.0
    assert reading.error_bound_j == pytest.approx(0.1 * (20.0 + 50.0))


def test_zeus_refuses_uuids_in_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_fake_zeus(monkeypatch, {0: 1.0})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-x")
    with pytest.raises(MeterUnavailable, match="CUDA_VISIBLE_DEVICES"):
        open_meter("zeus", ["GPU-x"], cuda_indices=[0])


def test_zeus_needs_cuda_indices() -> None:
    with pytest.raises(ValueError, match="cuda_indices"):
        open_meter("zeus", ["GPU-x"])


# --- describe_gpus ------------------------------------------------------------------------


def test_describe_gpus_reports_the_state_of_each_gpu(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(
        fake_nvml.gpu(
            "GPU-a",
            power_limit_w=700.0,
            sm_clock_mhz=1755,
            max_sm_clock_mhz=1980,
            memory_total_mib=81559,
            memory_used_mib=2048,
            persistence=False,
            mig=False,
            processes=[os.getpid(), 4242, 4343],
        ),
        fake_nvml.gpu("GPU-b", name="Fake A100"),
        driver_version="550.54.15",
    )
    a, b = describe_gpus(["GPU-a", "GPU-b"])
    assert a == {
        "uuid": "GPU-a",
        "index": 0,
        "name": "Fake H100",
        "driver_version": "550.54.15",
        "power_limit_w": 700.0,
        "sm_clock_mhz": 1755,
        "max_sm_clock_mhz": 1980,
        "persistence_mode": False,
        "temperature_c": 45,
        "memory_total_mib": 81559.0,
        "memory_used_mib": 2048.0,
        "mig_mode": False,
        "foreign_compute_processes": 2,
        "foreign_memory_mib": 1024.0,  # two foreign processes of 512 MiB each
    }
    assert b["name"] == "Fake A100" and b["index"] == 1
    assert b["mig_mode"] is None  # not supported
    assert b["persistence_mode"] is True and b["foreign_compute_processes"] == 0
    assert fake_nvml.init_count() == 0


def test_an_engines_own_worker_processes_are_not_foreign(fake_nvml: FakeNvml) -> None:
    """vLLM and TensorRT-LLM run the model in processes they start: those are the cell's own.

    A grandchild stands in for a worker that a worker started; the parent of this test
    process is outside the tree and stays foreign.
    """
    grandparent = subprocess.Popen(
        [sys.executable, "-c", ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '30']);"
         " print(p.pid, flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert grandparent.stdout is not None
        grandchild = int(grandparent.stdout.readline())
        fake_nvml.configure(fake_nvml.gpu("GPU-a", processes=[grandparent.pid, grandchild, os.getppid()]))
        (state,) = describe_gpus(["GPU-a"])
        assert state["foreign_compute_processes"] == 1
    finally:
        subprocess.run(["pkill", "-P", str(grandparent.pid)], check=False)
        grandparent.kill()
        grandparent.wait()
        grandparent.stdout.close()  # type: ignore[union-attr]


def test_inside_a_pid_namespace_foreign_processes_are_unknown(
    fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVML reports host PIDs; in a container they match nothing here, so no count is given."""
    import pytest_llem.energy.nvml as nvml_module

    monkeypatch.setattr(nvml_module, "pid_namespace_is_nested", lambda: True)
    fake_nvml.configure(fake_nvml.gpu("GPU-a", processes=[4242]))
    (state,) = describe_gpus(["GPU-a"])
    assert state["foreign_compute_processes"] is None and state["foreign_memory_mib"] is None


def test_describe_gpus_leaves_failed_queries_null(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(
        fake_nvml.gpu("GPU-a", fail={"nvmlDeviceGetEnforcedPowerLimit": -1, "nvmlDeviceGetMemoryInfo": -1})
    )
    [info] = describe_gpus(["GPU-a"])
    assert info["power_limit_w"] is None
    assert info["memory_total_mib"] is None and info["memory_used_mib"] is None
    assert info["temperature_c"] == 45


def test_describe_gpus_decodes_bytes_from_old_bindings(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", name="Fake V100"), bytes_strings=True, driver_version="470.1")
    [info] = describe_gpus(["GPU-a"])
    assert info["name"] == "Fake V100" and info["driver_version"] == "470.1"


def test_describe_gpus_unknown_uuid(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a"))
    with pytest.raises(MeterUnavailable, match="GPU-nope"):
        describe_gpus(["GPU-nope"])
    assert fake_nvml.init_count() == 0


def test_counter_failing_at_open_is_meter_unavailable(fake_nvml: FakeNvml) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", fail={"nvmlDeviceGetTotalEnergyConsumption": -1}))
    with pytest.raises(MeterUnavailable, match="energy counter"):
        NvmlMeter(["GPU-a"])
    assert fake_nvml.init_count() == 0


@pytest.mark.parametrize("energy", [0.0, -12.5, float("nan")])
def test_zeus_reporting_no_energy_fails_instead_of_reading_zero(monkeypatch: pytest.MonkeyPatch, energy: float) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _install_fake_zeus(monkeypatch, {0: 100.0, 1: energy})
    meter = open_meter("zeus", ["GPU-x", "GPU-y"], cuda_indices=[0, 1])
    meter.start()
    with pytest.raises(MeasurementInvalid) as caught:
        meter.stop()
    meter.close()
    message = str(caught.value)
    assert message.startswith("the zeus meter measured no valid energy for the window: GPU GPU-y (cuda:1): Zeus reported")
    assert "GPU-x" not in message and "did not move, or went back after a reset" in message
