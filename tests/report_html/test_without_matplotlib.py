"""The core plugin works without matplotlib; asking for a report without it is a usage error naming the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llem.cli import main
from tests.test_cli import make_study
from tests.timing import scaled

EXTRA = "pip install 'pytest-llem[plot]'"


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib as if not installed: None in sys.modules makes both import and find_spec fail to find it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.mark.usefixtures("no_matplotlib")
@pytest.mark.parametrize("how", ["option", "ini"])
def test_asking_for_the_report_without_matplotlib_is_a_usage_error(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(test_plain="def test_ok(): pass\n")
    if how == "ini":
        pytester.makeini("[pytest]\nllem_report = html\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *(["--llem-report=html"] if how == "option" else []))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "draws its figures with matplotlib, which is not installed" in err and EXTRA in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("no_matplotlib")
def test_without_the_report_the_plugin_does_not_need_matplotlib(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_ok(): pass\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_an_unknown_report_format_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nllem_report = pdf\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "llem_report must be 'html', got 'pdf'" in result.stderr.str()
    result = pytester.runpytest("-p", "no:cacheprovider", "--llem-report=pdf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--llem-report: invalid choice: 'pdf'" in result.stderr.str()


@pytest.mark.usefixtures("no_matplotlib")
def test_the_report_command_without_matplotlib_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = make_study(tmp_path)
    assert main(["report", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m pytest_llem report: error:") and EXTRA in err
    assert not (study / "report.html").exists()


def test_loading_the_plugin_imports_no_matplotlib() -> None:
    code = "import sys, pytest_llem.plugin, pytest_llem.session, pytest_llem.cli; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=scaled(120)).stdout
    assert out.strip() == "[]"
