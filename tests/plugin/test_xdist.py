"""Under pytest-xdist a study is still one coherent directory, identical in content to a serial run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study

STUDY = STUB_STUDY + "sweep:\n  transformers.batch_size: [1, 2]\nexecution: {n_cycles: 2}\n"


def study_content(root: Path) -> tuple[Path, dict, list[dict]]:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    manifest = json.loads((study_dir / "manifest.json").read_text())
    records = [json.loads(p.read_text()) for p in sorted(study_dir.glob("*/result.json"))]
    return study_dir, manifest, records


@pytest.mark.parametrize("dist", ["load", "loadscope"])
def test_two_workers_write_one_study(pytester: pytest.Pytester, stub_transformers: Path, dist: str) -> None:
    write_study(pytester.path, "par.llem.yaml", STUDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "2", "--dist", dist, "par.llem.yaml")
    result.assert_outcomes(passed=4)
    study_dir, manifest, records = study_content(pytester.path)
    assert [e["status"] for e in manifest["experiments"]] == ["completed"] * 4
    assert manifest["summary"]["completed"] == 4 and manifest["end_time"] is not None
    assert sorted(p.name[:7] for p in study_dir.iterdir() if p.name[0].isdigit()) == [
        "001_c0_", "002_c0_", "003_c1_", "004_c1_",
    ]  # fmt: skip
    assert len(records) == 4
    summary = json.loads((study_dir / "summary.json").read_text())
    assert [g["n_records"] for g in summary["groups"]] == [2, 2]
    result.stdout.fnmatch_lines(["*llem: par*", "*across cycles*", f"*results: {study_dir}*"])
    # No GPU here: the workers' cells share the CPU, and the user who named the study is told once.
    assert result.stdout.str().count("-n 2 without a GPU: every worker runs its cells on this machine's CPU") == 1


def test_parallel_and_serial_runs_agree(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(pytester.path, "par.llem.yaml", STUDY)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "2").assert_outcomes(passed=4)
    _, parallel, parallel_records = study_content(pytester.path)
    for path in (pytester.path / "results").iterdir():
        path.rename(pytester.path / f"parallel-{path.name}")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    _, serial, serial_records = study_content(pytester.path)

    def stable(entries: list[dict]) -> list[tuple]:
        return [(e["experiment_id"], e["position"], e["measurement_config_hash"], e["status"], e["result_path"]) for e in entries]

    assert stable(parallel["experiments"]) == stable(serial["experiments"])
    assert parallel["study_design_hash"] == serial["study_design_hash"]
    # min_window_seconds 0: one pass per cell, so the token counts are exact in both runs.
    assert [r["total_tokens"] for r in parallel_records] == [r["total_tokens"] for r in serial_records] == [16] * 4


FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def two_fake_gpus(monkeypatch: pytest.MonkeyPatch, stub_transformers: Path) -> None:
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKES), os.environ["PYTHONPATH"]]))
    gpus = [{"uuid": f"GPU-fake-{i}", "name": "Fake H100", "power_w": 70.0 + 10 * i} for i in range(2)]
    monkeypatch.setenv("LLEM_FAKE_NVML", json.dumps({"gpus": gpus}))


def test_each_worker_gets_its_own_gpu(pytester: pytest.Pytester, two_fake_gpus: None) -> None:
    write_study(pytester.path, "gpus.llem.yaml", STUDY.replace("measurement:\n", "measurement:\n  baseline: {duration_seconds: 1}\n"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "2", "--dist", "loadscope")
    result.assert_outcomes(passed=4)
    study_dir, _, _ = study_content(pytester.path)
    artefacts = study_dir / "_study-artefacts"
    # One baseline per worker, each of its own GPU only: per-GPU idle power recorded separately.
    powers = {p.name: json.loads(p.read_text())["power_w"] for p in artefacts.glob("baseline_cache_*.json")}
    assert sorted(powers) == ["baseline_cache_GPU-fake-0.json", "baseline_cache_GPU-fake-1.json"]
    assert powers["baseline_cache_GPU-fake-0.json"] == pytest.approx(70.0, rel=0.05)
    assert powers["baseline_cache_GPU-fake-1.json"] == pytest.approx(80.0, rel=0.05)
    assert len(list(artefacts.glob("baseline_run_*"))) == 2


def test_more_workers_than_gpus_is_a_usage_error(pytester: pytest.Pytester, two_fake_gpus: None) -> None:
    write_study(pytester.path, "gpus.llem.yaml", STUDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "3", "gpus.llem.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*-n 3 asks for more workers than the 2 GPU(s) visible*"])


def test_n_auto_is_one_worker_per_gpu(pytester: pytest.Pytester, two_fake_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """xdist asks for the worker count before pytest_configure: the answer must be there already.

    One GPU on a 2-core machine: xdist's own answer (the CPU count) would be refused as too many.
    """
    monkeypatch.setenv("LLEM_FAKE_NVML", json.dumps({"gpus": [{"uuid": "GPU-fake-0", "name": "Fake H100", "power_w": 70.0}]}))
    write_study(pytester.path, "gpus.llem.yaml", STUDY.replace("measurement:\n", "measurement:\n  baseline: {duration_seconds: 1}\n"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "-n", "auto", "gpus.llem.yaml")
    result.stdout.fnmatch_lines(["*1 worker*"])
    result.assert_outcomes(passed=4)
