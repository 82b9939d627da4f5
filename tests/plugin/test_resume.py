"""Nothing measured is lost: a study cut off by a killed session resumes where it stopped.

The cells use the stub ``transformers`` (tests/fakes): ``stub-hang-worker`` hangs while loading,
so pytest can be killed for real while that cell runs, after the cells before it completed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_llem.results.loader import load_results
from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled

STUDY = STUB_STUDY.replace("model: stub-ok\n", "") + "sweep:\n  model: [stub-ok, stub-hang-worker]\n  transformers.batch_size: [1, 2]\nexecution: {n_cycles: 1}\n"


def _killed_mid_study(pytester: pytest.Pytester) -> Path:
    """Run the study and SIGKILL pytest while its third cell (the first hanging one) runs."""
    write_study(pytester.path, "r.llem.yaml", STUDY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "r.llem.yaml"],
        cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        started = time.monotonic()
        while not list((pytester.path / "results").glob("*/*/stub-pids")):
            assert proc.poll() is None, "pytest ended before the hanging cell started"
            assert time.monotonic() - started < scaled(300), "the hanging cell never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=scaled(60))
    finally:
        if proc.poll() is None:
            proc.kill()
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return study_dir


def _statuses(study_dir: Path) -> dict[str, str]:
    manifest = json.loads((study_dir / "manifest.json").read_text())
    return {e["experiment_id"]: e["status"] for e in manifest["experiments"]}


def test_a_killed_study_resumes_into_its_own_directory(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_dir = _killed_mid_study(pytester)
    assert _statuses(study_dir) == {
        "stub-ok-bs1::c0": "completed",
        "stub-ok-bs2::c0": "completed",
        "stub-hang-worker-bs1::c0": "running",  # the truth at the moment of SIGKILL
        "stub-hang-worker-bs2::c0": "pending",
    }
    monkeypatch.setenv("LLEM_STUB_NO_HANG", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-resume", "r.llem.yaml", timeout=scaled(600))
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines([f"*resuming {study_dir}: 2 cell(s) completed earlier, 2 to run*"])
    assert [p for p in (pytester.path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")] == [study_dir]
    assert set(_statuses(study_dir).values()) == {"completed"}
    manifest = json.loads((study_dir / "manifest.json").read_text())
    assert manifest["summary"]["completed"] == 4 and manifest["end_time"] is not None
    (resumed,) = manifest["resumed"]
    assert "stub-hang-worker-bs1::c0: failed (interrupted while running)" in resumed["repaired"]
    # The cut-off attempt's files are kept aside, not mixed into the new attempt's directory.
    (attempt,) = (study_dir / "_study-artefacts" / "attempts").iterdir()
    assert (attempt / "stub-pids").is_file() and attempt.name.startswith("003_c0_stub-hang-worker")
    assert len(load_results(study_dir).records()) == 4
    # The table covers the whole study, not only this session's cells.
    result.stdout.fnmatch_lines(["*stub-ok-bs1*", "*stub-hang-worker-bs2*"])


def test_resume_refuses_a_changed_study_naming_the_change(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    study_dir = _killed_mid_study(pytester)
    write_study(pytester.path, "r.llem.yaml", STUDY.replace("[1, 2]", "[1, 4]"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--llem-resume={study_dir}", "r.llem.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-resume: r.llem.yaml changed since the run in*configuration 'stub-ok-bs4' is new*"])
    # Without a directory: the changed study finds nothing of its own to resume and starts anew.
    assert _statuses(study_dir)["stub-hang-worker-bs1::c0"] == "running"


def test_nothing_to_resume_starts_a_new_run(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(pytester.path, "ok.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1}\n")
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-resume", "ok.llem.yaml")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*nothing to resume for ok under*; a new run starts*"])
    # A finished study is not unfinished: the next --llem-resume starts anew too.
    second = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-resume", "ok.llem.yaml")
    second.assert_outcomes(passed=1)
    assert len([p for p in (pytester.path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2


def test_repair_rebuilds_a_truncated_manifest_from_the_records(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    study_dir = _killed_mid_study(pytester)
    manifest_path = study_dir / "manifest.json"
    manifest_path.write_text(manifest_path.read_text()[:200])  # truncated mid-write by some other tool
    from pytest_llem.results.loader import ResultsUnreadable

    # Never a silent fallback to another study: the newest study's manifest is unreadable.
    with pytest.raises(ResultsUnreadable, match="pytest_llem repair"):
        load_results(pytester.path / "results")
    repaired = subprocess.run(
        [sys.executable, "-m", "pytest_llem", "repair", str(study_dir)], check=False, capture_output=True, text=True, timeout=scaled(120)
    )
    assert repaired.returncode == 0, repaired.stderr
    assert "the manifest was unreadable or missing" in repaired.stdout
    assert _statuses(study_dir) == {
        "stub-ok-bs1::c0": "completed",
        "stub-ok-bs2::c0": "completed",
        "stub-hang-worker-bs1::c0": "failed",
        "stub-hang-worker-bs2::c0": "pending",
    }
    assert list(study_dir.glob("manifest.json.corrupt-*")), "the corrupt manifest is kept for inspection"
    assert len(load_results(study_dir).records()) == 2


def test_a_study_run_in_part_with_k_resumes_the_rest(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(pytester.path, "k.llem.yaml", STUB_STUDY + "sweep:\n  transformers.batch_size: [1, 2]\nexecution: {n_cycles: 1}\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "k.llem.yaml", "-k", "bs1").assert_outcomes(passed=1, deselected=1)
    rest = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-resume", "k.llem.yaml")
    rest.assert_outcomes(passed=1, deselected=1)
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert _statuses(study_dir) == {"bs1::c0": "completed", "bs2::c0": "completed"}
