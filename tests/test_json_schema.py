"""The exported JSON Schema of study files is current and accepts/rejects what the loader does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from pytest_llem.study.jsonschema import study_json_schema, study_json_schema_text

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "llem-study.schema.json"


def test_committed_schema_is_current() -> None:
    assert COMMITTED.read_text() == study_json_schema_text(), "run: python -m pytest_llem schema > docs/llem-study.schema.json"


def test_command_line_prints_the_schema() -> None:
    out = subprocess.run([sys.executable, "-m", "pytest_llem", "schema"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["title"] == "pytest-llem study (*.llem.yaml)"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.llem.yaml")), ids=lambda p: p.name)
def test_examples_validate(example: Path) -> None:
    jsonschema.validate(yaml.safe_load(example.read_text()), study_json_schema())


@pytest.mark.parametrize(
    "document",
    [
        {"model": "m", "precison": "bf16"},
        {"model": "m", "transformers": {"batch_sise": 2}},
        {"model": "m", "precision": "int3"},
        {"model": "m", "execution": {"experiment_order": "random"}},
    ],
)
def test_schema_rejects_what_the_loader_rejects(document: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, study_json_schema())


def test_schema_allows_anchor_holders_and_dotted_keys() -> None:
    jsonschema.validate({"x-common": {"a": 1}, "transformers.batch_size": 4, "engine": ["transformers", "vllm"]}, study_json_schema())


STUDIES = sorted([*(ROOT / "examples").glob("*.llem.yaml"), *(ROOT / "benchmarks" / "studies").glob("*.llem.yaml")])


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_load_with_runnable_cells(study: Path) -> None:
    """Every study the repository ships (examples, benchmarks) loads, and no cell is an invalid combination."""
    from pytest_llem.study.study import load_study

    loaded = load_study(study)
    assert loaded.configurations
    assert not [c.config_id for c in loaded.configurations if c.skip_reason]
