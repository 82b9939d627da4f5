"""Adaptive cycles through the whole plugin: extra cycles after the planned ones, run as pytest items.

The cells are vLLM cells on a fake ``vllm`` and a fake NVML (so they have an energy figure to
put an interval on); everything else is real: the child processes, the records, the manifest.
The fake's energy per token varies with the host's timing from cycle to cycle, so a target of
0.001 % is never met and the cap decides, which keeps the outcome independent of speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugin.conftest import write_study
from tests.plugin.test_vllm_cells import GPU, manifest, with_fakes

STUDY = """
model: llem-tiny
precision: fp32
engine: vllm
dataset: {n_prompts: 4}
max_input_tokens: 16
max_output_tokens: 6
vllm: {max_num_seqs: 2, engine_args: {max_model_len: 512}}
measurement:
  min_window_seconds: 0.2
  warmup: {max_batches: 2}
  baseline: {enabled: false, spot_check_seconds: 0}
execution: {n_cycles: 2, target_ci_pct: 0.001, max_cycles: 3}
"""


def test_a_configuration_short_of_its_target_gets_cycles_up_to_the_cap(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    write_study(pytester.path, "adaptive.llem.yaml", STUDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [
            "*adaptive.llem.yaml::llem-tiny-vllm::c0 PASSED*",
            "*adaptive.llem.yaml::llem-tiny-vllm::c1 PASSED*",
            "*adaptive.llem.yaml::llem-tiny-vllm::c2 PASSED*",
            "*llem: adaptive cycles*",
            "adaptive: target +-0.001 %, cap 3 cycles, 1 extra round(s)",
            "  llem-tiny-vllm: 2 -> 3 cycles, mj_per_tok_total +-*; cap of 3 cycles reached*",
        ]
    )
    data = manifest(pytester.path)
    assert data["measurement_protocol"]["n_cycles"] == 2
    assert data["measurement_protocol"]["max_cycles"] == 3 and data["measurement_protocol"]["target_ci_pct"] == 0.001
    extra = data["experiments"][-1]
    assert extra["experiment_id"] == "llem-tiny-vllm::c2" and extra["position"] == 3 and extra["status"] == "completed"
    assert extra["adaptive_reason"].startswith("round 1: mj_per_tok_total: interval +-")
    assert data["summary"]["completed"] == 3 and data["summary"]["unique_configurations"] == 1
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    summary = json.loads((study_dir / "summary.json").read_text())
    (stats,) = summary["groups"]
    assert stats["n_records"] == 3 and stats["metrics"]["mj_per_tok_total"]["n"] == 3


def test_under_xdist_only_the_planned_cycles_run_and_the_summary_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    write_study(pytester.path, "adaptive.llem.yaml", STUDY.replace("n_cycles: 2", "n_cycles: 1"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*adaptive cycles (target_ci_pct/max_cycles) need a serial run and did not run under pytest-xdist*"])


def test_a_cap_below_the_planned_cycles_is_an_error_naming_the_file_and_key(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "bad.llem.yaml", "model: llem-tiny\nexecution:\n  n_cycles: 5\n  max_cycles: 3\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines(["*bad.llem.yaml*execution*max_cycles (3) is below n_cycles (5)*"])
    assert result.ret != 0
