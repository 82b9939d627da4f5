"""Where a study's time went: each cell's timeline in its record and the manifest, the study's efficiency.

Real studies on the stub ``transformers`` (CPU, a child process per cell). Every check is on
structure and consistency (phases in order, tiling the cell's time, the window phase being the
record's window), never on speed; the tolerances only absorb a pipe's latency on a busy machine.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.cli import main as cli_main
from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled

#: A cell's phases on a CPU machine, in order (no GPU: no pre-flight), up to its record.
RECORD_PHASES = [
    "gap", "idle_baseline", "manifest_update", "spawn", "imports", "load", "warmup", "window", "report",
    "teardown", "idle_drift",
]  # fmt: skip
#: What a cell that fails while loading spent its time on.
FAILED_PHASES = ["gap", "idle_baseline", "manifest_update", "spawn", "imports", "load", "teardown"]


def _tiles(timeline: list[dict[str, Any]], slack: float) -> None:
    """The phases follow each other without holes or overlaps, each of a length >= 0."""
    for phase in timeline:
        assert phase["seconds"] >= 0 and phase["start_s"] >= 0, phase
    for before, after in itertools.pairwise(timeline):
        assert after["start_s"] == pytest.approx(before["start_s"] + before["seconds"], abs=slack)


def test_records_and_manifest_say_where_each_cells_time_went(
    pytester: pytest.Pytester, stub_transformers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = STUB_STUDY.replace("model: stub-ok\n", "") + (
        "sweep:\n  model: [stub-ok, stub-raise]\nexecution: {n_cycles: 2, experiment_gap_seconds: 0.2}\n"
    )
    write_study(pytester.path, "spent.llem.yaml", body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*llem: spent: where the time went*", "phase*seconds*of wall", "study efficiency *%*"])

    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    manifest = json.loads((study_dir / "manifest.json").read_text(encoding="utf-8"))
    slack = scaled(1)  # a pipe's latency on a loaded machine, generously
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(study_dir.glob("*/result.json"))]
    assert len(records) == 2
    for record in records:
        timeline = record["timeline"]
        assert [p["phase"] for p in timeline] == RECORD_PHASES
        _tiles(timeline, 1e-6)
        assert record["timeline_total_s"] == pytest.approx(sum(p["seconds"] for p in timeline))
        by_name = {p["phase"]: p for p in timeline}
        # The child's part (spawn to teardown) is the cell's wall time as the parent measured it.
        child_part = sum(p["seconds"] for p in timeline[RECORD_PHASES.index("spawn") : RECORD_PHASES.index("idle_drift")])
        assert child_part == pytest.approx(record["cell_wall_time_s"], abs=slack)
        assert by_name["window"]["seconds"] == pytest.approx(record["total_inference_time_sec"], abs=slack)
        assert set(by_name["load"]["parts"]) == {"prepare", "engine_load"}
        assert sum(by_name["load"]["parts"].values()) == pytest.approx(record["load_time_s"])
        assert sum(by_name["load"]["parts"].values()) <= by_name["load"]["seconds"] + slack
    # The second cell of the run order paused for the study's gap first.
    assert {p["phase"]: p["seconds"] for p in records[1]["timeline"]}["gap"] >= 0.2

    entries = {e["experiment_id"]: e for e in manifest["experiments"]}
    for record in records:
        entry = entries[record["experiment_id"]]
        assert [p["phase"] for p in entry["timeline"]] == [*RECORD_PHASES, "result_write"]
        _tiles(entry["timeline"], 1e-6)
        # The record's timeline, less its last phase (which ran on after the record was built).
        assert entry["timeline"][: len(RECORD_PHASES) - 1] == record["timeline"][:-1]
        assert entry["total_inference_time_sec"] == record["total_inference_time_sec"]
    failed = [e for e in manifest["experiments"] if e["status"] == "failed"]
    assert len(failed) == 2
    for entry in failed:
        assert [p["phase"] for p in entry["timeline"]] == FAILED_PHASES
        _tiles(entry["timeline"], 1e-6)

    summary = manifest["summary"]
    windows = sum(r["total_inference_time_sec"] for r in records)
    assert summary["measured_window_s"] == pytest.approx(windows)
    assert summary["study_efficiency"] == pytest.approx(windows / summary["total_wall_time_s"])
    assert 0 < summary["study_efficiency"] < 1
    # One session ran the cells one after another: their timelines fit in the study's wall time.
    spent = sum(p["seconds"] for e in manifest["experiments"] for p in e["timeline"])
    assert spent <= summary["total_wall_time_s"] + 1e-6

    # `show` prints the same breakdown from disk.
    printed = result.stdout.str().splitlines()
    capsys.readouterr()
    assert cli_main(["show", str(study_dir)]) == 0
    shown = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(shown) if "where the time went" in line)
    section = shown[start + 1 : start + 1 + next(i for i, line in enumerate(shown[start:]) if "study efficiency" in line)]
    assert section and all(line in printed for line in section)
