"""Absolute limits: a breach is a normal FAILED cell with metric, value, limit, YAML line and result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study


@pytest.mark.parametrize("workers", [[], ["-p", "no:benchmark", "-n", "2"]], ids=["serial", "xdist"])
def test_a_breached_limit_fails_the_cell_with_its_line(
    pytester: pytest.Pytester, stub_transformers: Path, workers: list[str]
) -> None:
    write_study(
        pytester.path,
        "limits.llem.yaml",
        STUB_STUDY
        + "expect:\n  avg_tokens_per_second: {min: 1.0e12}\n  request_latency_s.p95: {max: 1000}\nexecution: {n_cycles: 1}\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *workers)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*LimitBreached: 1 limit breached:*",
            "*avg_tokens_per_second = *, breaks avg_tokens_per_second >= 1e+12 tokens/s (limits.llem.yaml:10)*",
            "*result: */result.json*",
        ]
    )
    (study,) = (pytester.path / "results").iterdir()
    (entry,) = json.loads((study / "manifest.json").read_text())["experiments"]
    assert entry["status"] == "completed" and entry["verdict"] == "failed"
    assert len(entry["limit_breaches"]) == 1


def test_limits_that_hold_pass(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(pytester.path, "ok.llem.yaml", STUB_STUDY + "expect:\n  avg_tokens_per_second: {min: 1}\nexecution: {n_cycles: 1}\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-limit", "request_latency_s.max.max:100").assert_outcomes(passed=1)


def test_a_limit_on_energy_that_was_not_measured_fails_with_the_reason(
    pytester: pytest.Pytester, stub_transformers: Path
) -> None:
    write_study(pytester.path, "energy.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-limit=mj_per_tok_adjusted.max:50")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*mj_per_tok_adjusted <= 50 mJ/token (--llem-limit): not measured: inference ran on the CPU*"]
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mj_per_tok.max:5", "unknown metric 'mj_per_tok' (did you mean 'mj_per_tok_total'?)"),
        ("mj_per_tok_total<5", "expected METRIC.max:VALUE or METRIC.min:VALUE"),
        ("mj_per_tok_total.avg:5", "expected METRIC.max:VALUE or METRIC.min:VALUE"),
    ],
)
def test_bad_command_line_limits_are_usage_errors(pytester: pytest.Pytester, text: str, message: str) -> None:
    write_study(pytester.path, "any.llem.yaml", "model: llem-tiny\n")
    result = pytester.runpytest("--collect-only", f"--llem-limit={text}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_unknown_metric_in_expect_is_a_file_error(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "bad.llem.yaml", "model: llem-tiny\nexpect:\n  mj_per_token: {max: 5}\n")
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*bad.llem.yaml:3: expect.mj_per_token*unknown metric 'mj_per_token'*"])
