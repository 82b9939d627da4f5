"""Issue 14's cuts of a cell's fixed cost, end to end with real processes (stub transformers).

* ``execution.prestart_child``: the next cell's process starts ahead, its imports done, and
  takes over the cell; a changed environment or a CUDA context made by an import refuses it.
* ``execution.teardown``: "kill" does not wait for the engine's shutdown; "graceful" does.
* ``execution.compile_cache``: the child gets the cache variables, keyed by library versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.runner.compile_cache import CACHE_VARIABLES, compile_cache_for, versions_key
from tests.plugin.conftest import STUB_STUDY, write_study


def _records(root: Path) -> list[dict[str, Any]]:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    manifest = json.loads((study_dir / "manifest.json").read_text())
    entries = sorted(manifest["experiments"], key=lambda e: e["position"])
    return [json.loads((study_dir / e["result_path"]).read_text()) for e in entries if e["status"] == "completed"]


def _study(pytester: pytest.Pytester, execution: str, cycles: int = 3) -> None:
    write_study(pytester.path, "cuts.llem.yaml", STUB_STUDY + f"execution: {{n_cycles: {cycles}, {execution}}}\n")


def test_later_cells_take_a_process_started_ahead_with_its_imports_done(
    pytester: pytest.Pytester, stub_transformers: Path
) -> None:
    _study(pytester, "prestart_child: true")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
    records = _records(pytester.path)
    # The first cell's spare starts as that cell begins (before its idle checks); every later one
    # once the cell before it has left its measured window: all three are taken over.
    assert [r["cell_process"]["prestarted"] for r in records] == [True, True, True]
    ahead = []
    for record in records:
        spawn = next(p for p in record["timeline"] if p["phase"] == "spawn")
        assert spawn["parts"]["prestarted_s_before"] >= 0
        ahead.append(spawn["parts"]["ahead_of_cell_s"])
        assert record["cell_process"]["prestart_disabled_reason"] is None
    # Cells 2 and 3 took a process started before they began: in the cell before them, after its window.
    assert ahead[0] <= 0 < min(ahead[1:]), ahead
    # The cell's log holds the spare's start (its interpreter and imports) and the cell's phases.
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    log = next(study_dir.glob("002_*/child.log")).read_text()
    assert "[pytest-llem] phase: load" in log and "[pytest-llem] phase: measure" in log


def test_a_spare_is_suspended_through_another_cells_warm_up_and_window(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLEM_STUB_SPARE_PROBE", "1")  # each generate() notes the waiting spares' states
    _study(pytester, "prestart_child: true", cycles=2)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    first = next(study_dir.glob("001_*/spare-states")).read_text().split()
    last = next(study_dir.glob("002_*/spare-states")).read_text().split()
    # While the first cell warmed up and measured, the second cell's spare was stopped. Only its first
    # warm-up batch may come before pytest has heard the cell reached warm-up (on a loaded machine):
    # the spare may not be there yet, or still running; once stopped it stays stopped.
    assert "T" in first, first
    assert all(states == "T" for states in first[first.index("T"):]), first
    assert last and all(states == "-" for states in last), last  # no cell after it: no spare


def test_without_prestart_every_cell_starts_its_own_process(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    _study(pytester, "prestart_child: false", cycles=2)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    records = _records(pytester.path)
    assert [r["cell_process"]["prestarted"] for r in records] == [False, False]
    assert all("imports" in [p["phase"] for p in r["timeline"]] for r in records)


def test_a_spare_that_made_a_cuda_context_ends_spares_for_the_session(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLEM_STUB_IMPORT", "cuda")  # torch says a context exists once the engine is imported
    _study(pytester, "prestart_child: true", cycles=2)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    records = _records(pytester.path)
    # The first cell may have taken its spare before the spare said so (harmless: a cell's own
    # process may hold a context); from then on no spare waits with one.
    assert records[-1]["cell_process"]["prestarted"] is False
    assert "CUDA context" in records[-1]["cell_process"]["prestart_disabled_reason"]


def test_kill_teardown_does_not_wait_for_the_engines_shutdown(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stub's model takes 600 s to shut down, then writes "released" in the cell directory.
    monkeypatch.setenv("LLEM_STUB_RELEASE_SLEEP", "600")
    _study(pytester, "teardown: kill", cycles=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (record,) = _records(pytester.path)
    assert record["cell_process"]["teardown"] == "kill"
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    assert not list(study_dir.glob("*/released"))  # killed mid-shutdown: the result was already safe


def test_graceful_teardown_lets_the_engine_shut_down(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLEM_STUB_RELEASE_SLEEP", "1")
    _study(pytester, "teardown: graceful", cycles=1)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    assert len(list(study_dir.glob("*/released"))) == 1


def test_the_compile_cache_reaches_the_child_keyed_by_versions(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "llem-cache"))
    for variable in CACHE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    _study(pytester, "compile_cache: auto", cycles=1)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    (record,) = _records(pytester.path)
    cache = record["cell_process"]["compile_cache"]
    assert cache["mode"] == "auto"
    assert cache["directory"] == str(tmp_path / "llem-cache" / "compile" / versions_key())
    assert cache["warm"] is False


def test_compile_cache_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_CACHE_DIR", str(tmp_path / "cache"))
    auto = compile_cache_for("auto", tmp_path)
    assert auto.directory == tmp_path / "cache" / "compile" / versions_key() and auto.directory.is_dir()
    env = auto.environment({})
    assert env == {variable: str(auto.directory / sub) for variable, sub in CACHE_VARIABLES.items()}
    assert "TRITON_CACHE_DIR" not in auto.environment({"TRITON_CACHE_DIR": "/mine"})  # the user's choice stands
    (auto.directory / "triton" / "abc").mkdir(parents=True)
    assert compile_cache_for("auto", tmp_path).warm is True
    # A directory of the study's own, relative to the study file, under the same versioned key.
    shared = compile_cache_for("caches", tmp_path)
    assert shared.directory == tmp_path / "caches" / versions_key()
    cold = compile_cache_for("cold", tmp_path)
    assert cold.directory is not None and cold.directory.is_dir() and cold.warm is False
    cold.cleanup()
    assert not cold.directory.exists()
    engine = compile_cache_for("engine", tmp_path)
    assert engine.directory is None and engine.environment({}) == {}
    # A cache that cannot be made is no failure: the libraries' own defaults apply, and it is said.
    (tmp_path / "file").write_text("not a directory")
    broken = compile_cache_for(str(tmp_path / "file"), tmp_path)
    assert broken.directory is None and broken.problem and "no compile cache" in broken.problem


def test_another_version_gets_another_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    versions_key.cache_clear()
    before = versions_key()
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "999.0" if name == "torch" else real(name))
    versions_key.cache_clear()
    try:
        assert versions_key() != before
    finally:
        monkeypatch.undo()
        versions_key.cache_clear()

