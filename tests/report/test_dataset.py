"""report/dataset.py: many studies as one tidy table, Parquet or CSV, one row per cell."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pytest_llem import StudyResult, load_results
from pytest_llem.errors import LlemError
from pytest_llem.report.dataset import TIDY_FIELDS, export_table, tidy_rows
from pytest_llem.results.loader import ROW_FIELDS
from tests.report.records import study
from tests.results.test_to_rows import sweep_records, write_study

H100 = {"gpus": [{"uuid": "GPU-1", "name": "NVIDIA H100", "cuda_index": 0}]}
H200 = {"gpus": [{"uuid": "GPU-2", "name": "NVIDIA H200", "cuda_index": 0}, {"uuid": "GPU-3", "name": "NVIDIA H200", "cuda_index": 1}]}


@pytest.fixture
def merged(tmp_path: Path) -> StudyResult:
    a = study(tmp_path, "a", "2026-01-01T00:00:00+00:00", [("fp16", 0, H100), ("bf16", 0, {**H100, "window_s": 1.0})])
    b = study(tmp_path, "b", "2026-02-01T00:00:00+00:00", [("fp16", 0, H200)])
    return load_results(a, b)


def test_rows_carry_source_hardware_validity_and_config(merged: StudyResult) -> None:
    rows = tidy_rows(merged)
    assert len(rows) == 3
    assert tuple(rows[0])[: len(ROW_FIELDS) + len(TIDY_FIELDS)] == (*ROW_FIELDS, *TIDY_FIELDS)
    assert [r["study_name"] for r in rows] == ["a", "a", "b"]
    assert [r["gpu_name"] for r in rows] == ["NVIDIA H100", "NVIDIA H100", "2x NVIDIA H200"]
    assert [r["gpu_count"] for r in rows] == [1, 1, 2]
    assert [r["flagged"] for r in rows] == [False, True, False] and rows[1]["validity_codes"] == "short_window"
    assert rows[0]["config.precision"] == "fp16" and rows[0]["software.python"] == "3.11.7"
    assert all(not isinstance(v, (dict, list)) for row in rows for v in row.values())


def test_parquet_and_csv_read_back_in_one_line(merged: StudyResult, tmp_path: Path) -> None:
    parquet = export_table(merged, tmp_path / "out" / "table.parquet")
    table = pq.read_table(parquet)
    assert table.num_rows == 3 and "config.transformers.batch_size" in table.column_names
    assert table.column("gpu_name").to_pylist()[2] == "2x NVIDIA H200"
    assert table.column("mj_per_tok_total").to_pylist() == pytest.approx([750.0, 750.0, 750.0])
    text = export_table(merged, tmp_path / "table.csv")
    with text.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["validity_codes"] for r in rows] == ["", "short_window", ""] and rows[0]["mj_per_tok_adjusted"] == ""
    assert oct(text.stat().st_mode & 0o777) == "0o644"


def test_a_sweep_across_engines_exports_every_setting_as_a_column(tmp_path: Path) -> None:
    result = load_results(write_study(tmp_path, sweep_records(tmp_path)))
    table = pq.read_table(export_table(result, tmp_path / "sweep.parquet"))
    batch = table.column("config.transformers.batch_size").to_pylist()
    assert sorted(set(batch), key=str) == [1, 4, None]  # vLLM cells have no transformers batch size
    assert table.num_rows == len(result.experiments)


def test_mixed_types_in_a_column_become_text(tmp_path: Path) -> None:
    result = load_results(study(tmp_path, "a", "2026-01-01T00:00:00+00:00", [("fp16", 0, {}), ("bf16", 0, {})]))
    result.experiments[1]["engine_version"] = 5  # a value of another type than the other row's
    table = pq.read_table(export_table(result, tmp_path / "t.parquet"))
    assert table.column("engine_version").to_pylist() == ["4.44.0", "5"]


def test_an_unknown_suffix_is_refused(merged: StudyResult, tmp_path: Path) -> None:
    with pytest.raises(LlemError, match=r"name it \.parquet or \.csv"):
        export_table(merged, tmp_path / "table.xlsx")
