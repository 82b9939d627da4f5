"""StudyResult.to_rows: one flat row per cell, its figures and its flattened configuration.

The study is a real sweep (engines x precision x an engine-scoped batch size) read by the study
grammar; each cell's record is built by ``build_result`` from its resolved configuration and
written under a manifest, as a run writes it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pytest_llem import StudyResult, load_results
from pytest_llem.results import loader
from pytest_llem.results.loader import CONFIG_PREFIX, ROW_FIELDS, cell_config, flatten_config
from pytest_llem.results.manifest import Manifest
from pytest_llem.results.writer import write_json_atomic
from pytest_llem.study.study import load_study
from tests.results.test_record import build, measurement

#: 4 transformers configurations (precision x batch size) and 2 vLLM ones (precision): the batch
#: size is transformers-scoped, so vLLM cells have none.
SWEEP_YAML = """\
model: llem-tiny
engine: [transformers, vllm]
sweep:
  precision: [fp16, bf16]
  transformers.batch_size: [1, 4]
"""
CYCLES = 2

#: The columns to_rows had before it carried the configuration: they stay, first and in order.
OLD_COLUMNS = (
    "experiment_id", "config_id", "cycle", "engine", "model_name", "precision", "measurement_config_hash",
    "total_tokens", "total_inference_time_sec", "avg_tokens_per_second", "total_energy_j",
    "mj_per_tok_total", "mj_per_tok_adjusted",
)  # fmt: skip


def sweep_records(root: Path, yaml: str = SWEEP_YAML) -> list[dict[str, Any]]:
    """The records of the sweep's cells, cycle by cycle in declaration order, as result.json holds them."""
    study_file = root / "sweep.llem.yaml"
    study_file.write_text(yaml, encoding="utf-8")
    study = load_study(study_file)
    records = []
    position = 1
    for cycle in range(CYCLES):
        for index, configuration in enumerate(study.configurations):
            assert configuration.config is not None and configuration.config_hash is not None
            m = measurement(
                engine=configuration.engine,
                output_tokens=1000 + 250 * index + 10 * cycle,
                ttft_s=[0.02 * (index + 1), 0.04 * (index + 1), 0.03 * (index + 1)],
            )
            records.append(
                build(
                    m, config=configuration.config, config_hash=configuration.config_hash,
                    experiment_id=f"{configuration.config_id}::c{cycle}", study_name="sweep",
                    config_id=configuration.config_id, cycle=cycle, position=position,
                )
            )  # fmt: skip
            position += 1
    return records


def write_study(root: Path, records: list[dict[str, Any]]) -> Path:
    """A study directory holding ``records`` as completed cells, with its manifest."""
    study_dir = root / "sweep_2026-01-01T00-00-00"
    study_dir.mkdir(parents=True)
    header = {
        "schema_version": "3.0", "llenergymeasure_version": "0.1.0", "study_name": "sweep",
        "study_file": str(root / "sweep.llem.yaml"), "study_design_hash": "feedfacecafebeef",
        "measurement_protocol": {"n_cycles": CYCLES},
    }  # fmt: skip
    names = ("experiment_id", "config_id", "cycle", "position", "measurement_config_hash", "config")
    entries = [{name: r[name] for name in names} for r in records]
    manifest = Manifest(study_dir, header, entries)
    for record in records:
        cell = f"{record['position']:03d}_c{record['cycle']}_{record['config_id']}"
        write_json_atomic(study_dir / cell / "result.json", record)
        manifest.update(record["experiment_id"], "completed", result_path=f"{cell}/result.json")
    manifest.finish(1.0)
    return study_dir


@pytest.fixture
def result(tmp_path: Path) -> StudyResult:
    return load_results(write_study(tmp_path, sweep_records(tmp_path)))


def test_one_row_per_cell_in_run_order_with_the_old_columns_first(result: StudyResult) -> None:
    rows = result.to_rows()
    assert [row["experiment_id"] for row in rows] == [r["experiment_id"] for r in result.experiments]
    assert len(rows) == 6 * CYCLES
    assert tuple(rows[0])[: len(OLD_COLUMNS)] == OLD_COLUMNS  # nothing renamed, dropped or moved
    assert tuple(rows[0])[: len(ROW_FIELDS)] == ROW_FIELDS
    assert all(list(row) == list(rows[0]) for row in rows)  # every row has every column, in one order


