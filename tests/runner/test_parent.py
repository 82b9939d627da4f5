"""The parent's side of the child boundary: a measurement of the wrong shape fails the cell, cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llem.errors import CellCrashed
from pytest_llem.results.measurement import CellMeasurement
from pytest_llem.runner.envelope import IdleMeasurement, IdleTask
from pytest_llem.runner.parent import run_in_child
from tests.timing import scaled


def test_a_measurement_of_the_wrong_shape_is_a_cell_failure(tmp_path: Path) -> None:
    # A real child runs the idle task (no GPU here: an empty measurement) and reports it; read as
    # a cell's measurement it does not fit, which must be a CellError, not a bare pydantic error.
    task = IdleTask(duration_s=1.0, interval_s=0.1)
    limit = scaled(600)  # only stops a child that hangs: generous, scaled to the machine's load
    report = run_in_child(task, tmp_path / "ok", IdleMeasurement, timeout_s=limit, startup_timeout_s=limit)
    assert report.measurement.idle_power == []
    with pytest.raises(CellCrashed, match="does not match CellMeasurement") as info:
        run_in_child(task, tmp_path / "bad", CellMeasurement, timeout_s=limit, startup_timeout_s=limit)
    assert info.value.phases == ["idle"]
