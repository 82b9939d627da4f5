"""A relative ``model:`` path means the directory beside the study file, as a dataset path does.

The cell's process runs in the cell's directory, so without resolving against the study file's
directory ``./tinycopy`` would be looked for there and then on the hub.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_llem.models.loading import resolve_model_path
from pytest_llem.study.study import load_study
from tests.plugin.conftest import (  # noqa: F401 - the fixtures, shared with the plugin's tests
    STUB_STUDY,
    stub_transformers,
    write_study,
)
from tests.timing import scaled


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    """A study file's directory holding a model directory ``tinycopy``."""
    directory = tmp_path / "studies"
    (directory / "tinycopy").mkdir(parents=True)
    return directory


def test_a_dot_slash_path_resolves_against_the_study_directory_not_the_working_directory(
    study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cell"
    (elsewhere / "tinycopy").mkdir(parents=True)  # what the old resolution (the cwd) would find
    monkeypatch.chdir(elsewhere)
    assert resolve_model_path("./tinycopy", study_dir) == str(study_dir / "tinycopy")


def test_a_bare_name_existing_beside_the_study_is_local(study_dir: Path) -> None:
    assert resolve_model_path("tinycopy", study_dir) == str(study_dir / "tinycopy")
    assert resolve_model_path("tinycopy/", study_dir) == str(study_dir / "tinycopy")


def test_parent_and_home_paths_resolve_to_a_normalised_absolute_path(
    study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    assert resolve_model_path("../models/m", study_dir) == str(tmp_path / "models" / "m")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_model_path("~/models/m", study_dir) == str(tmp_path / "models" / "m")
    absolute = str(tmp_path / "models" / "m")
    assert resolve_model_path(absolute, study_dir) == absolute


def test_hub_ids_and_embedded_names_pass_through(study_dir: Path) -> None:
    assert resolve_model_path("meta-llama/Llama-3.1-8B", study_dir) == "meta-llama/Llama-3.1-8B"
    assert resolve_model_path("llem-tiny", study_dir) == "llem-tiny"
    assert resolve_model_path("x" * 5000, study_dir) == "x" * 5000  # no possible file name: not local


@pytest.mark.parametrize("written", ["./nowhere", "../nowhere", "~/nowhere-llem-test", "/nowhere-llem-test/model"])
def test_a_missing_local_path_is_an_error_naming_the_resolved_path(
    written: str, study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = Path(os.path.normpath(study_dir / os.path.expanduser(written)))
    with pytest.raises(FileNotFoundError) as excinfo:
        resolve_model_path(written, study_dir)
    message = str(excinfo.value)
    assert f"model: {written!r} is a local path" in message and str(expected) in message


def test_the_config_hash_stays_on_the_written_value_wherever_the_study_lives(tmp_path: Path) -> None:
    text = "model: ./tinycopy\nprecision: fp32\n"
    hashes = []
    for place in ("a", "b/c"):
        path = tmp_path / place / "study.llem.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(text, encoding="utf-8")
        (configuration,) = load_study(path).configurations
        assert configuration.config is not None and configuration.config.model == "./tinycopy"
        hashes.append(configuration.config_hash)
    assert hashes[0] == hashes[1]


# --------------------------------------------------------------------------- through a cell's process


def _cell_record(root: Path) -> dict[str, Any]:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    manifest = json.loads((study_dir / "manifest.json").read_text())
    (entry,) = manifest["experiments"]
    assert entry["status"] == "completed"
    record: dict[str, Any] = json.loads((study_dir / entry["result_path"]).read_text())
    return record


@pytest.mark.usefixtures("stub_transformers")
def test_a_missing_model_directory_fails_the_cell_naming_the_path(pytester: pytest.Pytester) -> None:
    studies = pytester.path / "studies"
    studies.mkdir()
    body = STUB_STUDY.replace("model: stub-ok", "model: ./tinycopy") + "execution: {n_cycles: 1}\n"
    write_study(studies, "local.llem.yaml", body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "studies/local.llem.yaml", timeout=scaled(300))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*model: './tinycopy' is a local path, resolved against the study file's directory to {studies / 'tinycopy'}, which does not exist*"]
    )


def test_a_model_directory_beside_the_study_is_loaded_from_there(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real tiny model, copied beside a study in a subdirectory, run from the parent directory, offline."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pytest_llem.models import tiny

    monkeypatch.setenv("LLEM_CACHE_DIR", str(pytester.path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub lookup would fail the cell, not pass it
    studies = pytester.path / "studies"
    shutil.copytree(tiny.materialize("llem-tiny"), studies / "tinycopy")
    write_study(
        studies,
        "local.llem.yaml",
        """
        model: ./tinycopy
        precision: fp32
        dataset: {n_prompts: 2}
        max_input_tokens: 16
        max_output_tokens: 4
        ignore_eos: true
        measurement:
          min_window_seconds: 0
          warmup: {max_batches: 1}
        transformers: {batch_size: 2}
        execution: {n_cycles: 1}
        """,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "studies/local.llem.yaml", timeout=scaled(600))
    result.assert_outcomes(passed=1)
    record = _cell_record(pytester.path)
    assert record["model_path"] == str(studies / "tinycopy")
    assert record["model_name"] == "./tinycopy"
