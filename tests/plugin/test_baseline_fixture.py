"""The session's idle baseline: measured once in a spawned child, cached, reused by later studies.

A fake NVML library (at the import boundary) stands in for the GPU; the cells themselves run on
the stub engine on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study

FAKES = Path(__file__).resolve().parents[1] / "fakes"
STUDY = STUB_STUDY.replace(
    "measurement:\n", "measurement:\n  baseline: {duration_seconds: 1, ttl_seconds: 3600}\n"
) + "execution: {n_cycles: 2}\n"


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch, stub_transformers: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKES), os.environ["PYTHONPATH"]]))
    monkeypatch.setenv("LLEM_FAKE_NVML", json.dumps({"gpus": [{"uuid": "GPU-fake-0", "name": "Fake H100", "power_w": 72.5}]}))


def study_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "results").iterdir() if p.is_dir())


def test_baseline_is_measured_once_and_cached(pytester: pytest.Pytester, fake_gpu: None) -> None:
    write_study(pytester.path, "idle.llem.yaml", STUDY)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    (study,) = study_dirs(pytester.path)
    artefacts = study / "_study-artefacts"
    cache = json.loads((artefacts / "baseline_cache_GPU-fake-0.json").read_text())
    assert cache["gpu_uuid"] == "GPU-fake-0"
    assert cache["power_w"] == pytest.approx(72.5, rel=0.05)
    assert cache["n_samples"] >= 5
    assert "without a CUDA context" in cache["method"]  # no CUDA here: said plainly
    assert len(list(artefacts.glob("baseline_run_*"))) == 1, "two cells, one baseline measurement"
    # The cells ran on the CPU: no baseline applies to them, and the record says why.
    for result in study.glob("*/result.json"):
        record = json.loads(result.read_text())
        assert record["baseline_power_w"] is None and record["mj_per_tok_adjusted"] is None
        assert record["baseline_unavailable_reason"] == "the cell ran on no GPU"


def test_a_later_study_reuses_a_fresh_cached_baseline(pytester: pytest.Pytester, fake_gpu: None) -> None:
    write_study(pytester.path, "idle.llem.yaml", STUDY)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    first, second = study_dirs(pytester.path)
    assert not list((second / "_study-artefacts").glob("baseline_run_*")), "reused, not measured again"
    assert (second / "_study-artefacts" / "baseline_cache_GPU-fake-0.json").read_text() == (
        first / "_study-artefacts" / "baseline_cache_GPU-fake-0.json"
    ).read_text()


def test_an_expired_baseline_is_measured_again(pytester: pytest.Pytester, fake_gpu: None) -> None:
    write_study(pytester.path, "idle.llem.yaml", STUDY.replace("ttl_seconds: 3600", "ttl_seconds: 0"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert all(len(list((s / "_study-artefacts").glob("baseline_run_*"))) >= 1 for s in study_dirs(pytester.path))


def test_no_gpu_means_no_baseline_and_a_reason(pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKES), os.environ["PYTHONPATH"]]))
    monkeypatch.setenv("LLEM_FAKE_NVML", json.dumps({"gpus": [], "init_error": "Driver Not Loaded"}))
    write_study(pytester.path, "idle.llem.yaml", STUDY)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    (study,) = study_dirs(pytester.path)
    assert not list((study / "_study-artefacts").glob("baseline_*"))


def test_a_later_study_with_other_baseline_settings_measures_its_own(pytester: pytest.Pytester, fake_gpu: None) -> None:
    """Another study's 1 s baseline is not a 2 s one: reused only under the same settings."""
    write_study(pytester.path, "idle.llem.yaml", STUDY)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    write_study(pytester.path, "idle.llem.yaml", STUDY.replace("duration_seconds: 1", "duration_seconds: 2"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    first, second = study_dirs(pytester.path)
    assert len(list((second / "_study-artefacts").glob("baseline_run_*"))) == 1, "measured afresh, not reused"
    caches = [json.loads((s / "_study-artefacts" / "baseline_cache_GPU-fake-0.json").read_text()) for s in (first, second)]
    assert [c["requested_duration_s"] for c in caches] == [1.0, 2.0]
    assert [c["sample_interval_s"] for c in caches] == [0.1, 0.1]
