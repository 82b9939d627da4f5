"""summary.csv and summary.json name each group: config id, model, engine and every swept field.

The records are a real sweep's (engines x precision x an engine-scoped batch size, 2 cycles),
built from the study grammar's resolved configurations (``tests/results/test_to_rows.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.verdicts.finalize import finalize_study
from pytest_llem.verdicts.statistics import (
    CONFIG_ID_SEPARATOR,
    CSV_STAT_COLUMNS,
    summarise_groups,
    swept_fields,
    write_summary,
)
from tests.results.test_to_rows import CYCLES, sweep_records, write_study
from tests.test_api import make_study

FAST = 200
METRICS = ("mj_per_tok_total", "total_tokens")
LABELS = ["config_id", "model", "engine"]


@pytest.fixture
def records(tmp_path: Path) -> list[dict[str, Any]]:
    return sweep_records(tmp_path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_swept_fields_are_those_the_configurations_differ_on(records: list[dict[str, Any]]) -> None:
    # vLLM cells have no transformers section and one vllm section between them: not swept.
    assert swept_fields(records) == ["engine", "precision", "transformers.batch_size"]
    assert swept_fields([r for r in records if r["config"]["engine"] == "vllm"]) == ["precision"]
    assert swept_fields(records[:1]) == []


def test_csv_rows_carry_config_id_model_engine_and_swept_fields(records: list[dict[str, Any]], tmp_path: Path) -> None:
    _, csv_path = write_summary(tmp_path, summarise_groups(records, metrics=METRICS, n_resamples=FAST))
    header = csv_path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == [
        "measurement_config_hash", *LABELS, "precision", "transformers.batch_size", *CSV_STAT_COLUMNS,
    ]  # fmt: skip
    rows = read_csv(csv_path)
    assert len(rows) == 6 * len(METRICS)
    assert [r["config_id"] for r in rows[:: len(METRICS)]] == [
        "transformers-fp16-bs1", "transformers-fp16-bs4", "transformers-bf16-bs1", "transformers-bf16-bs4",
        "vllm-fp16", "vllm-bf16",
    ]  # fmt: skip
    by_id = {r["config_id"]: r for r in rows if r["metric"] == "total_tokens"}
    assert by_id["transformers-bf16-bs4"]["transformers.batch_size"] == "4"
    assert by_id["transformers-bf16-bs4"]["precision"] == "bf16" and by_id["transformers-bf16-bs4"]["engine"] == "transformers"
    assert by_id["vllm-fp16"]["transformers.batch_size"] == "" and by_id["vllm-fp16"]["engine"] == "vllm"
    assert all(r["model"] == "llem-tiny" for r in rows)
    # The table groups again without its hash: mean tokens per batch size of the transformers cells.
    tokens: dict[str, list[float]] = {}
    for r in rows:
        if r["metric"] == "total_tokens" and r["engine"] == "transformers":
            tokens.setdefault(r["transformers.batch_size"], []).append(float(r["mean"]))
    assert sorted(tokens) == ["1", "4"] and all(len(v) == 2 for v in tokens.values())


def test_json_groups_carry_the_same_under_their_key(records: list[dict[str, Any]], tmp_path: Path) -> None:
    json_path, _ = write_summary(tmp_path, summarise_groups(records, metrics=METRICS, n_resamples=FAST))
    groups = json.loads(json_path.read_text(encoding="utf-8"))["groups"]
    first, vllm = groups[0], groups[4]
    assert first["key"] == {
        "measurement_config_hash": records[0]["measurement_config_hash"], "config_id": "transformers-fp16-bs1",
        "model": "llem-tiny", "engine": "transformers", "precision": "fp16", "transformers.batch_size": 1,
    }  # fmt: skip
    assert next(iter(first["key"])) == "measurement_config_hash" and first["group_by"] == ["measurement_config_hash"]
    assert first["config_ids"] == ["transformers-fp16-bs1"] and first["n_records"] == CYCLES
    assert vllm["key"]["config_id"] == "vllm-fp16" and vllm["key"]["transformers.batch_size"] is None


def test_a_coarser_group_joins_its_config_ids_and_lists_the_values_it_holds(
    records: list[dict[str, Any]], tmp_path: Path
) -> None:
    groups = summarise_groups(records, by=("precision",), metrics=METRICS, n_resamples=FAST)
    fp16 = groups[0]
    assert fp16.key == {"precision": "fp16"}  # the grouping key itself is unchanged
    assert fp16.fields == {
        "config_id": CONFIG_ID_SEPARATOR.join(["transformers-fp16-bs1", "transformers-fp16-bs4", "vllm-fp16"]),
        "model": "llem-tiny", "engine": ["transformers", "vllm"], "precision": "fp16",
        "transformers.batch_size": [1, 4],
    }  # fmt: skip
    _, csv_path = write_summary(tmp_path, groups)
    row = read_csv(csv_path)[0]
    assert list(row)[:6] == ["precision", *LABELS, "transformers.batch_size", "metric"]
    assert row["config_id"] == "transformers-fp16-bs1;transformers-fp16-bs4;vllm-fp16"
    assert row["engine"] == '["transformers", "vllm"]' and row["transformers.batch_size"] == "[1, 4]"


def test_one_hash_under_two_config_ids_is_one_group_with_both(records: list[dict[str, Any]]) -> None:
    twin = [dict(r, config_id="explicit-twin") for r in records if r["config_id"] == "vllm-bf16"]
    groups = summarise_groups([*records, *twin], metrics=METRICS, n_resamples=FAST)
    (group,) = [g for g in groups if "vllm-bf16" in g.config_ids]
    assert group.fields["config_id"] == "explicit-twin;vllm-bf16" and group.n_records == 2 * CYCLES


def test_records_without_a_config_still_name_model_and_engine() -> None:
    bare = [
        {"config_id": "a", "cycle": c, "measurement_config_hash": "h", "engine": "vllm", "model_name": "m",
         "mj_per_tok_total": 1.0 + c}
        for c in range(2)
    ]  # fmt: skip
    (group,) = summarise_groups(bare, metrics=("mj_per_tok_total",))
    assert group.fields == {"config_id": "a", "model": "m", "engine": "vllm"}


def test_the_summary_a_run_writes_has_the_columns(tmp_path: Path) -> None:
    # finalize_study is what the session calls at the end of a run.
    study_dir = make_study(tmp_path)
    finalized = finalize_study(study_dir)
    assert [g.fields["config_id"] for g in finalized.groups] == ["fp16", "bf16"]
    rows = read_csv(study_dir / "summary.csv")
    assert {(r["config_id"], r["precision"], r["engine"], r["model"]) for r in rows} == {
        ("fp16", "fp16", "transformers", "stub-ok"), ("bf16", "bf16", "transformers", "stub-ok"),
    }  # fmt: skip
    assert all(r["measurement_config_hash"] for r in rows)


def test_a_sweep_written_and_finalized_end_to_end(records: list[dict[str, Any]], tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, records)
    finalize_study(study_dir)
    summary = json.loads((study_dir / "summary.json").read_text(encoding="utf-8"))
    assert [g["key"]["transformers.batch_size"] for g in summary["groups"]] == [1, 4, 1, 4, None, None]
