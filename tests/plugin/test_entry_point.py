"""The pytest11 entry point: loaded once under one name, however it is asked for, and cheap to load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study


def test_p_names_the_installed_entry_point_and_loads_it_once(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    # With the package installed, `-p pytest_llem.plugin` registers the module first; the entry
    # point, named alike, is then skipped instead of registering the module a second time.
    write_study(pytester.path, "once.llem.yaml", STUB_STUDY + "execution: {n_cycles: 1}\n")
    result = pytester.runpytest_subprocess("-p", "pytest_llem.plugin", "-p", "no:cacheprovider", "-p", "no:benchmark")
    assert "already registered" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*llem: once*", "*results: *"])


def test_p_no_disables_the_plugin(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "off.llem.yaml", "model: llem-tiny\n")
    result = pytester.runpytest_subprocess("-p", "no:pytest_llem.plugin", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "off.llem.yaml" not in result.stdout.str()


def test_a_run_without_studies_leaves_the_study_machinery_unimported(pytester: pytest.Pytester) -> None:
    # The plugin is loaded into every pytest run of the environment: a plain test suite must not
    # pay for the study grammar (pydantic behind it) or the runner.
    pytester.makeconftest(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    loaded = [m for m in ('pytest_llem.nodes', 'pytest_llem.execution.study_run', 'pytest_llem.study.study')"
        " if m in sys.modules]\n"
        "    print('LOADED', loaded)\n"
    )
    pytester.makepyfile(test_plain="def test_ok(): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*LOADED []*"])
