"""runner/measure.py: a window whose energy cannot be true fails the cell instead of recording it.

``measure_cell`` runs in-process here, with the fake NVML at the import boundary and a stub
engine (no model is loaded), so each test drives the real meter, sampler and cross-check. The
outcome never depends on timing: a stuck counter reads 0 J whatever the window's length, and the
fake's counter and reported power grow at fixed rates, so their gap is a ratio of the two.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.engines.protocol import BatchResult, LoadRequest
from pytest_llem.errors import MeasurementInvalid
from pytest_llem.results.measurement import CellMeasurement, GpuInfo
from pytest_llem.runner import measure
from tests.energy.conftest import FakeNvml


class StubEngine:
    """An engine on the fake GPUs that produces four tokens per prompt in 20 ms a batch."""

    name = "stub"

    def __init__(self, uuids: list[str]) -> None:
        self._gpus = [GpuInfo(uuid=uuid, name="Fake H100", cuda_index=i) for i, uuid in enumerate(uuids)]
        self.released = False

    def load(self, request: LoadRequest) -> None:
        """Nothing to load: the workload is given by the test."""

    @property
    def gpus(self) -> list[GpuInfo]:
        return list(self._gpus)

    @property
    def device_description(self) -> str:
        return "stub"

    def parameter_count(self) -> int:
        return 1000

    def plan_batches(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        return [prompts]

    def run_batch(self, batch: list[list[int]]) -> BatchResult:
        time.sleep(0.02)  # the window needs a few samples of power; its length changes no outcome
        return BatchResult.untimed([[5, 6, 7, 8] for _ in batch], 0.02)

    def version(self) -> str | None:
        return None

    def effective_settings(self) -> dict[str, Any]:
        return {}

    def peak_memory_bytes(self) -> int | None:
        return None

    def release(self) -> None:
        self.released = True


def _config(**measurement_overrides: Any) -> ExperimentConfig:
    settings: dict[str, Any] = {
        "energy": "nvml",
        "min_window_seconds": 0.3,
        "sample_interval_ms": 20,
        "warmup": {"min_batches": 0, "max_batches": 0},
        "baseline": {"spot_check_seconds": 0},
        "preflight": "off",
        **measurement_overrides,
    }
    return ExperimentConfig.model_validate({"measurement": settings})


def _measure(config: ExperimentConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uuids: list[str]) -> CellMeasurement:
    monkeypatch.setattr(measure, "_load", lambda *args: measure._Workload("stub-model", [[1, 2, 3]], 0.0))
    return measure.measure_cell(
        config, engine=StubEngine(uuids), base_dir=tmp_path, cell_dir=tmp_path, phase=lambda name: None
    )


def test_a_healthy_window_is_measured(fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0))
    result = _measure(_config(), tmp_path, monkeypatch, ["GPU-a"])
    assert result.energy.total_j is not None and result.energy.total_j > 0
    [row] = result.telemetry.cross_check
    assert row["relative_gap"] < 0.05
    assert not [w for w in result.warnings if "differ by" in w]


def test_a_stuck_counter_fails_the_cell(fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0, counter_w=0.0))
    with pytest.raises(MeasurementInvalid, match=r"GPU GPU-a: the NVML energy counter did not move .*stuck at 0 mJ"):
        _measure(_config(), tmp_path, monkeypatch, ["GPU-a"])
    assert (tmp_path / measure.TIMESERIES_NAME).is_file(), "the timeseries is kept as evidence"
    assert fake_nvml.init_count() == 0, "meter and sampler released NVML"


def test_a_reset_counter_fails_the_cell(fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0, counter_w=-80.0))
    with pytest.raises(MeasurementInvalid, match="GPU GPU-a: the NVML energy counter went back from"):
        _measure(_config(), tmp_path, monkeypatch, ["GPU-a"])


def test_counter_and_power_far_apart_fail_the_cell(fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The counter says 100 W while power reads 300 W: a 200 % gap, beyond the failing 25 %.
    fake_nvml.configure(fake_nvml.gpu("GPU-ok", power_w=300.0), fake_nvml.gpu("GPU-a", power_w=300.0, counter_w=100.0))
    with pytest.raises(MeasurementInvalid) as caught:
        _measure(_config(), tmp_path, monkeypatch, ["GPU-ok", "GPU-a"])
    message = str(caught.value)
    assert message.startswith("the measured window's energy cannot be trusted: GPU GPU-a: energy counter (")
    assert "beyond measurement.cross_check_fail_tolerance (25 %)" in message
    assert "GPU-ok" not in message
    assert f"(timeseries in {measure.TIMESERIES_NAME})" in message


def test_a_gap_between_the_two_tolerances_is_a_warning_only(
    fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 270 W on the counter, 300 W sampled: an 11 % gap, above the 5 % warning, below the 25 % failure.
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0, counter_w=270.0))
    result = _measure(_config(), tmp_path, monkeypatch, ["GPU-a"])
    [row] = result.telemetry.cross_check
    assert 0.05 < row["relative_gap"] < 0.25
    assert [w for w in result.warnings if w.startswith("GPU GPU-a: energy counter (") and "differ by" in w]


def test_the_failing_bound_is_the_studys(fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0, counter_w=270.0))
    with pytest.raises(MeasurementInvalid, match=r"beyond measurement.cross_check_fail_tolerance \(8 %\)"):
        _measure(_config(cross_check_fail_tolerance=0.08), tmp_path, monkeypatch, ["GPU-a"])


def test_no_power_samples_means_no_cross_check_and_no_failure(
    fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The counter disagrees with nothing: power cannot be read, so there is no integral to compare.
    fake_nvml.configure(fake_nvml.gpu("GPU-a", power_w=300.0, counter_w=100.0, fail={"nvmlDeviceGetPowerUsage": -1}))
    result = _measure(_config(), tmp_path, monkeypatch, ["GPU-a"])
    assert result.telemetry.cross_check == []
    assert result.energy.total_j is not None and result.energy.total_j > 0
