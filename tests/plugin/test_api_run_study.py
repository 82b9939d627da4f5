"""run_study end to end: a real pytest run in a subprocess, on the stub transformers engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llem import CellProgress, run_study
from pytest_llem.errors import StudyFailedToRun
from tests.plugin.conftest import STUB_STUDY, write_study


def test_run_study_returns_the_study_it_ran(tmp_path: Path, stub_transformers: Path) -> None:
    study = write_study(tmp_path, "api.llem.yaml", STUB_STUDY + "execution: {n_cycles: 2}\n")
    results = tmp_path / "results"
    heard: list[CellProgress] = []
    earlier = run_study(study, results_dir=results, env=None, progress=heard.append)
    result = run_study(study, results_dir=results, env=None)  # a second run: its own directory is loaded
    # The progress callback heard each cell move through its phases, in order.
    first = [(e.phase, e.detail) for e in heard if e.nodeid.endswith("::c0")]
    assert [phase for phase, _ in first][:3] == ["ready", "load", "warmup"] and first[-1] == ("report", None)
    assert result.study_dir != earlier.study_dir and result.study_dir.parent == results
    assert result.study_name == "api"
    assert [r["experiment_id"] for r in result.experiments] == ["stub-ok-transformers::c0", "stub-ok-transformers::c1"]
    assert all(r["total_tokens"] > 0 for r in result.experiments)
    assert result.summary["completed"] == 2 and result.failed_experiments == []
    assert result.measurement_protocol["n_cycles"] == 2
    assert all(p.is_file() for p in result.result_files)
    assert [row["cycle"] for row in result.to_rows()] == [0, 1]


def test_failed_cells_are_in_the_result(tmp_path: Path, stub_transformers: Path) -> None:
    study = write_study(
        tmp_path, "mixed.llem.yaml", STUB_STUDY + "sweep:\n  model: [stub-ok, stub-raise]\nexecution: {n_cycles: 1}\n"
    )
    result = run_study(study, results_dir=tmp_path / "results", pytest_args=["-q"])
    assert [r["model_name"] for r in result.experiments] == ["stub-ok"]
    (failure,) = result.failed_experiments
    assert failure["config_id"] == "stub-raise"
    assert "RuntimeError: stub model refuses to load" in failure["error"]


def test_a_run_without_a_study_directory_raises_with_pytest_output(tmp_path: Path) -> None:
    study = write_study(tmp_path, "broken.llem.yaml", "model: llem-tiny\nno_such_key: 1\n")
    with pytest.raises(StudyFailedToRun) as info:
        run_study(study, results_dir=tmp_path / "results")
    message = str(info.value)
    assert "produced no study directory" in message and "no_such_key" in message
    assert info.value.returncode not in (None, 0)


def test_run_study_resumes_and_returns_the_whole_study(tmp_path: Path, stub_transformers: Path) -> None:
    study = write_study(tmp_path, "part.llem.yaml", STUB_STUDY + "sweep:\n  transformers.batch_size: [1, 2]\nexecution: {n_cycles: 1}\n")
    results = tmp_path / "results"
    first = run_study(study, results_dir=results, pytest_args=["-k", "bs1"])
    assert [r["config_id"] for r in first.experiments] == ["bs1"]
    whole = run_study(study, results_dir=results, resume=True)
    assert whole.study_dir == first.study_dir
    assert [r["config_id"] for r in whole.experiments] == ["bs1", "bs2"]
