"""The library API: load_results and StudyResult on study directories built without models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pytest_llem
from pytest_llem import StudyResult, load_results
from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.errors import LlemError, ResultsNotFound, ResultsUnreadable
from pytest_llem.results.manifest import MANIFEST_NAME, Manifest
from pytest_llem.results.writer import write_json_atomic
from tests.results.test_record import build, measurement

PROTOCOL = {
    "n_cycles": 3, "experiment_order": "interleave", "experiment_gap_seconds": 0, "cycle_gap_seconds": 0,
    "shuffle_seed": 0, "experiment_timeout_seconds": 3600,
}  # fmt: skip
#: Output tokens per (precision, cycle): energy is fixed at 1500 J, so mJ/token differs by precision.
TOKENS = {"fp16": [2000, 2100, 1900], "bf16": [1000, 1050, 950]}


def make_study(
    root: Path, name: str = "demo", dir_name: str | None = None, start_time: str | None = None,
    failed: bool = True, skipped: bool = True,
) -> Path:  # fmt: skip
    """A study directory shaped like a real run: 2 precisions x 3 cycles, plus a failed and a skipped cell."""
    study_dir = root / (dir_name or f"{name}_2026-01-01T00-00-00")
    study_dir.mkdir(parents=True)
    header = {
        "schema_version": "3.0", "llenergymeasure_version": "0.1.0", "study_name": name,
        "study_file": f"/studies/{name}.llem.yaml", "study_design_hash": "feedfacecafebeef",
        "measurement_protocol": PROTOCOL,
    }  # fmt: skip
    entries: list[dict[str, Any]] = []
    position = 1
    for cycle in range(3):
        for precision in ("fp16", "bf16"):
            config = {"model": "stub-ok", "engine": "transformers", "precision": precision}
            entries.append(
                {
                    "experiment_id": f"{precision}::c{cycle}", "config_id": precision, "cycle": cycle,
                    "position": position, "measurement_config_hash": f"{precision:0>16}", "config": config,
                }
            )  # fmt: skip
            position += 1
    if failed:
        entries.append(
            {"experiment_id": "broken::c0", "config_id": "broken", "cycle": 0, "position": position,
             "measurement_config_hash": "b" * 16, "config": {"model": "stub-raise", "precision": "fp32"}}
        )  # fmt: skip
        position += 1
    if skipped:
        entries.append(
            {"experiment_id": "bad::c0", "config_id": "bad", "cycle": 0, "position": position,
             "measurement_config_hash": None, "config": {"model": "stub-ok", "decoding": {"top_p": 0.5}},
             "skip_reason": "top_p needs a temperature above 0; fp16 cannot run on the CPU"}
        )  # fmt: skip
    manifest = Manifest(study_dir, header, entries)
    if start_time is not None:
        manifest.data["start_time"] = start_time
        manifest.flush()
    for entry in entries:
        eid = entry["experiment_id"]
        if entry["config_id"] == "broken":
            manifest.update(eid, "failed", error="CellCrashed: RuntimeError: stub model refuses to load")
            continue
        if entry["config_id"] == "bad":
            manifest.update(eid, "skipped", skip_reason=entry["skip_reason"])
            continue
        cell = f"{entry['position']:03d}_c{entry['cycle']}_stub-ok-transformers_{entry['measurement_config_hash']}"
        record = build(
            measurement(output_tokens=TOKENS[entry["config_id"]][entry["cycle"]]),
            config=ExperimentConfig.model_validate(entry["config"]),
            experiment_id=eid,
            config_hash=entry["measurement_config_hash"],
            study_name=name, config_id=entry["config_id"], cycle=entry["cycle"], position=entry["position"],
        )  # fmt: skip
        write_json_atomic(study_dir / cell / "result.json", record)
        manifest.update(eid, "completed", result_path=f"{cell}/result.json", total_energy_j=record["total_energy_j"])
    manifest.finish(12.5)
    return study_dir


def test_load_a_study_directory(tmp_path: Path) -> None:
    study_dir = make_study(tmp_path)
    result = load_results(study_dir)
    assert isinstance(result, StudyResult)
    assert result.study_name == "demo"
    assert result.study_design_hash == "feedfacecafebeef"
    assert result.measurement_protocol == PROTOCOL
    assert result.study_dir == study_dir
    assert [r["experiment_id"] for r in result.experiments] == [
        "fp16::c0", "bf16::c0", "fp16::c1", "bf16::c1", "fp16::c2", "bf16::c2",
    ]  # fmt: skip
    assert all(r["schema_version"] == "3.0" for r in result.experiments)
    assert [p.name for p in result.result_files] == ["result.json"] * 6
    assert all(p.is_file() and p.parent.parent == study_dir for p in result.result_files)
    assert result.summary["completed"] == 6 and result.summary["failed"] == 1 and result.summary["skipped"] == 1
    assert result.summary["total_wall_time_s"] == 12.5
    assert result.manifest["study_name"] == "demo"
    assert result.failed_experiments[0]["experiment_id"] == "broken::c0"
    assert "stub model refuses to load" in result.failed_experiments[0]["error"]
    (skip,) = result.skipped_experiments
    assert skip["raw_config"] == {"model": "stub-ok", "decoding": {"top_p": 0.5}}
    assert skip["reason"].startswith("top_p needs a temperature")
    assert skip["errors"] == ["top_p needs a temperature above 0", "fp16 cannot run on the CPU"]
    assert "completed=6, failed=1, skipped=1" in repr(result)


def test_records_by_status(tmp_path: Path) -> None:
    result = load_results(make_study(tmp_path))
    assert result.records() == result.experiments
    assert [e["experiment_id"] for e in result.records("failed")] == ["broken::c0"]
    assert [e["experiment_id"] for e in result.records("skipped")] == ["bad::c0"]
    assert len(result.records(None)) == 8


def test_load_from_manifest_file_and_string_path(tmp_path: Path) -> None:
    study_dir = make_study(tmp_path)
    assert load_results(study_dir / MANIFEST_NAME).study_dir == study_dir
    assert len(load_results(str(study_dir)).experiments) == 6


def test_a_results_root_loads_the_newest_study(tmp_path: Path) -> None:
    # The older run's directory name sorts last: the manifest's start_time decides.
    make_study(tmp_path, "old", dir_name="zz_old", start_time="2026-01-01T00:00:00+00:00", failed=False)
    newer = make_study(tmp_path, "new", dir_name="aa_new", start_time="2026-02-01T00:00:00+00:00")
    (tmp_path / "_study-artefacts").mkdir()  # not a study: no manifest
    result = load_results(tmp_path)
    assert result.study_name == "new" and result.study_dir == newer


def test_no_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsNotFound, match=r"no manifest\.json in .*empty"):
        load_results(tmp_path / "empty")
    with pytest.raises(ResultsNotFound, match="does not exist"):
        load_results(tmp_path / "missing")
    assert issubclass(ResultsNotFound, LlemError)


def test_a_missing_result_file_is_named(tmp_path: Path) -> None:
    study_dir = make_study(tmp_path)
    victim = load_results(study_dir).result_files[2]
    victim.unlink()
    with pytest.raises(ResultsNotFound) as info:
        load_results(study_dir)
    assert str(victim) in str(info.value) and "fp16::c1" in str(info.value)


def test_an_unreadable_result_file_is_named(tmp_path: Path) -> None:
    study_dir = make_study(tmp_path)
    victim = load_results(study_dir).result_files[0]
    victim.write_text("{not json", encoding="utf-8")
    with pytest.raises(ResultsUnreadable, match="not valid JSON") as info:
        load_results(study_dir)
    assert str(victim) in str(info.value)


def test_a_result_path_leaving_the_study_is_refused(tmp_path: Path) -> None:
    study_dir = make_study(tmp_path)
    manifest = json.loads((study_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    manifest["experiments"][0]["result_path"] = "../../etc/result.json"
    (study_dir / MANIFEST_NAME).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ResultsUnreadable, match="leaves the study directory"):
        load_results(study_dir)


def test_summarise_groups_by_precision(tmp_path: Path) -> None:
    result = load_results(make_study(tmp_path))
    groups = result.summarise(by=("precision",), metrics=("mj_per_tok_total", "total_tokens"), n_resamples=200)
    assert [g.key for g in groups] == [{"precision": "fp16"}, {"precision": "bf16"}]
    fp16, bf16 = groups
    assert fp16.n_records == 3 and fp16.config_ids == ["fp16"]
    assert fp16.metrics["total_tokens"].mean == pytest.approx(2000)
    assert bf16.metrics["mj_per_tok_total"].values == pytest.approx(tuple(1.5e6 / t for t in TOKENS["bf16"]))
    assert bf16.metrics["mj_per_tok_total"].ci_method == "student-t"  # 3 cycles: a t interval
    default = result.summarise()
    assert len(default) == 2 and "mj_per_tok_adjusted" in default[0].metrics


def test_to_rows(tmp_path: Path) -> None:
    rows = load_results(make_study(tmp_path)).to_rows()
    assert len(rows) == 6
    first = rows[0]
    assert first["experiment_id"] == "fp16::c0" and first["config_id"] == "fp16" and first["cycle"] == 0
    assert first["engine"] == "transformers" and first["model_name"] == "stub-ok" and first["precision"] == "fp16"
    assert first["total_tokens"] == 2000 and first["total_energy_j"] == 1500.0
    assert first["total_inference_time_sec"] == 10.0 and first["avg_tokens_per_second"] == pytest.approx(200.0)
    assert first["mj_per_tok_total"] == pytest.approx(750.0) and first["mj_per_tok_adjusted"] is None
    assert all(not isinstance(v, (dict, list)) for row in rows for v in row.values())  # flat


def test_public_api_is_exported_lazily() -> None:
    from pytest_llem import api
    from pytest_llem.verdicts import statistics

    assert set(pytest_llem.__all__) == {
        "__version__", "run_study", "load_results", "StudyResult", "summarise_groups", "group_records", "summarise",
        "CellProgress",
    }  # fmt: skip
    assert pytest_llem.run_study is api.run_study and pytest_llem.CellProgress is api.CellProgress
    assert pytest_llem.load_results is api.load_results is load_results
    assert pytest_llem.StudyResult is api.StudyResult is StudyResult
    for name in ("summarise_groups", "group_records", "summarise"):
        assert getattr(pytest_llem, name) is getattr(api, name) is getattr(statistics, name)
    with pytest.raises(AttributeError):
        pytest_llem.no_such_name  # noqa: B018
    code = (
        "import sys, pytest_llem; pytest_llem.load_results;"
        " print(sorted(m for m in ('pydantic', 'numpy', 'scipy', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", "importing pytest_llem and loading results must stay light"
