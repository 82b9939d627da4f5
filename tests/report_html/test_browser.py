"""The report in a real headless Chromium: it loads offline with no console error, and every figure renders.

Needs a Chromium binary (Debian: ``apt-get install -y chromium``; elsewhere ``$LLEM_CHROMIUM``
names one); the tests skip, saying so, only when there is none.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (pip install 'pytest-llem[plot]')")

from pytest_llem.report.html import CSP
from pytest_llem.report.study_report import write_report
from tests.report_html.browser import Browser, chromium_binary
from tests.test_cli import make_study

#: Each image's state once the page has loaded: decoded, its intrinsic and its displayed size.
IMAGES = """Array.from(document.images).map(i => ({
    complete: i.complete, natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
    height: i.getBoundingClientRect().height, alt: i.alt}))"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary on the PATH (apt-get install -y chromium, or set LLEM_CHROMIUM)")
    opened = Browser(binary, tmp_path / "chromium-profile")
    try:
        yield opened
    finally:
        opened.close()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_gpu_study_report_loads_offline_and_every_figure_renders(
    browser: Browser, timeline_study: Path, adaptive_study: Path, tmp_path: Path
) -> None:
    page = write_report([timeline_study, adaptive_study], tmp_path / "report.html").page
    browser.open(page.as_uri())
    assert browser.errors() == []
    images = browser.evaluate(IMAGES)
    assert len(images) == 6, images  # 2 Pareto, energy by configuration, drift, telemetry of each timeline cell
    for image in images:
        assert image["complete"] and image["natural"] > 0, image
        assert image["shown"] > 300 and image["height"] > 100, image
    assert browser.evaluate("document.querySelectorAll('tbody tr').length") > 10
    assert browser.evaluate("document.title") == "pytest-llem report: adaptive + engines-llama3-8b"
    shot = tmp_path / "shot.png"
    browser.screenshot(shot)
    width, height = png_size(shot)
    assert width == 1280 and height > 500


def test_a_hostile_config_id_runs_no_script(browser: Browser, tmp_path: Path) -> None:
    hostile = "<img src=x onerror=document.title='pwned'>"
    page = write_report([make_study(tmp_path, energies={hostile: [1500.0, 1510.0], "ok": [1000.0, 1001.0]})]).page
    browser.open(page.as_uri())
    assert browser.evaluate("document.title") != "pwned"
    assert browser.evaluate("Array.from(document.images).every(i => i.src.startsWith('data:image/svg+xml'))")
    assert hostile in browser.evaluate("document.body.innerText")
    assert browser.errors() == []


def test_the_check_sees_a_page_that_fetches(browser: Browser, tmp_path: Path) -> None:
    """The same check fails a page that reaches out: its policy blocks the fetch and the browser says so."""
    page = tmp_path / "fetching.html"
    page.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}"></head>'
        '<body><img src="https://cdn.example.invalid/plot.png"><img src="missing.svg"></body></html>',
        encoding="utf-8",
    )
    browser.open(page.as_uri())
    errors = browser.errors()
    assert any("cdn.example.invalid" in e for e in errors) and any("missing.svg" in e for e in errors), errors
    assert [i["natural"] for i in browser.evaluate(IMAGES)] == [0, 0]
