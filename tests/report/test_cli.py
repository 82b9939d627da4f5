"""python -m pytest_llem recommend / export, on study directories written as runs write them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pytest_llem.cli import main
from tests.report.records import study


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two studies: fp16 (2000 tokens per 1500 J) beats bf16 (1000 tokens) on energy; one bf16 cycle is flagged."""
    cells = [("fp16", 0, {"output_tokens": 2000}), ("bf16", 0, {"output_tokens": 1000}), ("fp16", 1, {"output_tokens": 2100})]
    study(tmp_path / "results", "a", "2026-01-01T00:00:00+00:00", cells)
    study(tmp_path / "results", "b", "2026-02-01T00:00:00+00:00", [("bf16", 1, {"output_tokens": 1050, "window_s": 1.0})])
    return tmp_path / "results"


def test_recommend_prints_the_best_the_losers_and_cost(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["recommend", str(results), "--minimize", "mj_per_tok_total", "--where", "avg_tokens_per_second >= 50",
                   "--region", "FRA", "--gpu-hour-price", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    assert "4 record(s) from 2 study(ies)" in out
    assert "query: minimize mj_per_tok_total where avg_tokens_per_second >= 50 tokens/s" in out
    assert "best: fp16 (2 cycle(s))" in out
    assert "bf16: worse than the best beyond uncertainty: mj_per_tok_total 1464 [" in out
    assert "gco2e_per_mtok" in out and "region=France (FRA)" in out and "energy=mj_per_tok_total" in out


def test_recommend_json_and_exclude_flagged(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", str(results), "--where", "minimize mj_per_tok_total", "--exclude-flagged", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (answer,) = data["answers"]
    assert answer["best"]["label"] == "fp16" and answer["excluded_flagged"] == 1 and len(data["studies"]) == 2
    assert answer["cost"] == {}


def test_a_bad_metric_is_a_usage_error_with_a_suggestion(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", str(results), "--where", "itl_s.p50 <= 0.1 and ttft_s.p59 <= 1"]) == 2
    err = capsys.readouterr().err
    assert "recommend: error: query" in err and "unknown metric 'ttft_s.p59' (did you mean" in err
    assert "Traceback" not in err
    assert main(["recommend", str(results / "missing")]) == 2
    assert "results path" in capsys.readouterr().err


def test_export_writes_one_table_of_every_study(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "table.parquet"
    assert main(["export", str(results), "--out", str(out)]) == 0
    assert "wrote 4 row(s) from 2 study(ies)" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.num_rows == 4 and table.column("validity_codes").to_pylist().count("short_window") == 1
    assert main(["export", str(results), "--out", str(tmp_path / "t.csv"), "--exclude-flagged"]) == 0
    assert (tmp_path / "t.csv").read_text().count("\n") == 4  # header and 3 rows
    assert main(["export", str(results), "--out", str(tmp_path / "t.xlsx")]) == 2
    assert "name it .parquet or .csv" in capsys.readouterr().err
