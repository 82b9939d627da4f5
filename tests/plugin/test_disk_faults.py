"""A results disk that is read-only, or fills up or turns read-only mid-study.

Real faults on a real file system: each test mounts a small tmpfs (root and mount permission
needed; skipped otherwise) and the inner run's conftest makes it full (a filler file) or
read-only (a read-only bind mount over it) at a chosen moment of the study. What must hold: one
clear message naming the path, the OS error and what was kept; the cell hit fails, the session
stops without an INTERNALERROR; nothing measured is lost; the manifest is truthful or
repairable, and ``--llem-resume`` completes the study once the disk takes writes again.

The cells use the stub ``transformers`` (tests/fakes): each costs a second or two.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_llem.results.loader import load_results
from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled

STUDY = STUB_STUDY + "sweep:\n  transformers.batch_size: [1, 2, 4]\nexecution: {n_cycles: 1}\n"

#: The inner run's conftest: the fault named by LLEM_TEST_FAULT, at its moment.
FAULTS = '''
"""LLEM_TEST_FAULT is "<kind> <moment> <where>" (or "none").

kind: full (the disk fills up), readonly (a read-only bind mount over it), or recorded (it fills
up leaving room for a cell's two record files but not for the manifest's update).
moment: after (the cell whose node id ends in <where> has finished), started (the <where>-th
cell's process is about to start) or measured (the <where>-th cell was measured, its record not
yet written): the session's idle-baseline object is asked at those two moments.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.execution.idle_power import SessionIdlePower

DISK = Path(os.environ["LLEM_TEST_DISK"])
KIND, MOMENT, WHERE = (os.environ["LLEM_TEST_FAULT"].split() + ["", ""])[:3]
FILLER = DISK / "filler"


