"""load_results over several studies: one data set, duplicates removed by a stated rule, validity on load."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from pytest_llem import load_results
from pytest_llem.errors import ResultsNotFound
from pytest_llem.results import loader
from pytest_llem.results.manifest import MANIFEST_NAME
from tests.report.records import study

OLD = "2026-01-01T00:00:00+00:00"
NEW = "2026-02-01T00:00:00+00:00"


def _two_configs(root: Path, name: str, start: str, **overrides: object) -> Path:
    cells = [(cid, cycle, dict(overrides)) for cycle in (0, 1) for cid in ("fp16", "bf16")]
    return study(root, name, start, cells)


def test_one_study_loads_as_before_and_names_itself_as_its_only_source(tmp_path: Path) -> None:
    study_dir = _two_configs(tmp_path, "a", OLD)
    result = load_results(study_dir)
    assert result.study_dir == study_dir and result.study_name == "a" and len(result.experiments) == 4
    assert [s.study_dir for s in result.studies] == [study_dir] and result.duplicates == []
    assert result.source_of(0) == result.studies[0]


def test_two_studies_merge_in_start_order_with_their_sources(tmp_path: Path) -> None:
    newer = study(tmp_path, "b", NEW, [("int8", 0, {})])
    older = _two_configs(tmp_path, "a", OLD)
    result = load_results(newer, older)  # named newest first: the merge still orders by start time
    assert [s.study_name for s in result.studies] == ["a", "b"]
    assert result.study_name == "a + b" and result.study_dir == tmp_path
    assert [r["experiment_id"] for r in result.experiments][-1] == "int8::c0" and len(result.experiments) == 5
    assert result.source_of(4) is not None and result.source_of(4).study_dir == newer  # type: ignore[union-attr]
    assert len(result.records(None)) == 5 and result.summary["studies"] == 2
    assert "studies=2" in repr(result)


def test_the_same_study_reached_twice_is_read_once(tmp_path: Path) -> None:
    study_dir = _two_configs(tmp_path / "root", "a", OLD)
    result = load_results(study_dir, tmp_path / "root", study_dir / MANIFEST_NAME, all_studies=True)
    assert len(result.studies) == 1 and len(result.experiments) == 4 and result.duplicates == []


def test_a_copied_study_is_a_duplicate_that_agrees(tmp_path: Path) -> None:
    original = _two_configs(tmp_path, "a", OLD)
    copy = tmp_path / "elsewhere" / original.name
    shutil.copytree(original, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["start_time"] = NEW
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing duplicates are no disagreement: no warning
        result = load_results(original, copy)
    assert len(result.experiments) == 4 and len(result.duplicates) == 4
    assert all(d.differing == () and copy in d.kept.parents and original in d.dropped.parents for d in result.duplicates)
    assert all(copy in path.parents for path in result.result_files)


def test_a_cell_measured_twice_keeps_the_newer_record_and_warns(tmp_path: Path) -> None:
    older = _two_configs(tmp_path, "a", OLD)
    newer = _two_configs(tmp_path, "a", NEW, output_tokens=4000)  # the same cells, measured again
    with pytest.warns(UserWarning, match=r"4 cell\(s\) were measured in more than one study.*newer study's record is kept"):
        result = load_results(older, newer)
    assert len(result.experiments) == 4
    assert {r["total_tokens"] for r in result.experiments} == {4000}
    assert all("total_tokens" in d.differing and newer in d.kept.parents for d in result.duplicates)


def test_the_same_cell_on_other_hardware_is_not_a_duplicate(tmp_path: Path) -> None:
    h100 = study(tmp_path, "a", OLD, [("fp16", 0, {"gpus": [{"uuid": "GPU-1", "name": "NVIDIA H100", "cuda_index": 0}]})])
    h200 = study(tmp_path, "a", NEW, [("fp16", 0, {"gpus": [{"uuid": "GPU-2", "name": "NVIDIA H200", "cuda_index": 0}]})])
    result = load_results(h100, h200)
    assert len(result.experiments) == 2 and result.duplicates == []
    assert {loader.derived_fields(r)["gpu_name"] for r in result.experiments} == {"NVIDIA H100", "NVIDIA H200"}


def test_a_results_directory_gives_its_newest_study_or_every_study_at_any_depth(tmp_path: Path) -> None:
    _two_configs(tmp_path / "site-a", "a", OLD)
    newest = study(tmp_path / "site-b" / "nested", "b", NEW, [("int8", 0, {})])
    (tmp_path / "site-b" / "nested" / "_study-artefacts").mkdir()
    assert load_results(tmp_path / "site-b" / "nested").study_dir == newest  # the old rule, unchanged
    merged = load_results(tmp_path, all_studies=True)
    assert [s.study_name for s in merged.studies] == ["a", "b"] and len(merged.experiments) == 5


def test_records_without_validity_get_it_on_loading_and_flagged_ones_can_be_left_out(tmp_path: Path) -> None:
    study_dir = study(tmp_path, "a", OLD, [("fp16", 0, {}), ("bf16", 0, {"window_s": 1.0, "energy": {"window_s": 1.0}})])
    for path in study_dir.glob("*/result.json"):  # as written before the field existed
        record = json.loads(path.read_text())
        del record["validity"]
        path.write_text(json.dumps(record))
    result = load_results(study_dir)
    short = next(r for r in result.experiments if r["config_id"] == "bf16")
    assert [f["code"] for f in short["validity"]] == ["short_window"]
    assert next(r for r in result.experiments if r["config_id"] == "fp16")["validity"] == []
    kept = load_results(study_dir, exclude_flagged=True)
    assert [r["config_id"] for r in kept.experiments] == ["fp16"] and len(kept.result_files) == 1
    assert [r["config_id"] for r in kept.excluded_flagged] == ["bf16"]


def test_no_path_and_a_missing_path_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsNotFound, match="no results path"):
        loader.read_studies([], loader.StudyResult)
    with pytest.raises(ResultsNotFound, match="does not exist"):
        load_results(_two_configs(tmp_path, "a", OLD), tmp_path / "missing")
