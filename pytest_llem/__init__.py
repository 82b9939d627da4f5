"""pytest-llem: the energy efficiency of LLM inference, measured as pytest tests.

Write a study in ``*.llem.yaml`` and run ``pytest studies/my.llem.yaml``: every cell of the
sweep becomes a test that runs in its own process and leaves a scientific record on disk.

From Python (see :mod:`pytest_llem.api`)::

    from pytest_llem import run_study, load_results

    result = run_study("studies/my.llem.yaml")
    rows = result.to_rows()

The public names are imported on first use: this module is imported by the pytest plugin's
entry point, so it must stay free of heavy imports (pydantic, numpy, scipy, torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_llem.version import __version__

__all__ = ["CellProgress", "StudyResult", "__version__", "group_records", "load_results", "run_study", "summarise", "summarise_groups"]

if TYPE_CHECKING:
    from pytest_llem.api import CellProgress, StudyResult, load_results, run_study
    from pytest_llem.verdicts.statistics import (
        group_records,
        summarise,
        summarise_groups,
    )

#: Lazily exported names and the modules that define them.
_LAZY: dict[str, str] = {
    "run_study": "pytest_llem.api",
    "CellProgress": "pytest_llem.api",
    "load_results": "pytest_llem.api",
    "StudyResult": "pytest_llem.api",
    "summarise_groups": "pytest_llem.verdicts.statistics",
    "group_records": "pytest_llem.verdicts.statistics",
    "summarise": "pytest_llem.verdicts.statistics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
