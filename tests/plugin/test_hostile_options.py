"""Hostile numbers on the command line and in ini files, corrupt cached figures and a study name
that walks out of the project: each is one clear message (or a failed session), never a
traceback, a silent pass or a file written outside the project."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled

#: The options are read before any study is: a plain test is enough to show they are taken or refused.
PLAIN_TEST = "def test_nothing():\n    pass\n"

BAD_SECONDS = {
    "nan": "nan",
    "NaN": "NaN",
    "inf": "inf",
    "minus-inf": "-inf",
    "zero": "0",
    "minus-zero": "-0.0",
    "negative": "-5",
    "overflow": "1e999",
    "beyond-a-week": "604801",
    "word": "soon",
    "empty": "",
    "unit": "30s",
}


def _usage_error(result: pytest.RunResult, *names: str) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stderr.str() + result.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output
    for name in names:
        assert name in output
    return output


@pytest.mark.parametrize("form", ["equals", "separate"])
@pytest.mark.parametrize("value", list(BAD_SECONDS.values()), ids=list(BAD_SECONDS))
def test_a_cell_time_limit_must_be_a_positive_finite_number_of_seconds(pytester: pytest.Pytester, value: str, form: str) -> None:
    pytester.makepyfile(PLAIN_TEST)
    if form == "separate":  # argparse reads "-inf" as an option, not a value: still a usage error naming ours
        _usage_error(pytester.runpytest("--collect-only", "--llem-timeout", value), "--llem-timeout")
        return
    output = _usage_error(pytester.runpytest("--collect-only", f"--llem-timeout={value}"), "--llem-timeout", repr(value))
    assert "seconds" in output


@pytest.mark.parametrize("value", ["0.5", "30", "1e3", "604800"], ids=["fraction", "whole", "exponent", "a-week"])
def test_a_sane_cell_time_limit_is_taken(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(PLAIN_TEST)
    result = pytester.runpytest("--collect-only", f"--llem-timeout={value}")
    assert result.ret == pytest.ExitCode.OK
    assert pytester.runpytest("--collect-only", "--llem-timeout").ret == pytest.ExitCode.USAGE_ERROR  # no value at all


LIMIT_VALUES = {
    "two-points": "1.2.3",
    "double-point": "1..5",
    "nan": "nan",
    "inf": "inf",
    "minus-inf": "-inf",
    "overflow": "1e999",
    "empty": "",
}


@pytest.mark.parametrize("value", list(LIMIT_VALUES.values()), ids=list(LIMIT_VALUES))
def test_a_bad_number_in_a_command_line_limit_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(PLAIN_TEST)
    text = f"mj_per_tok_adjusted.max:{value}"
    _usage_error(
        pytester.runpytest("--collect-only", f"--llem-limit={text}"), "--llem-limit", repr(text), "expected", "finite number"
    )


@pytest.mark.parametrize("value", list(LIMIT_VALUES.values()), ids=list(LIMIT_VALUES))
def test_a_bad_number_in_an_ini_limit_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(PLAIN_TEST)
    text = f"avg_tokens_per_second.min:{value}"
    pytester.makeini(f"[pytest]\nllem_limits =\n    mj_per_tok_adjusted.max:50\n    {text}\n")
    _usage_error(pytester.runpytest("--collect-only"), "llem_limits", repr(text), "expected", "finite number")


RULES = {
    "two-points": "median:1.2.3",
    "double-point-percent": "median:1..5%",
    "nan": "median:nan",
    "inf-percent": "mj_per_tok_adjusted.median:inf%",
    "minus-inf-percent": "median:-inf%",
    "overflow": "median:1e999%",
    "empty-number": "median:",
    "empty": "",
}


@pytest.mark.parametrize("text", list(RULES.values()), ids=list(RULES))
def test_a_bad_number_in_a_compare_rule_is_a_usage_error(pytester: pytest.Pytester, text: str) -> None:
    pytester.makepyfile(PLAIN_TEST)
    _usage_error(
        pytester.runpytest("--collect-only", f"--llem-compare-fail={text}"), "--llem-compare-fail", repr(text), "expected"
    )


# ----------------------------------------------------------------------------- through whole runs

STUDY = STUB_STUDY + "execution: {n_cycles: 2}\n"
RULE = "--llem-compare-fail=avg_tokens_per_second.median:50%"


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("name", ["../../escape", "../../../../../escape"], ids=["two-up", "five-up"])
def test_a_study_name_cannot_write_outside_the_project(pytester: pytest.Pytester, stub_transformers: Path, name: str) -> None:
    write_study(pytester.path, "walk.llem.yaml", STUDY + f"name: {json.dumps(name)}\n")
    outside = pytester.path.parent
    before = set(outside.iterdir())
    # -p cacheprovider stays on: --llem-compare=last keeps each study's figures in pytest's cache
    result = pytester.runpytest_subprocess(
        "-p", "no:benchmark", "--llem-baseline-update", "--llem-compare=last", RULE, timeout=scaled(300)
    )
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*llem: {name}*", "*stub-ok-transformers::c1*completed*"])
    assert set(outside.iterdir()) == before
    values = pytester.path / ".pytest_cache" / "v"
    cached = [p for p in _files_under(values) if p.is_file() and "llem" in p.relative_to(values).parts]
    assert [p.parent for p in cached] == [values / "llem" / "last"]
    (baseline,) = (p for p in _files_under(pytester.path / ".llem-baselines") if p.is_file())
    assert baseline.parent.parent == pytester.path / ".llem-baselines"
    again = pytester.runpytest_subprocess("-p", "no:benchmark", "--llem-compare=last", RULE, timeout=scaled(300))
    assert again.ret == pytest.ExitCode.OK  # the figures cached under the safe key are found again
    again.stdout.fnmatch_lines(["*compared with the last run (pytest cache)*"])
    assert "NEW" not in again.stdout.str()


# Every shape is refused by the same check as a stored file (tests/verdicts/test_hostile_numbers.py
# runs them all); this shows the cache's route to it, with a NaN written into the cached figures.
def test_corrupt_figures_in_the_pytest_cache_fail_the_comparison_with_one_message(
    pytester: pytest.Pytester, stub_transformers: Path
) -> None:
    write_study(pytester.path, "gate.llem.yaml", STUDY)
    last = ("-p", "no:benchmark", "--llem-compare=last", RULE)
    assert pytester.runpytest_subprocess(*last, timeout=scaled(300)).ret == pytest.ExitCode.OK  # caches the figures
    (entry,) = (pytester.path / ".pytest_cache" / "v" / "llem" / "last").iterdir()
    data = json.loads(entry.read_text())
    data["configs"]["stub-ok-transformers"]["avg_tokens_per_second"][1] = math.nan
    entry.write_text(json.dumps(data))  # written as NaN, which json (and so pytest's cache) reads back
    result = pytester.runpytest_subprocess(*last, timeout=scaled(300))
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    output = result.stdout.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output
    result.stdout.fnmatch_lines(
        [
            "*gate: pytest cache entry llem/last/gate: configs.stub-ok-transformers.avg_tokens_per_second[[]1[]]:*",
            "*gate: REFUSED (unusable baseline)*",
        ]
    )
    assert "expected a finite number, got NaN; the last run's figures are unusable" in output
    healed = pytester.runpytest_subprocess(*last, timeout=scaled(300))  # the failed run cached good figures
    assert healed.ret == pytest.ExitCode.OK


def test_a_corrupt_stored_baseline_fails_the_session_with_one_message(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(pytester.path, "gate.llem.yaml", STUDY)
    run = ("-p", "no:cacheprovider", "-p", "no:benchmark")
    assert pytester.runpytest_subprocess(*run, "--llem-baseline-update", timeout=scaled(300)).ret == pytest.ExitCode.OK
    (stored,) = (pytester.path / ".llem-baselines").glob("*/gate.json")
    stored.write_text(stored.read_text()[: len(stored.read_text()) // 2])  # truncated, as by a bad merge
    result = pytester.runpytest_subprocess(*run, RULE, timeout=scaled(300))
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [f"*gate: {stored}: the stored baseline is unusable: not valid JSON*--llem-baseline-update*", "*REFUSED*"]
    )
