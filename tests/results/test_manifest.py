"""results/manifest.py: a truthful, atomically rewritten checkpoint of the study."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.results.manifest import MANIFEST_NAME, Manifest
from tests.timing import scaled

HEADER = {"schema_version": "3.0", "study_name": "demo", "study_design_hash": "feedfacecafebeef"}


def _experiments(n_configs: int = 2, n_cycles: int = 2) -> list[dict[str, Any]]:
    out = []
    position = 1
    for cycle in range(n_cycles):
        for config in range(n_configs):
            out.append(
                {
                    "experiment_id": f"cfg{config}-c{cycle}",
                    "config_id": f"cfg{config}",
                    "cycle": cycle,
                    "position": position,
                    "measurement_config_hash": f"{config:016x}",
                    "config": {"model": "m", "engine": "transformers", "batch_size": config + 1},
                }
            )
            position += 1
    return out


def _read(study_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((study_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    return data


def _entry(data: dict[str, Any], experiment_id: str) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [e for e in data["experiments"] if e["experiment_id"] == experiment_id]
    assert len(entries) == 1
    return entries[0]


def _no_temp_files(study_dir: Path) -> None:
    # Only the manifest, and the artefacts folder holding its inter-process lock: no temp files.
    assert sorted(p.name for p in study_dir.iterdir()) == ["_study-artefacts", MANIFEST_NAME]


def test_created_pending_and_written_immediately(tmp_path: Path) -> None:
    Manifest(tmp_path, HEADER, _experiments(), warnings=["study warning"])
    data = _read(tmp_path)
    assert data["study_name"] == "demo"
    assert data["study_design_hash"] == "feedfacecafebeef"
    assert data["end_time"] is None
    datetime.fromisoformat(data["start_time"])  # ISO-8601
    assert data["start_time"].endswith("+00:00")  # UTC
    assert [e["status"] for e in data["experiments"]] == ["pending"] * 4
    assert all(e["result_path"] is None for e in data["experiments"])
    assert [e["experiment_id"] for e in data["experiments"]] == ["cfg0-c0", "cfg1-c0", "cfg0-c1", "cfg1-c1"]
    assert data["experiments"][0]["config"] == {"model": "m", "engine": "transformers", "batch_size": 1}
    assert data["summary"] == {
        "total_experiments": 4,
        "completed": 0,
        "failed": 0,
        "skipped": 0,
        "pending": 4,
        "running": 0,
        "total_wall_time_s": None,
        "total_energy_j": None,
        "unique_configurations": 2,
        "warnings": ["study warning"],
    }
    _no_temp_files(tmp_path)


def test_input_experiments_not_mutated(tmp_path: Path) -> None:
    experiments = _experiments()
    Manifest(tmp_path, HEADER, experiments).update("cfg0-c0", "running")
    assert "status" not in experiments[0]


def test_every_update_rewrites_file_and_summary_stays_true(tmp_path: Path) -> None:
    m = Manifest(tmp_path, HEADER, _experiments())

    def summary() -> dict[str, Any]:
        data = _read(tmp_path)
        result: dict[str, Any] = data["summary"]
        assert result == m.data["summary"]  # the file and memory agree
        return result

    def counts() -> tuple[int, int, int, int, int]:
        s = summary()
        assert s["completed"] + s["failed"] + s["skipped"] + s["pending"] + s["running"] == s["total_experiments"] == 4
        assert s["unique_configurations"] == 2
        return s["pending"], s["running"], s["completed"], s["failed"], s["skipped"]

    m.update("cfg0-c0", "running", cell_dir="001_c0_m-transformers_0000000000000000")
    data = _read(tmp_path)
    assert _entry(data, "cfg0-c0")["status"] == "running"
    assert _entry(data, "cfg0-c0")["cell_dir"] == "001_c0_m-transformers_0000000000000000"
    assert counts() == (3, 1, 0, 0, 0)
    assert summary()["total_energy_j"] is None

    m.update("cfg0-c0", "completed", result_path="001_c0_x/result.json", total_energy_j=100.5, mj_per_tok_total=2.0)
    data = _read(tmp_path)
    e = _entry(data, "cfg0-c0")
    assert (e["status"], e["result_path"], e["total_energy_j"]) == ("completed", "001_c0_x/result.json", 100.5)
    assert counts() == (3, 0, 1, 0, 0)
    assert summary()["total_energy_j"] == pytest.approx(100.5)

    m.update("cfg1-c0", "running")
    m.update("cfg1-c0", "failed", error="CellError: child died")
    data = _read(tmp_path)
    e = _entry(data, "cfg1-c0")
    assert (e["status"], e["error"], e["result_path"]) == ("failed", "CellError: child died", None)
    assert counts() == (2, 0, 1, 1, 0)
    assert summary()["total_energy_j"] == pytest.approx(100.5)

    m.update("cfg0-c1", "skipped", skip_reason="engine not installed")
    assert _entry(_read(tmp_path), "cfg0-c1")["skip_reason"] == "engine not installed"
    assert counts() == (1, 0, 1, 1, 1)

    m.update("cfg1-c1", "running")
    m.update("cfg1-c1", "completed", result_path="004/result.json", total_energy_j=50.25)
    assert counts() == (0, 0, 2, 1, 1)
    assert summary()["total_energy_j"] == pytest.approx(150.75)
    assert summary()["total_wall_time_s"] is None
    assert _read(tmp_path)["end_time"] is None
    _no_temp_files(tmp_path)


def test_energy_null_when_no_completed_cell_has_energy(tmp_path: Path) -> None:
    m = Manifest(tmp_path, HEADER, _experiments())
    m.update("cfg0-c0", "completed", result_path="a/result.json", total_energy_j=None)  # e.g. CPU run, no meter
    m.update("cfg1-c0", "failed", error="boom", total_energy_j=999.0)  # a failed cell's energy never counts
    s = _read(tmp_path)["summary"]
    assert s["completed"] == 1 and s["failed"] == 1
    assert s["total_energy_j"] is None
    m.update("cfg0-c1", "completed", result_path="b/result.json", total_energy_j=0.0)
    assert _read(tmp_path)["summary"]["total_energy_j"] == 0.0  # zero energy is not "no energy"
    m.update("cfg1-c1", "completed", result_path="c/result.json", total_energy_j=12.0)
    assert _read(tmp_path)["summary"]["total_energy_j"] == pytest.approx(12.0)


def test_unique_configurations_by_hash(tmp_path: Path) -> None:
    experiments = _experiments(n_configs=3, n_cycles=4)
    experiments.append({"experiment_id": "invalid", "measurement_config_hash": None, "skip_reason": "bad yaml"})
    m = Manifest(tmp_path, HEADER, experiments)
    s = _read(tmp_path)["summary"]
    assert s["total_experiments"] == 13
    assert s["unique_configurations"] == 3  # total / n_cycles, invalid configs have no hash
    m.update("invalid", "skipped", skip_reason="bad yaml")
    assert _read(tmp_path)["summary"]["unique_configurations"] == 3
    assert _read(tmp_path)["summary"]["skipped"] == 1


def test_warn_deduplicates_and_is_flushed(tmp_path: Path) -> None:
    m = Manifest(tmp_path, HEADER, _experiments(), warnings=["w0"])
    m.warn("baseline drifted")
    assert _read(tmp_path)["summary"]["warnings"] == ["w0", "baseline drifted"]
    m.warn("baseline drifted")
    m.update("cfg0-c0", "running")
    assert _read(tmp_path)["summary"]["warnings"] == ["w0", "baseline drifted"]


def test_finish_sets_end_time_and_wall_time(tmp_path: Path) -> None:
    m = Manifest(tmp_path, HEADER, _experiments(n_configs=1, n_cycles=1))
    m.update("cfg0-c0", "running")
    m.update("cfg0-c0", "completed", result_path="r.json", total_energy_j=3.0)
    m.finish(12.5)
    data = _read(tmp_path)
    assert data["end_time"] is not None
    assert datetime.fromisoformat(data["end_time"]) >= datetime.fromisoformat(data["start_time"])
    assert data["summary"]["total_wall_time_s"] == 12.5
    assert data["summary"]["completed"] == 1 and data["summary"]["pending"] == 0
    # A later warning keeps the wall time already recorded.
    m.warn("late")
    assert _read(tmp_path)["summary"]["total_wall_time_s"] == 12.5
    _no_temp_files(tmp_path)


def test_unknown_experiment_is_refused_and_file_unchanged(tmp_path: Path) -> None:
    m = Manifest(tmp_path, HEADER, _experiments())
    before = (tmp_path / MANIFEST_NAME).read_bytes()
    with pytest.raises(KeyError):
        m.update("nope", "running")
    assert (tmp_path / MANIFEST_NAME).read_bytes() == before


def test_concurrent_updates_do_not_corrupt(tmp_path: Path) -> None:
    n_threads = 8
    experiments = [
        {"experiment_id": f"e{i}", "measurement_config_hash": f"{i % 4:016x}", "position": i + 1}
        for i in range(n_threads)
    ]
    m = Manifest(tmp_path, HEADER, experiments)
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait()
            for step in range(5):
                m.update(f"e{i}", "running", step=step)
                json.loads((tmp_path / MANIFEST_NAME).read_text(encoding="utf-8"))  # readers never see a torn file
                m.warn(f"thread {i} step {step}")
            if i % 2:
                m.update(f"e{i}", "failed", error=f"boom {i}")
            else:
                m.update(f"e{i}", "completed", result_path=f"e{i}/result.json", total_energy_j=float(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(120))
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    data = _read(tmp_path)
    for i in range(n_threads):
        e = _entry(data, f"e{i}")
        assert e["step"] == 4
        if i % 2:
            assert (e["status"], e["error"]) == ("failed", f"boom {i}")
        else:
            assert (e["status"], e["result_path"], e["total_energy_j"]) == ("completed", f"e{i}/result.json", float(i))
    s = data["summary"]
    assert (s["completed"], s["failed"], s["pending"], s["running"]) == (4, 4, 0, 0)
    assert s["total_energy_j"] == pytest.approx(0 + 2 + 4 + 6)
    assert s["unique_configurations"] == 4
    assert len(s["warnings"]) == n_threads * 5
    _no_temp_files(tmp_path)
