"""A study file's ``report.recommend``: answered at the session's end, kept in the manifest for
``python -m pytest_llem recommend DIR`` and the HTML report; a query that cannot parse stops the
study before any cell runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled

QUERY = "maximize avg_tokens_per_second where ttft_s.p50 <= 100"


def test_the_study_files_recommendation_is_printed_and_kept(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(
        pytester.path,
        "rec.llem.yaml",
        STUB_STUDY + f"sweep:\n  transformers.batch_size: [1, 2]\nexecution: {{n_cycles: 2}}\nreport:\n  recommend: '{QUERY}'\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert "llem: rec: recommendation (report.recommend)" in out
    assert "best: " in out
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    manifest = json.loads((study_dir / "manifest.json").read_text())
    assert manifest["report"] == {"recommend": QUERY, "by": []}
    # The command line answers the same question without being told it again.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_llem", "recommend", str(study_dir), "--json"],
        capture_output=True, text=True, timeout=scaled(600), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert "avg_tokens_per_second" in json.dumps(answer)


def test_a_report_query_that_cannot_parse_stops_the_study_naming_the_key(
    pytester: pytest.Pytester, stub_transformers: Path
) -> None:
    write_study(pytester.path, "bad.llem.yaml", STUB_STUDY + "report:\n  recommend: 'minimize mj_per_tok where itl <= 0.1'\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    out = result.stdout.str()
    assert "report.recommend" in out and "bad.llem.yaml" in out
    assert not (pytester.path / "results").exists()  # nothing ran
