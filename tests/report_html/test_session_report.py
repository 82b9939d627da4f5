"""``pytest --llem-report=html``: the session writes each study's report.html; a report that fails fails no test."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (pip install 'pytest-llem[plot]')")

from tests.plugin.conftest import STUB_STUDY, stub_transformers, write_study  # noqa: F401

#: Makes one study's page unwritable for real: a directory where its ``report.html`` goes, put
#: there after the cells ran and before the terminal summary (where the reports are written).
BLOCKING_CONFTEST = """
from pathlib import Path

def pytest_sessionfinish(session):
    for study_dir in Path("results").glob("blocked_*"):
        (study_dir / "report.html").mkdir()
"""


@pytest.mark.usefixtures("stub_transformers")
def test_the_session_writes_each_report_and_a_failed_one_fails_no_test(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "good.llem.yaml", STUB_STUDY + "execution: {n_cycles: 2}\n")
    write_study(pytester.path, "blocked.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1}\n")
    pytester.makeconftest(BLOCKING_CONFTEST)
    pytester.makeini("[pytest]\nllem_report = html\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:benchmark", "good.llem.yaml", "blocked.llem.yaml"
    )  # fmt: skip
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.OK, "a report is a reading of results on disk: its failure fails no test"
    (good,) = (pytester.path / "results").glob("good_*")
    (blocked,) = (pytester.path / "results").glob("blocked_*")
    result.stdout.fnmatch_lines([
        "*- llem: report -*", f"report: {good / 'report.html'}",
        "*- llem: report not written -*", f"{blocked}: IsADirectoryError: *report.html*",
    ])  # fmt: skip
    text = (good / "report.html").read_text(encoding="utf-8")
    assert "<h2>Configurations</h2>" in text and "<h2>Cells</h2>" in text
    assert text.count("result.json") == 2, "one link per cell's record"
    # A CPU study has no energy: the page says why it has no figure rather than showing empty axes.
    assert "No energy figures: no configuration has a value of mj_per_tok_total" in text
    assert "<img" not in text and not (good / "plots").exists()
    assert not list(blocked.glob(".report.html.*")), "no temporary file left behind"
