"""pytest nodes: a study file, its configurations, and one item per cycle.

``studies/sweep.llem.yaml::transformers-bs8-bf16::c0`` is a cell: the configuration collector's
name makes ``-k`` match on swept values, and ``pytest file::config`` runs every cycle of it.
The cell is a :class:`pytest.Function` built with ``callobj=``, so fixtures resolve through
pytest's public machinery and a conftest can override them.
"""

from __future__ import annotations

import functools
import gc
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ExceptionInfo, TerminalRepr

from pytest_llem.errors import CellEngineUnavailable, CellError, LimitBreached, StudyError
from pytest_llem.study.study import LARGE_STUDY_CELLS, Configuration, Study, load_study


class LlemStudyWarning(pytest.PytestWarning):
    """Something about a study deserves a look but does not stop it (e.g. a huge sweep)."""


@functools.lru_cache(maxsize=1024)
def _mark_key(dotted_path: str) -> str:
    """A swept field's dotted path as a keyword name (a sweep has few paths and many cells)."""
    return re.sub(r"\W", "_", dotted_path)


def _mark_kwargs(configuration: Configuration, cycle: int) -> dict[str, Any]:
    """Keyword arguments of ``pytest.mark.llem``: identifiers, so ``-m "llem(engine='vllm')"`` works."""
    kwargs: dict[str, Any] = {"cycle": cycle, "engine": configuration.engine}
    config = configuration.config
    if config is not None:
        kwargs.update(model=config.model, precision=config.precision)
    for path, value in configuration.swept.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            kwargs[_mark_key(path)] = value
    return kwargs


def llem_cell(llem_run_cell: Any) -> None:
    """The test function of every cell: run it through the (overridable) runner fixture."""
    llem_run_cell()


class CellItem(pytest.Function):
    """One cycle of one configuration."""

    study: Study
    configuration: Configuration
    cycle: int
    position: int  # 1-based place in the study's full run order
    #: The cell's figures once it ran (see report/cell.py), None before or if it did not run:
    #: what ``report.llem``, JUnit properties and pytest-json-report's metadata carry.
    llem_report: dict[str, Any] | None = None

    def setup_cell(self, study: Study, configuration: Configuration, cycle: int, position: int) -> None:
        self.study = study
        self.configuration = configuration
        self.cycle = cycle
        self.position = position
        self.add_marker(pytest.mark.llem(**_mark_kwargs(configuration, cycle)))
        if configuration.skip_reason:
            self.add_marker(pytest.mark.skip(reason=f"invalid combination: {configuration.skip_reason}"))
        raw_model = str(configuration.raw.get("model", ""))
        self.extra_keyword_matches.update({raw_model, configuration.engine})

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.study.path, self.configuration.line - 1, f"{self.configuration.config_id} cycle {self.cycle}"

    def repr_failure(self, excinfo: ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        exc = excinfo.value
        if isinstance(exc, LimitBreached):
            return f"LimitBreached: {exc}"
        if isinstance(exc, CellError):
            parts = [f"{type(exc).__name__}: {exc}"]
            if exc.child_traceback and not isinstance(exc, CellEngineUnavailable):  # its message says it all
                parts.append("--- traceback in the cell's process ---\n" + exc.child_traceback.rstrip())
            return "\n".join(parts)
        return super().repr_failure(excinfo)

    def _traceback_filter(self, excinfo: ExceptionInfo[BaseException]) -> Any:
        return excinfo.traceback


class ConfigurationCollector(pytest.Collector):
    """All cycles of one configuration."""

    study: Study
    configuration: Configuration

    def collect(self) -> Iterator[pytest.Item]:
        study, configuration = self.study, self.configuration
        for cycle in range(study.execution.n_cycles):
            yield self.make_cell(cycle, study.position(configuration, cycle))

    def make_cell(self, cycle: int, position: int) -> CellItem:
        """The item of one cycle: a planned one, or an adaptive one decided on after the planned cycles."""
        study_file = self.parent if isinstance(self.parent, StudyFile) else None
        shared = study_file.cell_fixtureinfo if study_file is not None else None
        item = CellItem.from_parent(self, name=self.study.cycle_name(cycle), callobj=llem_cell, fixtureinfo=shared)
        if study_file is not None and shared is None:
            study_file.cell_fixtureinfo = item._fixtureinfo
        item.setup_cell(self.study, self.configuration, cycle, position)
        return item

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.study.path, self.configuration.line - 1, self.configuration.config_id


def _keep_out_of_garbage_collection() -> None:
    """Leave what is alive now, a large study just loaded above all, out of every later cyclic collection.

    A loaded study holds some 26 objects the cyclic garbage collector tracks per configuration
    (its pydantic models, their field sets); with 50,000 configurations every collection walks
    them again, both the collections triggered while the cells are made and the five full ones
    pytest runs at exit: on a 100,000-cell sweep this was more than half of the time to collect.
    The study lives until the session ends, so walking it can never free anything. Loading makes
    no reference cycles, so ``gc.freeze`` keeps nothing of its own alive; garbage cycles from
    before, not yet found, are kept (a few objects at most). Frozen objects leave
    ``gc.get_objects()``, so this is done for large studies only (above ``LARGE_STUDY_CELLS``),
    where the time it saves is counted in tens of seconds.
    """
    gc.freeze()


def _check_report_query(study: Study) -> None:
    """``report.recommend`` must parse before any cell runs: its answer comes at the session's end."""
    if study.report.recommend is None:
        return
    from pytest_llem.errors import LimitSyntaxError
    from pytest_llem.report.recommend import parse_query

    try:
        parse_query(study.report.recommend)
    except LimitSyntaxError as exc:
        raise StudyError(str(study.path), [f"{study.path}: report.recommend: {exc}"]) from None


class StudyFile(pytest.File):
    """A ``*.llem.yaml`` file: a study."""

    #: The fixture closure of the cell function, resolved for the file's first cell and handed to
    #: every other one (``Function(fixtureinfo=...)``, as pytest's own parametrize does). Resolving
    #: it per cell inspects the function's signature and walks the fixture tree each time: half
    #: of a large sweep's collection. Every cell of one file has the same function, the same
    #: conftests above it and no fixture of its own, so the closure is the same for all of them.
    cell_fixtureinfo: Any = None

    def collect(self) -> Iterator[pytest.Collector]:
        study = load_study(self.path)
        _check_report_query(study)
        if len(study.configurations) * study.execution.n_cycles > LARGE_STUDY_CELLS:
            _keep_out_of_garbage_collection()
        for warning in study.warnings:
            self.warn(LlemStudyWarning(warning))
        for configuration in study.configurations:
            collector = ConfigurationCollector.from_parent(self, name=configuration.config_id)
            collector.study = study
            collector.configuration = configuration
            yield collector

    def repr_failure(self, excinfo: ExceptionInfo[BaseException]) -> str | TerminalRepr:  # type: ignore[override]
        if isinstance(excinfo.value, StudyError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