def test_rows_carry_the_swept_settings_as_dotted_config_columns(result: StudyResult) -> None:
    rows = {row["experiment_id"]: row for row in result.to_rows()}
    bs4 = rows["transformers-bf16-bs4::c1"]
    assert bs4["config.transformers.batch_size"] == 4
    assert bs4["config.engine"] == "transformers" == bs4["engine"]
    assert bs4["config.precision"] == "bf16" == bs4["precision"]
    assert bs4["config.model"] == "llem-tiny" and bs4["config.decoding.top_p"] == 1.0
    assert bs4["config.measurement.baseline.duration_seconds"] == 30.0
    assert bs4["config.vllm.tensor_parallel_size"] is None  # an engine the cell does not use
    vllm = rows["vllm-fp16::c0"]
    assert vllm["config.engine"] == "vllm" and vllm["config.vllm.tensor_parallel_size"] == 1
    assert vllm["config.transformers.batch_size"] is None  # the batch size is transformers-scoped
    assert not any(name.startswith(CONFIG_PREFIX + "tensorrt.") for name in bs4)  # no cell runs TensorRT


def test_rows_carry_the_headline_figures(result: StudyResult) -> None:
    first = result.to_rows()[0]
    assert first["total_tokens"] == 1000 and first["total_energy_j"] == 1500.0
    assert first["mj_per_tok_total"] == pytest.approx(1500.0)
    assert first["ttft_s.median"] == pytest.approx(0.03)
    assert first["itl_s.median"] is None and first["position"] == 1
    plain = (str, int, float, bool, type(None))
    assert all(isinstance(value, plain) for row in result.to_rows() for value in row.values())


def test_rows_group_by_batch_size_without_pandas(result: StudyResult) -> None:
    tokens: dict[Any, list[int]] = defaultdict(list)
    for row in result.to_rows():
        tokens[row["config.transformers.batch_size"]].append(row["total_tokens"])
    assert set(tokens) == {1, 4, None}
    assert len(tokens[1]) == len(tokens[4]) == 2 * CYCLES and len(tokens[None]) == 2 * CYCLES


def test_the_plain_loader_result_gives_the_same_rows(result: StudyResult) -> None:
    plain = loader.load_results(result.study_dir)
    assert type(plain) is loader.StudyResult
    assert plain.to_rows() == result.to_rows()


def test_a_list_setting_is_its_json_text_and_empty_sections_have_no_column(tmp_path: Path) -> None:
    records = sweep_records(tmp_path, "model: llem-tiny\nprompts: [Hello, World]\nsweep:\n  precision: [fp32, bf16]\n")
    rows = load_results(write_study(tmp_path, records)).to_rows()
    assert rows[0]["config.prompts"] == json.dumps(["Hello", "World"])
    assert "config.expect" not in rows[0] and "config.vllm.engine_args" not in rows[0]
    assert flatten_config({"a": {"b": 1, "c": {}}, "d": [1, 2]}) == {"a.b": 1, "d": "[1, 2]"}


def test_records_of_different_shapes_share_the_columns(result: StudyResult) -> None:
    del result.experiments[0]["config"]["transformers"]  # a record without the section's fields
    result.experiments.append({"experiment_id": "bare"})  # and one with no config at all
    rows = result.to_rows()
    assert rows[-1]["experiment_id"] == "bare" and rows[-1]["config.transformers.batch_size"] is None
    assert rows[0]["config.transformers.batch_size"] is None
    assert all(list(row) == list(rows[1]) for row in rows)
    assert cell_config({"experiment_id": "bare"}) == {}


def test_pandas_makes_the_rows_a_table(result: StudyResult) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(result.to_rows())
    assert len(frame) == 6 * CYCLES
    means = frame.groupby(["config.engine", "config.transformers.batch_size"])["total_tokens"].mean()
    assert set(means.index) == {("transformers", 1), ("transformers", 4)}  # vLLM's None is not a batch size
