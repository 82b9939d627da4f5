"""A cell's processes die with pytest, whatever kills pytest.

A cell left running after its parent died would measure on for nobody and burn the GPU under
the next job's measurement. Here pytest runs a cell whose stub engine starts a worker process
and hangs while loading; pytest is then killed by SIGKILL (nothing of pytest's own runs),
SIGTERM (what ``timeout``, CI cancellation and Slurm send), SIGHUP (a closed terminal) or SIGINT
(Ctrl-C), and neither the cell's process nor its worker may survive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled


def _alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped by whoever adopted it) is dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate: object, limit: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > limit:
            raise AssertionError(f"{what} within {limit:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_no_process_of_the_cell_outlives_pytest(
    pytester: pytest.Pytester, stub_transformers: Path, sig: signal.Signals
) -> None:
    write_study(pytester.path, "hang.llem.yaml", STUB_STUDY.replace("model: stub-ok", "model: stub-hang-worker") + "execution: {n_cycles: 1}\n")
    pytest_proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "hang.llem.yaml"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        def pid_files() -> list[Path]:
            assert pytest_proc.poll() is None, "pytest ended before the cell started"
            return list((pytester.path / "results").glob("*/*/stub-pids"))

        _wait_for(pid_files, scaled(300), "the cell's stub engine did not start its worker")
        pids = [int(p) for p in pid_files()[0].read_text().split()]
        assert all(_alive(p) for p in pids)
        pytest_proc.send_signal(sig)
        pytest_proc.wait(timeout=scaled(60))
        # The lifeline acts at once; the limit is the 5 s, scaled for a loaded machine.
        _wait_for(lambda: not any(_alive(p) for p in pids), scaled(5), f"the cell's processes {pids} survived {sig.name}")
        (manifest,) = (pytester.path / "results").glob("*/manifest.json")
        (entry,) = json.loads(manifest.read_text())["experiments"]
        if sig == signal.SIGINT:  # Ctrl-C: pytest lives to say that the cell was interrupted
            assert entry["status"] == "failed" and entry["error"].startswith("interrupted")
        else:  # pytest died with the cell running: the truth at that moment, which resume and repair read
            assert entry["status"] == "running"
    finally:
        if pytest_proc.poll() is None:
            pytest_proc.kill()
        for pid_file in (pytester.path / "results").glob("*/*/stub-pids"):
            for pid in map(int, pid_file.read_text().split()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_an_engine_that_forks_still_runs(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    # vLLM forks its engine core; multiprocessing's bootstrap closes sys.stdin in the forked
    # process. A lifeline thread blocked in sys.stdin.read() held that stream's lock across the
    # fork, and the forked process waited for it forever (found on the H200: a vLLM cell hung
    # in load). The cell must complete.
    write_study(pytester.path, "fork.llem.yaml", STUB_STUDY.replace("model: stub-ok", "model: stub-fork") + "execution: {n_cycles: 1}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=scaled(600))
    result.assert_outcomes(passed=1)
