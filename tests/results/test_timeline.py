"""A cell's timeline (runner/parent.py's PhaseClock), the study's efficiency (the manifest's summary)
and the terminal's "where the time went" (report/terminal.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.report.terminal import render_time_breakdown
from pytest_llem.results.loader import StudyResult
from pytest_llem.results.manifest import Manifest
from pytest_llem.results.repair import rebuild
from pytest_llem.runner.envelope import IdleMeasurement, IdleTask
from pytest_llem.runner.parent import PhaseClock, run_in_child
from tests.timing import scaled

HEADER = {"schema_version": "3.0", "study_name": "demo", "study_design_hash": "feedfacecafebeef"}


def _experiments(n: int) -> list[dict[str, Any]]:
    return [
        {"experiment_id": f"c{i}", "config_id": "c", "cycle": i, "position": i + 1, "measurement_config_hash": "0" * 16}
        for i in range(n)
    ]


def test_the_phases_tile_the_cells_time_in_the_order_they_began() -> None:
    clock = PhaseClock()
    clock.origin = t0 = time.monotonic() - 10.0  # the cell began ten seconds ago
    clock.mark("gap", at=t0)
    clock.mark("spawn", at=t0 + 1.0)
    clock.mark("load", at=t0 + 1.5)
    clock.mark("load", at=t0 + 2.0)  # heard again while it runs: the same phase goes on
    clock.mark("measure", at=t0 + 4.0)  # the child's "measure" is the measured window
    clock.mark("teardown", at=t0 + 6.0)
    phases = clock.phases({"load": {"prepare": 1.0, "engine_load": 1.25}})
    assert [p.phase for p in phases] == ["gap", "spawn", "load", "window", "teardown"]
    assert [p.start_s for p in phases] == pytest.approx([0.0, 1.0, 1.5, 4.0, 6.0])
    assert [p.seconds for p in phases[:-1]] == pytest.approx([1.0, 0.5, 2.5, 2.0])
    assert phases[-1].seconds == pytest.approx(4.0, abs=scaled(1))  # the last runs until now
    assert phases[2].parts == {"prepare": 1.0, "engine_load": 1.25}
    assert all(p.parts is None for p in phases if p.phase != "load")
    assert PhaseClock().phases() == []


def test_a_real_child_is_timed_from_spawn_to_its_process_group_gone(tmp_path: Path) -> None:
    clock = PhaseClock()
    limit = scaled(600)  # only stops a child that hangs
    report = run_in_child(
        IdleTask(duration_s=0.2, interval_s=0.1), tmp_path / "idle", IdleMeasurement,
        timeout_s=limit, startup_timeout_s=limit, clock=clock,
    )  # fmt: skip
    phases = clock.phases()
    assert [p.phase for p in phases] == ["spawn", "imports", "idle", "teardown"]
    assert all(p.seconds >= 0 for p in phases)
    assert {p.phase: p.seconds for p in phases}["idle"] >= 0.2  # the child sampled at least that long
    assert sum(p.seconds for p in phases) == pytest.approx(report.wall_time_s, abs=scaled(1))


def test_study_efficiency_is_the_completed_windows_over_the_wall_time_once_it_is_known(tmp_path: Path) -> None:
    m = Manifest(tmp_path, HEADER, _experiments(3))
    m.update("c0", "completed", result_path="a/result.json", total_inference_time_sec=2.0)
    m.update("c1", "completed", result_path="b/result.json", total_inference_time_sec=3.0)
    m.update("c2", "failed", error="boom", total_inference_time_sec=50.0)  # a failed cell has no window
    assert "study_efficiency" not in m.data["summary"]  # no wall time yet: nothing to divide by
    m.finish(20.0)
    summary = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))["summary"]
    assert summary["total_wall_time_s"] == pytest.approx(20.0)
    assert summary["measured_window_s"] == pytest.approx(5.0)
    assert summary["study_efficiency"] == pytest.approx(0.25)


def test_a_rebuilt_manifest_takes_each_window_from_its_record(tmp_path: Path) -> None:
    """Repair finds a completed cell from its result.json: its window must count like any other."""
    cell = tmp_path / "001_c0_x"
    cell.mkdir()
    record = {"experiment_id": "c0", "position": 1, "total_inference_time_sec": 4.0, "total_energy_j": None}
    (cell / "result.json").write_text(json.dumps(record), encoding="utf-8")
    previous = {"experiments": [{**e, "status": "running"} for e in _experiments(1)], "summary": {"total_wall_time_s": 8.0}}
    summary = rebuild(tmp_path, previous).manifest["summary"]
    assert summary["measured_window_s"] == pytest.approx(4.0)
    assert summary["study_efficiency"] == pytest.approx(0.5)


def _study(entries: list[dict[str, Any]], summary: dict[str, Any]) -> StudyResult:
    return StudyResult(
        experiments=[], study_name="demo", study_design_hash=None, measurement_protocol={}, result_files=[],
        summary=summary, skipped_experiments=[], study_dir=Path("/results/demo"), manifest={"experiments": entries},
    )  # fmt: skip


def _timeline(**seconds: float) -> list[dict[str, Any]]:
    out, start = [], 0.0
    for name, value in seconds.items():
        out.append({"phase": name, "start_s": start, "seconds": value})
        start += value
    return out


def test_the_breakdown_sums_each_phase_over_the_cells_and_shares_it_of_the_wall_time() -> None:
    entries: list[dict[str, Any]] = [
        {"experiment_id": "a", "status": "completed", "timeline": _timeline(gap=0.0, load=3.0, window=2.0)},
        {"experiment_id": "b", "status": "failed", "timeline": _timeline(gap=1.0, load=1.0)},  # its time was spent too
        {"experiment_id": "c", "status": "pending"},
    ]
    lines = render_time_breakdown(_study(entries, {"total_wall_time_s": 10.0, "measured_window_s": 2.0, "study_efficiency": 0.2}))
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert rows["load"] == ["4.00", "40.0%"]
    assert rows["window"] == ["2.00", "20.0%"]
    assert rows["gap"] == ["1.00", "10.0%"]
    assert rows["outside"] == ["cells", "3.00", "30.0%"]  # what no cell's timeline holds
    assert lines[-1].startswith("study efficiency 20.0%: measured windows 2.00 s of 10.00 s wall time (2 cells)")


def test_the_breakdown_says_when_the_wall_time_is_missing_and_is_absent_without_timelines() -> None:
    entries = [{"experiment_id": "a", "status": "completed", "timeline": _timeline(load=3.0, window=2.0)}]
    lines = render_time_breakdown(_study(entries, {"total_wall_time_s": None}))
    assert lines[0].split() == ["phase", "seconds"]
    assert "wall time is not recorded" in lines[-1]
    assert render_time_breakdown(_study([{"experiment_id": "a", "status": "completed"}], {})) == []
