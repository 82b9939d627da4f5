"""The baseline workflow: NEW, update, pass, a real slowdown fails the session, noise does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugin.conftest import write_study

STUDY = """
model: stub-ok
precision: fp32
dataset: {n_prompts: 4}
max_output_tokens: 16
measurement:
  min_window_seconds: 0
  warmup: {max_batches: 2}
transformers: {batch_size: 2}
execution: {n_cycles: 4}
"""
RULE = "--llem-compare-fail=avg_tokens_per_second.median:50%"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", *args)


def test_the_whole_baseline_workflow(pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_STUB_STEP_SLEEP", "0.002")
    write_study(pytester.path, "gate.llem.yaml", STUDY)

    first = run(pytester, RULE)  # nothing stored yet: NEW, reported, not failed
    first.assert_outcomes(passed=4)
    assert first.ret == 0
    first.stdout.fnmatch_lines(["*gate: stub-ok-transformers: NEW (avg_tokens_per_second)*"])

    required = run(pytester, RULE, "--llem-baseline-required")
    assert required.ret == pytest.ExitCode.TESTS_FAILED

    update = run(pytester, "--llem-baseline-update")
    assert update.ret == 0
    (stored,) = (pytester.path / ".llem-baselines").glob("*/gate.json")
    assert stored.parent.name.startswith("cpu-")
    data = json.loads(stored.read_text())
    assert len(data["configs"]["stub-ok-transformers"]["avg_tokens_per_second"]) == 4

    unchanged = run(pytester, RULE)  # same speed, noisy: must not fail
    assert unchanged.ret == 0
    unchanged.stdout.re_match_lines([r".*gate: stub-ok-transformers: avg_tokens_per_second\.median .* (PASS|INCONCLUSIVE.*)$"])

    monkeypatch.setenv("LLEM_STUB_STEP_SLEEP", "0.02")  # ten times slower per step
    slower = run(pytester, RULE)
    slower.assert_outcomes(passed=4)  # every cell passed ...
    assert slower.ret == pytest.ExitCode.TESTS_FAILED  # ... and the session still fails
    slower.stdout.fnmatch_lines(["*llem: comparison with stored baselines*", "*regression(s)*", "*stub-ok-transformers: avg_tokens_per_second.median*REGRESSED*"])

    run(pytester, "--llem-baseline-update")  # accept the new speed
    assert run(pytester, RULE).ret == 0


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_comparing_across_hardware_is_refused(pytester: pytest.Pytester, stub_transformers: Path, workers: list[str]) -> None:
    write_study(pytester.path, "gate.llem.yaml", STUDY.replace("n_cycles: 4", "n_cycles: 1"))
    other = pytester.path / ".llem-baselines" / "1x-Fake_GPU-700W"
    other.mkdir(parents=True)
    (other / "gate.json").write_text(json.dumps({"configs": {}, "software": {}}))
    refused = run(pytester, RULE, *workers)
    assert refused.ret == pytest.ExitCode.TESTS_FAILED
    refused.stdout.fnmatch_lines(["*baseline exists only for other hardware (1x-Fake_GPU-700W)*refused*"])
    allowed = run(pytester, RULE, "--llem-compare-any-hardware", *workers)
    assert allowed.ret == 0
    allowed.stdout.fnmatch_lines(["*gate: compared across hardware (1x-Fake_GPU-700W)*", "*gate: stub-ok-transformers: NEW (avg_tokens_per_second)*"])


@pytest.mark.parametrize("text", ["median", "avg_tokens_per_second.avg:5%", "mj_per_tok.median:5%"])
def test_bad_compare_expressions_are_usage_errors(pytester: pytest.Pytester, text: str) -> None:
    write_study(pytester.path, "gate.llem.yaml", "model: llem-tiny\n")
    result = pytester.runpytest("--collect-only", f"--llem-compare-fail={text}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_compare_with_the_last_run_from_the_pytest_cache(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLEM_STUB_STEP_SLEEP", "0.002")
    write_study(pytester.path, "gate.llem.yaml", STUDY)
    last = ("-p", "no:benchmark", "--llem-compare=last", RULE)
    assert pytester.runpytest_subprocess(*last).ret == 0  # nothing cached yet: NEW
    same = pytester.runpytest_subprocess(*last)
    assert same.ret == 0
    same.stdout.fnmatch_lines(["*llem: comparison with the last run (pytest cache)*", "*gate: compared with the last run (pytest cache)*"])
    assert "comparison with stored baselines" not in same.stdout.str()
    same.stdout.re_match_lines([r".*stub-ok-transformers: .* (PASS|INCONCLUSIVE.*)$"])
    monkeypatch.setenv("LLEM_STUB_STEP_SLEEP", "0.02")
    slower = pytester.runpytest_subprocess(*last)
    assert slower.ret == pytest.ExitCode.TESTS_FAILED
    slower.stdout.fnmatch_lines(["*stub-ok-transformers: avg_tokens_per_second.median*REGRESSED*"])
