"""Secrets never reach what a study run leaves behind, and redaction never breaks the results.

Real studies on the stub ``transformers`` (CPU, a child process per cell), run with
``runpytest_subprocess``, whose inner pytest inherits the secret variables set here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llem.results.loader import load_results
from tests.plugin.conftest import STUB_STUDY, write_study

SECRET = "hf_e2eSecretValue42"


def _only_study_dir(root: Path) -> Path:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    return study_dir


def _files_holding(root: Path, secret: str) -> list[str]:
    """Every file (and file name) under ``root`` in which ``secret`` appears."""
    needle = secret.encode("utf-8")
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if secret in p.name or (p.is_file() and needle in p.read_bytes())
    )


def test_a_password_that_is_a_status_word_leaves_the_study_readable(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DB_PASSWORD=completed`` turned every manifest status into ``<redacted>``: 0 completed."""
    monkeypatch.setenv("DB_PASSWORD", "completed")
    write_study(pytester.path, "ok.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark")
    result.assert_outcomes(passed=1)
    study_dir = _only_study_dir(pytester.path)
    manifest = json.loads((study_dir / "manifest.json").read_text(encoding="utf-8"))
    assert [e["status"] for e in manifest["experiments"]] == ["completed"]
    assert manifest["summary"]["completed"] == 1
    assert "<redacted>" not in (study_dir / "manifest.json").read_text(encoding="utf-8")
    loaded = load_results(study_dir)
    assert len(loaded.experiments) == 1 and loaded.records(None)[0]["status"] == "completed"


def test_a_secret_in_a_failing_cell_reaches_no_report_log_or_file(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset path holding HF_TOKEN's value: the failure names the path, redacted everywhere.

    ``DB_PASSWORD=failed`` rides along: the failed cell's status word must survive.
    """
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("DB_PASSWORD", "failed")
    body = STUB_STUDY.replace("dataset: {n_prompts: 4}", f"dataset: {{source: data/{SECRET}/prompts.jsonl, n_prompts: 4}}")
    assert SECRET in body
    write_study(pytester.path, "leak.llem.yaml", body + "execution: {n_cycles: 1}\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:benchmark", "-rA",
        "--junitxml=junit.xml", "--json-report", "--json-report-file=report.json",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    out = result.stdout.str() + result.stderr.str()
    # The failure is still explained: the path is there, its secret part redacted.
    assert "prompt file not found" in out and "data/<redacted>/prompts.jsonl" in out
    assert SECRET not in out
    study_dir = _only_study_dir(pytester.path)
    (log,) = study_dir.rglob("child.log")
    assert "data/<redacted>/prompts.jsonl" in log.read_text(encoding="utf-8"), "the log still tells what failed"
    # Only the study file the user wrote holds it: not junit.xml, report.json, child.log nor any result file.
    assert _files_holding(pytester.path, SECRET) == ["leak.llem.yaml"]
    junit = (pytester.path / "junit.xml").read_text(encoding="utf-8")
    assert "data/&lt;redacted&gt;/prompts.jsonl" in junit or "data/<redacted>/prompts.jsonl" in junit
    report = json.loads((pytester.path / "report.json").read_text(encoding="utf-8"))
    (test,) = report["tests"]
    assert "data/<redacted>/prompts.jsonl" in test["call"]["longrepr"]
    manifest = json.loads((study_dir / "manifest.json").read_text(encoding="utf-8"))
    assert [e["status"] for e in manifest["experiments"]] == ["failed"]
    assert manifest["summary"]["failed"] == 1


def test_a_secret_in_a_swept_value_is_not_in_any_id(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # A swept value that holds a secret's value names the cell: node id, directory and manifest
    # would all carry it, and the manifest (written redacted) would no longer find its cells.
    monkeypatch.setenv("HF_TOKEN", "hf_s3cretvalue42")
    from pytest_llem.study.study import load_study

    path = pytester.path / "s.llem.yaml"
    path.write_text(
        "model: llem-tiny\nsweep:\n  dataset.source: [data/hf_s3cretvalue42/p.txt, other.txt]\n", encoding="utf-8"
    )
    ids = [c.config_id for c in load_study(path).configurations]
    assert not any("hf_s3cretvalue42" in i for i in ids), ids
    assert len(set(ids)) == 2
