"""A cell whose own idle spot check finds the baseline drifted re-measures it before using it.

The spot check (idle power per GPU inside the cell, after load) is the one observation of idle
power in the cell's own state. When it is further than ``drift_threshold`` from the baseline,
subtracting that baseline from this cell's window would be wrong: idle power is measured again
at once, and the cell subtracts the new baseline only when it agrees with the spot check; when
it does not (idle power moved during the cell), or measuring fails, the cell's adjusted figures
are invalid and the record says why. The cell itself never fails for this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_llem.config.experiment import ExperimentConfig, IdlePowerConfig
from pytest_llem.execution.idle_power import IDLE_SAMPLE_INTERVAL_S, SessionIdlePower
from pytest_llem.execution.study_run import StudyRun
from pytest_llem.results.measurement import CellIdentity, CellIdlePower, CellMeasurement, IdlePower
from pytest_llem.results.record import build_result
from tests.results.test_record import IDENTITY, measurement

SETTINGS = IdlePowerConfig(duration_seconds=30.0, drift_threshold=0.10)


def _baseline(uuid: str = "GPU-a", power_w: float = 70.0, std_w: float = 0.0) -> IdlePower:
    return IdlePower(
        gpu_uuid=uuid,
        power_w=power_w,
        mean_sampled_w=power_w,
        std_w=std_w,
        min_w=power_w,
        max_w=power_w,
        n_samples=300,
        duration_s=30.0,
        temperature_c=None,
        measured_at=time.time(),
        method="test",
        requested_duration_s=30.0,
        sample_interval_s=IDLE_SAMPLE_INTERVAL_S,
    )


def _session(**powers: float) -> SessionIdlePower:
    session = SessionIdlePower()
    for uuid, power in powers.items():
        session.set(_baseline(uuid.replace("_", "-"), power), "measured")
    return session


def _remeasure_to(session: SessionIdlePower, **powers: float) -> Callable[[], str | None]:
    """A re-measurement that finds these idle powers (what ensure does for stale GPUs)."""
    calls: list[None] = []

    def remeasure() -> str | None:
        calls.append(None)
        for uuid, power in powers.items():
            session.set(_baseline(uuid.replace("_", "-"), power), "measured")
        return None

    remeasure.calls = calls  # type: ignore[attr-defined]
    return remeasure


def _spot(**powers: float | None) -> dict[str, dict[str, float | None]]:
    return {uuid.replace("_", "-"): {"power_w": power} for uuid, power in powers.items()}


def test_no_drift_no_remeasurement() -> None:
    session = _session(GPU_a=70.0)
    remeasure = _remeasure_to(session, GPU_a=99.0)
    idle, warnings = session.settle_drift(["GPU-a"], None, _spot(GPU_a=72.0), SETTINGS, remeasure)
    assert remeasure.calls == []  # type: ignore[attr-defined]
    assert idle.baseline_power_w == 70.0 and idle.baseline_source == "measured" and idle.baseline_invalid_reason is None
    assert warnings == []


def test_drift_remeasures_and_the_cell_uses_the_new_baseline_when_it_agrees() -> None:
    session = _session(GPU_a=70.0)
    remeasure = _remeasure_to(session, GPU_a=89.0)
    idle, warnings = session.settle_drift(["GPU-a"], None, _spot(GPU_a=90.0), SETTINGS, remeasure)
    assert len(remeasure.calls) == 1  # type: ignore[attr-defined]
    assert idle.baseline_power_w == 89.0 and idle.baseline_invalid_reason is None
    assert idle.baseline_source == "re-measured after drift"
    assert len(warnings) == 1 and all(f in warnings[0] for f in ("GPU-a", "70.0 W", "90.0 W", "89.0 W"))
    assert session.get("GPU-a") is not None and session.reference_w() == {"GPU-a": 89.0}


def test_a_remeasured_baseline_that_still_disagrees_invalidates_the_adjusted_figures() -> None:
    session = _session(GPU_a=70.0)
    remeasure = _remeasure_to(session, GPU_a=75.0)  # idle power moved during the cell
    idle, warnings = session.settle_drift(["GPU-a"], None, _spot(GPU_a=90.0), SETTINGS, remeasure)
    assert idle.baseline_power_w == 70.0  # what the cell ran against stays on record
    reason = idle.baseline_invalid_reason
    assert reason is not None and "moved" in reason and all(f in reason for f in ("70.0 W", "90.0 W", "75.0 W"))
    assert warnings and "75.0 W" in warnings[0]
    # The re-measured baseline is the session's best idea for the next cell.
    assert session.reference_w() == {"GPU-a": 75.0}


def test_a_failed_remeasurement_invalidates_the_adjusted_figures_and_keeps_the_gpu_stale() -> None:
    session = _session(GPU_a=70.0)
    idle, warnings = session.settle_drift(["GPU-a"], None, _spot(GPU_a=90.0), SETTINGS, lambda: "the child crashed")
    assert idle.baseline_power_w == 70.0
    assert idle.baseline_invalid_reason is not None and "the child crashed" in idle.baseline_invalid_reason
    assert warnings and "the child crashed" in warnings[0]
    assert "GPU-a" in session._stale  # measured again before the next cell


def test_a_remeasurement_that_raises_never_fails_the_cell() -> None:
    session = _session(GPU_a=70.0)

    def broken() -> str | None:
        raise OSError("disk full")

    idle, _ = session.settle_drift(["GPU-a"], None, _spot(GPU_a=90.0), SETTINGS, broken)
    assert idle.baseline_invalid_reason is not None and "OSError: disk full" in idle.baseline_invalid_reason


def test_a_remeasurement_that_leaves_a_drifted_gpu_unmeasured_is_a_failure() -> None:
    session = _session(GPU_a=70.0, GPU_b=70.0)
    remeasure = _remeasure_to(session, GPU_b=70.5)  # found GPU-b only
    idle, _ = session.settle_drift(["GPU-a", "GPU-b"], None, _spot(GPU_a=90.0, GPU_b=70.0), SETTINGS, remeasure)
    assert idle.baseline_invalid_reason is not None and "GPU-a" in idle.baseline_invalid_reason


def test_every_gpu_of_the_cell_must_agree_with_the_remeasured_baseline() -> None:
    # GPU-a drifted and re-measures fine; GPU-b agreed before, but its new baseline does not.
    session = _session(GPU_a=70.0, GPU_b=70.0)
    remeasure = _remeasure_to(session, GPU_a=90.0, GPU_b=50.0)
    idle, _ = session.settle_drift(["GPU-a", "GPU-b"], None, _spot(GPU_a=90.0, GPU_b=70.0), SETTINGS, remeasure)
    assert idle.baseline_invalid_reason is not None and "GPU-b" in idle.baseline_invalid_reason


# --------------------------------------------------------------------------- the uncertainty a cell carries


def test_for_cell_uncertainty_adds_the_spread_and_the_spot_checks_drift() -> None:
    session = SessionIdlePower()
    session.set(_baseline("GPU-a", 70.0, std_w=3.0), "measured")
    session.set(_baseline("GPU-b", 80.0, std_w=4.0), "measured")
    without_spot = session.for_cell(["GPU-a", "GPU-b"], None)
    assert without_spot.baseline_uncertainty_w == pytest.approx(5.0)  # nothing measured the wander: the spread
    idle = session.for_cell(["GPU-a", "GPU-b"], None, spot=_spot(GPU_a=72.0, GPU_b=79.0))
    assert idle.baseline_std_w == pytest.approx(5.0)
    # Spot checks on every GPU measure the wander: their offset, and the baseline means' standard error.
    standard_error = math.sqrt((3.0**2 + 4.0**2) / 300)
    assert idle.baseline_uncertainty_w == pytest.approx(math.sqrt(standard_error**2 + (2.0 + 1.0) ** 2))
    partial = session.for_cell(["GPU-a", "GPU-b"], None, spot=_spot(GPU_a=72.0, GPU_b=None))
    assert partial.baseline_uncertainty_w == pytest.approx(math.sqrt(25.0 + 4.0))  # one GPU unobserved: the spread


def test_after_a_remeasurement_the_uncertainty_is_against_the_new_baseline() -> None:
    session = _session(GPU_a=70.0)
    idle, _ = session.settle_drift(["GPU-a"], None, _spot(GPU_a=90.0), SETTINGS, _remeasure_to(session, GPU_a=88.0))
    assert idle.baseline_uncertainty_w == pytest.approx(2.0)


# --------------------------------------------------------------------------- the cell's record, through StudyRun


def _cell_measurement(spot_w: float) -> CellMeasurement:
    data: dict[str, Any] = measurement(idle_spot_check={"GPU-1": {"power_w": spot_w}})
    data["energy"] = {**data["energy"], "total_j": 1500.0}  # 150 W over 10 s
    return CellMeasurement.model_validate(data)


def _study_run(study_dir: Path) -> StudyRun:
    study = SimpleNamespace(execution=SimpleNamespace(startup_timeout_seconds=30.0))
    return StudyRun(study=study, study_dir=study_dir, manifest=None)  # type: ignore[arg-type]


def _record(m: CellMeasurement, idle: CellIdlePower) -> dict[str, Any]:
    return build_result(
        experiment_id="cfg0-c0", config_hash="0" * 16, config=ExperimentConfig(model="org/model"), measurement=m,
        idle=idle, identity=CellIdentity.model_validate(IDENTITY), version="0.1.0",
    )  # fmt: skip


def _config() -> ExperimentConfig:
    return ExperimentConfig(model="org/model", measurement={"baseline": {"duration_seconds": 30.0}})


def test_a_drifted_cell_is_adjusted_with_the_baseline_measured_right_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = SessionIdlePower(gpu_uuid="GPU-1")
    session.set(_baseline("GPU-1", 70.0), "measured")
    measured: list[Path] = []

    def measure(settings: IdlePowerConfig, study_dir: Path, startup_timeout_s: float) -> str | None:
        measured.append(study_dir)
        session.set(_baseline("GPU-1", 99.0), "measured")
        return None

    monkeypatch.setattr(session, "_measure", measure)
    m = _cell_measurement(spot_w=100.0)
    idle = _study_run(tmp_path)._idle_power_of(m, _config(), session, None)
    assert measured == [tmp_path], "re-measured before the record was built"
    record = _record(m, idle)
    assert record["baseline_power_w"] == 99.0 and record["baseline_source"] == "re-measured after drift"
    assert record["energy_adjusted_j"] == pytest.approx(1500.0 - 990.0)
    assert any("70.0 W" in w and "100.0 W" in w and "99.0 W" in w for w in record["warnings"])


def test_a_cell_whose_idle_power_moved_gets_no_adjusted_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = SessionIdlePower(gpu_uuid="GPU-1")
    session.set(_baseline("GPU-1", 70.0), "measured")

    def measure(settings: IdlePowerConfig, study_dir: Path, startup_timeout_s: float) -> str | None:
        session.set(_baseline("GPU-1", 72.0), "measured")
        return None

    monkeypatch.setattr(session, "_measure", measure)
    m = _cell_measurement(spot_w=100.0)
    record = _record(m, _study_run(tmp_path)._idle_power_of(m, _config(), session, None))
    assert record["energy_adjusted_j"] is None and record["mj_per_tok_adjusted"] is None
    reason = record["energy_adjusted_invalid_reason"]
    assert reason is not None and "moved" in reason
    assert f"no baseline-adjusted figures: {reason}" in record["warnings"]
    assert record["total_energy_j"] == 1500.0  # the cell itself stands
