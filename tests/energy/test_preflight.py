"""Pre-flight inside the cell: MIG refused, busy GPUs warned about or refused by policy."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.errors import MeasurementRefused
from pytest_llem.runner.measure import _preflight


def config(policy: str = "warn") -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {"measurement": {"preflight": policy, "baseline": {"spot_check_seconds": 0.3}}}
    )


def test_a_gpu_in_mig_mode_is_refused(fake_nvml: Any) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-mig", mig=True))
    with pytest.raises(MeasurementRefused, match="GPU GPU-mig is in MIG mode"):
        _preflight(config(), ["GPU-mig"], {}, 0.05)


def test_a_busy_gpu_is_a_warning_by_default(fake_nvml: Any) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-busy", power_w=300.0, utilization_pct=85, processes=[4242]))
    state, spot, problems = _preflight(config(), ["GPU-busy"], {"GPU-busy": 70.0}, 0.05)
    assert state[0]["foreign_compute_processes"] == 1
    assert spot["GPU-busy"]["power_w"] == pytest.approx(300.0)
    assert [p.split(":", 1)[1].strip().split(" ")[0] for p in problems] == ["1", "85", "idle"]


def test_a_busy_gpu_fails_the_cell_under_the_fail_policy(fake_nvml: Any) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-busy", utilization_pct=85))
    with pytest.raises(MeasurementRefused, match="pre-flight failed.*85 % utilisation"):
        _preflight(config("fail"), ["GPU-busy"], {}, 0.05)


def test_an_idle_gpu_passes(fake_nvml: Any) -> None:
    fake_nvml.configure(fake_nvml.gpu("GPU-idle", power_w=72.0, utilization_pct=0))
    _, _, problems = _preflight(config("fail"), ["GPU-idle"], {"GPU-idle": 70.0}, 0.05)
    assert problems == []
