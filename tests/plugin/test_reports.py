"""A cell's figures reach the controller on its report (``report.llem``), and JUnit XML as properties."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study

#: Records, on the controller only, what each cell's call report carries under ``llem``.
RECORDING_CONFTEST = """
import json, os

def pytest_runtest_logreport(report):
    if report.when == "call" and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open("figures.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps({"nodeid": report.nodeid, "llem": getattr(report, "llem", "missing")}) + "\\n")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_cell_figures_reach_the_controller_and_junit_xml(
    pytester: pytest.Pytester, stub_transformers: Path, workers: list[str]
) -> None:
    write_study(pytester.path, "figs.llem.yaml", STUB_STUDY + "expect:\n  avg_tokens_per_second: {min: 1}\nexecution: {n_cycles: 2}\n")
    pytester.makeconftest(RECORDING_CONFTEST)
    plain = pytester.makepyfile(test_plain="def test_ok(): pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:benchmark", "--junitxml=junit.xml", *workers, "figs.llem.yaml", plain.name
    )
    result.assert_outcomes(passed=3)
    seen = {e["nodeid"]: e["llem"] for e in map(json.loads, (pytester.path / "figures.jsonl").read_text().splitlines())}
    assert seen.pop("test_plain.py::test_ok") == "missing", "only cells carry figures"
    assert sorted(seen) == ["figs.llem.yaml::stub-ok-transformers::c0", "figs.llem.yaml::stub-ok-transformers::c1"]
    for nodeid, figures in seen.items():
        assert figures["experiment_id"] == nodeid.split("::", 1)[1]
        assert figures["total_tokens"] == 16 and figures["avg_tokens_per_second"] > 0
        assert Path(figures["cell_dir"]).is_dir()
        assert figures["limits"] == ["avg_tokens_per_second >= 1 tokens/s"] and figures["limit_breaches"] == []
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    properties = {c.get("name"): {p.get("name") for p in c.iter("property")} for c in cases}
    # A CPU cell has no energy: only its throughput is a property (no property holding "None").
    assert properties["c0"] == properties["c1"] == {"llem_avg_tokens_per_second"}
    assert properties["test_ok"] == set()


def test_a_figure_a_cell_could_not_make_is_no_junit_property() -> None:
    """JUnit XML wrote the text "None" for a CPU cell's energy; such a property is left out."""
    from pytest_llem.report.cell import junit_properties

    assert junit_properties({"mj_per_tok_total": None, "avg_tokens_per_second": 812.5}) == [("llem_avg_tokens_per_second", 812.5)]