def _pages(path: Path, page: int) -> int:
    return -(-path.stat().st_size // page)


def fill(leave_pages: int = 0) -> None:
    stat = os.statvfs(DISK)
    with open(FILLER, "wb", buffering=0) as handle:
        try:
            handle.write(b"\\0" * max(0, stat.f_bavail - leave_pages) * stat.f_frsize)
            while not leave_pages:
                handle.write(b"\\0" * stat.f_frsize)
        except OSError:
            pass


def fault() -> None:
    if KIND == "full":
        fill()
    elif KIND == "readonly":
        subprocess.run(["mount", "--bind", str(DISK), str(DISK)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(DISK)], check=True)
    elif KIND == "recorded":
        page = os.statvfs(DISK).f_frsize
        (first,) = DISK.glob("res/*/001_*")
        (manifest,) = DISK.glob("res/*/manifest.json")
        room = _pages(first / "effective_config.json", page) + _pages(first / "result.json", page) + 1
        assert _pages(manifest, page) > 2, "the manifest must need more room than the records leave"
        fill(leave_pages=room)
    else:
        raise ValueError(KIND)


def pytest_runtest_logfinish(nodeid: str) -> None:
    if MOMENT == "after" and nodeid.endswith(WHERE):
        fault()


class FaultyDisk(SessionIdlePower):
    calls = {"started": 0, "measured": 0}

    def _count(self, moment: str) -> None:
        self.calls[moment] += 1
        if MOMENT == moment and self.calls[moment] == int(WHERE):
            fault()

    def reference_w(self) -> dict[str, float]:
        self._count("started")
        return super().reference_w()

    def settle_drift(self, *args: Any, **kwargs: Any) -> Any:
        found = super().settle_drift(*args, **kwargs)
        self._count("measured")
        return found


@pytest.fixture(scope="session")
def llem_idle_baseline() -> SessionIdlePower:
    return FaultyDisk()
'''


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of its own (the study needs about 150 KiB), unmounted at teardown."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8): the disk faults are made on a real tmpfs")
    path = tmp_path / "disk"
    path.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the disk faults need mount permission")
    try:
        yield path
    finally:
        for _ in range(3):  # a read-only bind mount may sit on the tmpfs
            if not os.path.ismount(path):
                break
            subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def study(pytester: pytest.Pytester, stub_transformers: Path, disk: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_study(pytester.path, "s.llem.yaml", STUDY)
    pytester.makeconftest(FAULTS)
    monkeypatch.setenv("LLEM_TEST_DISK", str(disk))
    monkeypatch.setenv("LLEM_TEST_FAULT", "none")  # so that monkeypatch restores what _run sets
    return pytester.path / "s.llem.yaml"


def _run(pytester: pytest.Pytester, disk: Path, fault: str, *args: str) -> pytest.RunResult:
    os.environ["LLEM_TEST_FAULT"] = fault  # undone by the study fixture's monkeypatch
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--llem-results-dir", str(disk / "res"), *args, "s.llem.yaml", timeout=scaled(300)
    )  # fmt: skip


def _study_dir(disk: Path) -> Path:
    (study_dir,) = [p for p in (disk / "res").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return study_dir


def _statuses(study_dir: Path) -> dict[str, str]:
    manifest = json.loads((study_dir / "manifest.json").read_text())
    return {e["experiment_id"]: e["status"] for e in manifest["experiments"]}


def _no_internal_error(result: pytest.RunResult) -> None:
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output


def _stopped_after_bs2(result: pytest.RunResult) -> None:
    """bs1 passed, bs2 failed, bs4 never ran; pytest ended as a failed run, with its summary and ours."""
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*! llem: stopped after s.llem.yaml::bs2::c0: its results could not be written under*"])
    result.stdout.fnmatch_lines(["*llem: s ---*", "*bs1::c0  completed*", "*llem: results not written*"])
    _no_internal_error(result)


def _resume_completes(pytester: pytest.Pytester, disk: Path, study_dir: Path, done_before: int) -> pytest.RunResult:
    resumed = _run(pytester, disk, "none", "--llem-resume")
    resumed.assert_outcomes(passed=3 - done_before, deselected=done_before)
    resumed.stdout.fnmatch_lines([f"*resuming {study_dir}: {done_before} cell(s) completed earlier*"])
    assert _study_dir(disk) == study_dir  # into the same directory
    assert set(_statuses(study_dir).values()) == {"completed"}
    assert sorted(r["experiment_id"] for r in load_results(study_dir).records()) == ["bs1::c0", "bs2::c0", "bs4::c0"]
    return resumed


def test_a_read_only_results_disk_is_one_usage_error(pytester: pytest.Pytester, study: Path, disk: Path) -> None:
    assert _mount("-o", "remount,ro", str(disk)).returncode == 0
    result = _run(pytester, disk, "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            (
                f"ERROR: cannot create the study directory for s.llem.yaml under {disk / 'res'}: [[]Errno 30[]] Read-only"
                " file system*; choose another with --llem-results-dir, or make it writable"
            )
        ]
    )
    _no_internal_error(result)
    assert list(disk.iterdir()) == []


def test_a_disk_full_between_cells_stops_the_study_and_resume_completes_it(
    pytester: pytest.Pytester, study: Path, disk: Path
) -> None:
    result = _run(pytester, disk, "full after bs1::c0")
    _stopped_after_bs2(result)
    study_dir = _study_dir(disk)
    result.stdout.fnmatch_lines(
        [
            (
                f"ResultsWriteError: cannot write {study_dir}/manifest.json as the cell was about to start: [[]Errno 28[]]"
                " No space left on device. Nothing of this cell was measured, so nothing is lost. To continue: free space"
                f" on its disk, then `pytest --llem-resume={study_dir} {study}` runs the cells that did not complete*"
            )
        ]
    )
    result.stdout.fnmatch_lines(["*bs2::c0: failed in this session, but the manifest on disk still says pending*"])
    # On disk: the completed cell's record intact, the manifest's last state true.
    assert _statuses(study_dir) == {"bs1::c0": "completed", "bs2::c0": "pending", "bs4::c0": "pending"}
    assert [r["experiment_id"] for r in load_results(study_dir).records()] == ["bs1::c0"]
    # Resuming while the disk is still full: one usage error, and no new study directory.
    still_full = _run(pytester, disk, "none", "--llem-resume")
    assert still_full.ret == pytest.ExitCode.USAGE_ERROR
    still_full.stderr.fnmatch_lines(
        [f"ERROR: cannot resume the study in {study_dir}: [[]Errno 28[]] No space left on device*; free space there, then run again"]
    )
    _no_internal_error(still_full)
    assert _study_dir(disk) == study_dir
    (disk / "filler").unlink()
    _resume_completes(pytester, disk, study_dir, done_before=1)


def test_a_disk_turned_read_only_after_a_measurement_keeps_its_figures_then_repair_and_resume(
    pytester: pytest.Pytester, study: Path, disk: Path
) -> None:
    result = _run(pytester, disk, "readonly measured 2")
    _stopped_after_bs2(result)
    study_dir = _study_dir(disk)
    (cell_dir,) = study_dir.glob("002_*")
    result.stdout.fnmatch_lines(
        [
            (
                f"ResultsWriteError: cannot write {cell_dir}/effective_config.json after the cell was measured: [[]Errno 30[]]"
                " Read-only file system. The cell's figures, which are not on disk: energy not measured, 16 tokens,"
                " mJ/tok -, * tok/s, * s window. It did not complete: resuming measures it again. To continue: make it"
                " writable again, then `pytest --llem-resume=*"
            )
        ]
    )
    assert _statuses(study_dir)["bs2::c0"] == "running"  # the disk took no word of the failure
    assert not (cell_dir / "result.json").exists()
    still_read_only = _run(pytester, disk, "none", "--llem-resume")
    assert still_read_only.ret == pytest.ExitCode.USAGE_ERROR
    still_read_only.stderr.fnmatch_lines(
        ["ERROR: --llem-resume: cannot take up the earlier run: [[]Errno 30[]] Read-only file system: *in-use.lock*"]
    )
    _no_internal_error(still_read_only)
    assert _mount("-o", "remount,bind,rw", str(disk)).returncode == 0  # writable again
    repaired = subprocess.run(
        [sys.executable, "-m", "pytest_llem", "repair", str(study_dir)], capture_output=True, text=True, timeout=scaled(120), check=False
    )  # fmt: skip
    assert repaired.returncode == 0, repaired.stderr
    assert "bs2::c0: failed (interrupted while running)" in repaired.stdout
    assert _statuses(study_dir) == {"bs1::c0": "completed", "bs2::c0": "failed", "bs4::c0": "pending"}
    _resume_completes(pytester, disk, study_dir, done_before=1)
    (attempt,) = (study_dir / "_study-artefacts" / "attempts").iterdir()  # the cut-off attempt, kept aside
    assert attempt.name.startswith("002_c0_")


def test_a_record_written_when_the_manifest_could_not_be_counts_as_completed_on_resume(
    pytester: pytest.Pytester, study: Path, disk: Path
) -> None:
    result = _run(pytester, disk, "recorded measured 2")
    _stopped_after_bs2(result)
    study_dir = _study_dir(disk)
    (cell_dir,) = study_dir.glob("002_*")
    result.stdout.fnmatch_lines(
        [
            (
                f"ResultsWriteError: cannot write {study_dir}/manifest.json to say that the cell completed: [[]Errno 28[]]"
                f" No space left on device. The cell was measured and its record is on disk ({cell_dir}/result.json):"
                " energy not measured, 16 tokens, *. It counts as failed in this session, but repair and --llem-resume"
                " find it completed from its result.json, so resuming does not measure it again.*"
            )
        ]
    )
    assert _statuses(study_dir)["bs2::c0"] == "running"
    assert json.loads((cell_dir / "result.json").read_text())["experiment_id"] == "bs2::c0"
    (disk / "filler").unlink()
    _resume_completes(pytester, disk, study_dir, done_before=2)  # bs2 is not measured again
    assert not (study_dir / "_study-artefacts" / "attempts").exists()


def test_a_disk_full_as_the_cells_process_starts_names_both_failures(
    pytester: pytest.Pytester, study: Path, disk: Path
) -> None:
    result = _run(pytester, disk, "full started 2")
    _stopped_after_bs2(result)
    study_dir = _study_dir(disk)
    # The child cannot write its log; the parent cannot record that: the disk is named first.
    result.stdout.fnmatch_lines(
        [
            (
                f"ResultsWriteError: cannot write {study_dir}/manifest.json to record the cell's failure: [[]Errno 28[]]"
                " No space left on device. The cell itself failed: CellCrashed: the child process exited*"
            )
        ]
    )
    assert _statuses(study_dir)["bs2::c0"] == "running"


def test_a_refused_resume_starts_no_new_study_directory(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    """pytest calls pytest_collection_finish after a usage error in collection: no study may start then.

    (Else the refused run left a fresh, never-run study directory, which the next
    ``--llem-resume`` took for the newest unfinished run.) No disk fault needed.
    """
    write_study(pytester.path, "s.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1}\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "s.llem.yaml").assert_outcomes(passed=1)
    (study_dir,) = (pytester.path / "results").iterdir()
    write_study(pytester.path, "s.llem.yaml", STUB_STUDY.replace("batch_size: 2", "batch_size: 4") + "execution: {n_cycles: 1}\n")
    refused = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--llem-resume={study_dir}", "s.llem.yaml")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--llem-resume: s.llem.yaml changed since the run in*"])
    assert list((pytester.path / "results").iterdir()) == [study_dir]
