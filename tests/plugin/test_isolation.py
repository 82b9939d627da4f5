"""Each cell runs in its own process: a crash, a hang or an exception fails that cell only.

The cells import a stub ``transformers`` (a fake at the heavy-dependency boundary, chosen by
model name) so that a segfault, a hang or a death during start-up can be provoked for real in
the child process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled


def manifest_of(root: Path) -> dict:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    return json.loads((study_dir / "manifest.json").read_text())


def test_a_crashing_cell_fails_alone_and_the_session_goes_on(
    pytester: pytest.Pytester, stub_transformers: Path
) -> None:
    write_study(
        pytester.path,
        "crash.llem.yaml",
        STUB_STUDY + "sweep:\n  model: [stub-ok, stub-segfault, stub-raise, stub-exit, stub-oom]\nexecution: {n_cycles: 1}\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=4)
    out = result.stdout.str()
    assert "CellCrashed: the child process killed by signal SIGSEGV during load" in out
    assert "CellCrashed: RuntimeError: stub model refuses to load" in out
    assert "--- traceback in the cell's process ---" in out
    assert "CellCrashed: the child process exited with code 7 during load" in out
    assert "OutOfMemoryError: CUDA out of memory" in out
    assert "Captured log of the cell's process (tail)" in out
    statuses = {e["config_id"]: e["status"] for e in manifest_of(pytester.path)["experiments"]}
    assert statuses == {
        "stub-ok": "completed",
        "stub-segfault": "failed",
        "stub-raise": "failed",
        "stub-exit": "failed",
        "stub-oom": "failed",
    }
    manifest = manifest_of(pytester.path)
    assert manifest["summary"]["completed"] == 1 and manifest["summary"]["failed"] == 4
    (ok,) = [e for e in manifest["experiments"] if e["status"] == "completed"]
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    record = json.loads((study_dir / ok["result_path"]).read_text())
    # 4 requests a pass of 4 tokens each: one TTFT per request and 3 gaps after it.
    assert record["total_requests"] % 4 == 0 and record["total_tokens"] == 4 * record["total_requests"]
    assert record["ttft_s"]["median"] > 0 and record["itl_s"]["min"] >= 0
    assert record["request_latency_s"]["max"] <= record["batch_latency_s"]["max"]
    assert manifest["end_time"] is not None


def test_a_hanging_cell_is_killed_at_its_timeout(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    # The limit also bounds the healthy cell's whole run, start-up (importing torch) included:
    # generous and scaled to the machine's load, so a busy machine does not fail that cell.
    limit = scaled(20)
    write_study(
        pytester.path,
        "hang.llem.yaml",
        STUB_STUDY + f"sweep:\n  model: [stub-hang, stub-ok]\nexecution: {{n_cycles: 1, experiment_timeout_seconds: {limit:g}}}\n",
    )
    # The stub hangs for an hour: an inner run still going long after the limit has not killed it.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=limit + scaled(600))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*CellTimeout: the cell ran past its time limit of {limit:g} s (last phase: load)*"])
    statuses = [e["status"] for e in manifest_of(pytester.path)["experiments"]]
    assert statuses == ["failed", "completed"]


def test_the_command_line_timeout_overrides_the_study(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child never finishes start-up, so the outcome does not depend on how fast the machine
    # is: the start-up limit is min(startup_timeout_seconds, the cell's limit), 3 s only if the
    # command line's limit replaced the study's hour.
    monkeypatch.setenv("LLEM_STUB_IMPORT", "hang")
    write_study(
        pytester.path,
        "hang.llem.yaml",
        STUB_STUDY + "execution: {n_cycles: 1, experiment_timeout_seconds: 3600, startup_timeout_seconds: 3600}\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-timeout", "3", timeout=scaled(600))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CellStartupFailed: the child did not finish start-up*within 3 s*"])


def test_a_child_dying_during_startup_fails_fast(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLEM_STUB_IMPORT", "exit")
    startup_limit = scaled(600)
    write_study(
        pytester.path, "dies.llem.yaml", STUB_STUDY + f"execution: {{n_cycles: 2, startup_timeout_seconds: {startup_limit:g}}}\n"
    )
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    elapsed = time.monotonic() - started
    result.assert_outcomes(failed=2)
    # The message is the outcome: the child's exit was seen, not the start-up limit's expiry.
    result.stdout.fnmatch_lines(["*CellStartupFailed: the child process exited with code 3 during start-up*"])
    assert elapsed < startup_limit, "a dead child must be noticed at once, not at the start-up limit"


def test_a_child_stalling_during_startup_hits_the_startup_limit(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child never says it is ready, so a short limit is safe on any machine: nothing has to
    # finish within it.
    monkeypatch.setenv("LLEM_STUB_IMPORT", "hang")
    write_study(pytester.path, "stall.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1, startup_timeout_seconds: 3}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=scaled(600))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CellStartupFailed: the child did not finish start-up*within 3 s*"])


def test_last_failed_reruns_only_the_failed_cell(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(
        pytester.path,
        "lf.llem.yaml",
        STUB_STUDY + "sweep:\n  model: [stub-ok, stub-raise]\nexecution: {n_cycles: 1}\n",
    )
    first = pytester.runpytest_subprocess()
    first.assert_outcomes(passed=1, failed=1)
    second = pytester.runpytest_subprocess("--lf")
    second.assert_outcomes(failed=1, deselected=1)
    second.stdout.fnmatch_lines(["*lf.llem.yaml::stub-raise::c0*"])
