"""The session's command-line options and ini keys that are checked before any cell runs.

A bad limit, comparison rule or report format is a usage error at start-up, not at the first cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_llem.verdicts.compare import CompareRule
    from pytest_llem.verdicts.limits import Limit


def command_line_limits(config: pytest.Config) -> list[Limit]:
    """Limits from ``--llem-limit`` and the ``llem_limits`` ini key; a bad one is a usage error."""
    if not (config.getoption("llem_limits") or config.getini("llem_limits")):
        return []
    from pytest_llem.errors import LimitSyntaxError
    from pytest_llem.verdicts.limits import parse_cli_limit

    limits = []
    sources = [(t, "--llem-limit") for t in config.getoption("llem_limits")]
    sources += [(t, "ini llem_limits") for t in config.getini("llem_limits")]
    for text, source in sources:
        try:
            limits.append(parse_cli_limit(text, source))
        except LimitSyntaxError as exc:
            raise pytest.UsageError(str(exc)) from None
    return limits


def compare_rules(config: pytest.Config) -> list[CompareRule]:
    """``--llem-compare-fail`` rules; a bad one is a usage error."""
    if not config.getoption("llem_compare_fail"):
        return []
    from pytest_llem.errors import LimitSyntaxError
    from pytest_llem.verdicts.compare import parse_rule

    try:
        return [parse_rule(text) for text in config.getoption("llem_compare_fail")]
    except LimitSyntaxError as exc:
        raise pytest.UsageError(str(exc)) from None


def report_format(config: pytest.Config) -> str | None:
    """``--llem-report``, else the ini key; html without matplotlib is a usage error naming the extra."""
    chosen = config.getoption("llem_report") or config.getini("llem_report") or None
    if chosen is None:
        return None
    if chosen != "html":
        raise pytest.UsageError(f"llem_report must be 'html', got {chosen!r}")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise pytest.UsageError(
            "--llem-report=html draws its figures with matplotlib, which is not installed:"
            " pip install 'pytest-llem[plot]' (or pip install matplotlib)"
        )
    return str(chosen)
