"""The HTML report: what the page says, that it fetches nothing, escapes what studies hold, links to the records."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (pip install 'pytest-llem[plot]')")

from pytest_llem.cli import main
from pytest_llem.report.study_report import configurations, write_page, write_report
from pytest_llem.results.loader import load_results
from tests.test_cli import make_study


class Links(HTMLParser):
    """Every URL the page names (href and src), and every element's tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value for name, value in attrs if name in ("href", "src") and value]


def parse(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text(encoding="utf-8"))
    return links


def test_a_gpu_study_report_answers_what_was_measured_and_on_what(timeline_study: Path) -> None:
    written = write_report([timeline_study])
    page = written.page
    assert page == timeline_study / "report.html"
    text = page.read_text(encoding="utf-8")
    for expected in ("transformers-n64", "vllm-n64", "NVIDIA H200", "580.159.04", "5.17.0", "power_capped"):
        assert expected in text, expected
    links = parse(page)
    local = [unquote(u) for u in links.urls if not u.startswith("data:")]
    assert not [u for u in local if re.match(r"^[a-z]+:", u)], "no URL with a scheme: nothing is fetched or linked remotely"
    records = [u for u in local if u.endswith("result.json")]
    assert len(records) == 2 and all((page.parent / u).is_file() for u in records), "relative links reach the records"
    assert all((page.parent / u).is_file() for u in local), "every local link resolves"
    images = [u for u in links.urls if u.startswith("data:image/svg+xml;base64,")]
    # Two Pareto figures, energy by configuration, one telemetry figure per cell; one cycle each: no drift.
    assert len(images) == 5 and len(written.plots) == 10
    assert all(p.stat().st_size > 1000 for p in written.plots)
    assert {p.suffix for p in written.plots} == {".svg", ".png"}
    assert "No drift figure" in text
    assert 'http-equiv="Content-Security-Policy"' in text and "script" not in links.tags


def test_what_a_study_names_is_shown_never_run(tmp_path: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    study = make_study(tmp_path, name="<b>bold</b> & co", energies={hostile: [1500.0, 1510.0], "plain": [1000.0, 1004.0]})
    page = write_report([study]).page
    text = page.read_text(encoding="utf-8")
    assert hostile not in text and "<b>bold</b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in text
    links = parse(page)
    assert all(u.startswith("data:") or not u.startswith("x") for u in links.urls)
    assert links.tags.count("img") == len([u for u in links.urls if u.startswith("data:image/svg+xml")])


def test_several_studies_make_one_page_with_configurations_apart(
    tmp_path: Path, timeline_study: Path, adaptive_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "both" / "merged.html"
    status = main(["report", str(timeline_study), str(adaptive_study), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert status == 0, stderr
    assert f"report: {out}" in stdout
    text = out.read_text(encoding="utf-8")
    for name in ("engines-llama3-8b", "adaptive", "bs32", "bs128", "vllm-n64"):
        assert name in text
    # Figures named after their page, so a study's own report.html beside it keeps its own.
    assert all(p.name.startswith("merged-") for p in (out.parent / "plots").iterdir())
    # The drift figure exists now: bs32 and bs128 ran three cycles.
    assert 'id="drift"' in text and "<th>study</th>" in text


def test_where_adds_a_recommendation(adaptive_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["report", str(adaptive_study), "--where", "itl_s.p50 <= 0.01"])
    assert status == 0, capsys.readouterr().err
    text = (adaptive_study / "report.html").read_text(encoding="utf-8")
    assert "<h2>Recommendation</h2>" in text
    assert "<b>Best: bs32</b>" in text, "bs128's ITL median (0.0147 s) breaks the condition"
    assert "minimize mj_per_tok_adjusted where itl_s.median &lt;= 0.01 s" in text


def test_a_bad_query_is_a_usage_error_and_writes_nothing(adaptive_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["report", str(adaptive_study), "--where", "itl_s.p5 <= 0.1"])
    err = capsys.readouterr().err
    assert status == 2
    assert "unknown metric 'itl_s.p5'" in err and "itl_s.p95" in err and "Traceback" not in err
    assert not (adaptive_study / "report.html").exists()


def test_a_missing_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert f"study directory {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


def test_the_gate_verdicts_and_failed_cells_are_on_the_page(tmp_path: Path) -> None:
    study = make_study(tmp_path, energies={"fp16": [1500.0, 1510.0, 1490.0]}, failed=True)
    result = load_results(study)
    gate = ["demo: fp16: mj_per_tok_adjusted.median regressed by 12.0 % (> 5 %) <p=0.01>"]
    page = write_page(result, configurations(result), study / "report.html", gate_lines=gate).page
    text = page.read_text(encoding="utf-8")
    assert "<h2>Regression gate</h2>" in text and "regressed by 12.0 % (&gt; 5 %) &lt;p=0.01&gt;" in text
    assert "broken::c0" in text and "CellCrashed: RuntimeError: stub model refuses to load" in text
    assert "traceback..." not in text, "a failed cell's reason is its first line"


def test_fifty_configurations_make_one_readable_page(tmp_path: Path) -> None:
    energies = {f"bf16-batch-size-{i:03d}-with-a-long-descriptive-name": [1000.0 + i, 1003.0 + i] for i in range(50)}
    written = write_report([make_study(tmp_path, energies=energies)])
    text = written.page.read_text(encoding="utf-8")
    assert text.count("bf16-batch-size-0") >= 50, "every configuration has its row, full name in the table"
    assert any(p.name == "energy-by-configuration.png" for p in written.plots)
    assert "No telemetry figure" in text
