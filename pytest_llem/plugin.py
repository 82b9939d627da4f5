"""The pytest11 entry point: options, collection, ordering, reporting.

Every pytest run in the user's environment imports this module, so it stays import-light:
pydantic, the study grammar and the runner are imported only once a ``*.llem.yaml`` file is
collected, and torch/transformers/vllm/zeus only ever inside a cell's child process.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.study.files import is_study_file

if TYPE_CHECKING:
    from pytest_llem.execution.idle_power import SessionIdlePower
    from pytest_llem.execution.study_run import StudyRun
    from pytest_llem.nodes import CellItem
    from pytest_llem.verdicts.finalize import FinalizedStudy

SESSION_PLUGIN_NAME = "llem-session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "pytest-llem: energy efficiency of LLM inference")
    group.addoption(
        "--llem-results-dir",
        dest="llem_results_dir",
        default=None,
        metavar="DIR",
        help="Where study results go (default: the study's output.results_dir, else ./results).",
    )
    group.addoption(
        "--llem-timeout",
        dest="llem_timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Time limit per cell, overriding execution.experiment_timeout_seconds.",
    )
    group.addoption(
        "--llem-limit",
        dest="llem_limits",
        action="append",
        default=[],
        metavar="METRIC.max:N",
        help="A limit every cell must meet, e.g. mj_per_tok_adjusted.max:50 or avg_tokens_per_second.min:1000"
        " (repeatable; adds to the study's expect:).",
    )
    group.addoption(
        "--llem-compare-fail",
        dest="llem_compare_fail",
        action="append",
        default=[],
        metavar="[METRIC.]STAT:N[%]",
        help="Fail the session when a configuration regressed against the stored baseline by more than N"
        " (percent with %%), supported by its cycles; e.g. mj_per_tok_adjusted.median:5%% (repeatable).",
    )
    group.addoption(
        "--llem-compare",
        dest="llem_compare",
        choices=("stored", "last"),
        default="stored",
        help="What --llem-compare-fail compares with: the stored baseline (default), or the previous run"
        " kept in pytest's cache (last).",
    )
    group.addoption(
        "--llem-baseline-update",
        dest="llem_baseline_update",
        action="store_true",
        help="Store this run's per-cycle figures as the baseline (completed, passing cells).",
    )
    group.addoption(
        "--llem-baseline-dir",
        dest="llem_baseline_dir",
        default=None,
        metavar="DIR",
        help="Where stored baselines live (default: .llem-baselines under the rootdir; commit it).",
    )
    group.addoption(
        "--llem-baseline-required",
        dest="llem_baseline_required",
        action="store_true",
        help="A configuration with no stored baseline (NEW) fails the session instead of being reported.",
    )
    group.addoption(
        "--llem-compare-any-hardware",
        dest="llem_compare_any_hardware",
        action="store_true",
        help="Allow comparing with a baseline stored on other hardware.",
    )
    group.addoption(
        "--llem-missing-engine",
        dest="llem_missing_engine",
        choices=("fail", "skip"),
        default=None,
        help="What a cell whose engine cannot run here does (package not installed, too few GPUs):"
        " fail (default) or skip, with the reason either way. Also the ini key llem_missing_engine.",
    )
    parser.addini("llem_results_dir", "Default results directory of pytest-llem studies.", default=None)
    parser.addini(
        "llem_missing_engine", "fail or skip: cells whose engine cannot run here (default fail).", default="fail"
    )
    parser.addini("llem_limits", "Limits every cell must meet (one METRIC.max:N per line).", type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "llem(cycle, engine, model, precision, **swept_fields): a pytest-llem cell; select with"
        " -m \"llem(engine='vllm', cycle=0)\"",
    )
    session = LlemSession(config)
    session.cli_limits = _command_line_limits(config)
    session.compare_rules = _compare_rules(config)
    config.pluginmanager.register(session, SESSION_PLUGIN_NAME)
    session.missing_engine_policy()  # a bad ini value is a usage error now, not at the first cell
    if config.pluginmanager.hasplugin("xdist"):
        from pytest_llem.xdist import XdistCoordination

        config.pluginmanager.register(XdistCoordination(session), "llem-xdist")


def _command_line_limits(config: pytest.Config) -> list[Any]:
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


def _compare_rules(config: pytest.Config) -> list[Any]:
    """``--llem-compare-fail`` rules; a bad one is a usage error."""
    if not config.getoption("llem_compare_fail"):
        return []
    from pytest_llem.errors import LimitSyntaxError
    from pytest_llem.verdicts.compare import parse_rule

    try:
        return [parse_rule(text) for text in config.getoption("llem_compare_fail")]
    except LimitSyntaxError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_study_file(file_path):
        from pytest_llem.nodes import StudyFile

        return StudyFile.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def llem_idle_baseline(request: pytest.FixtureRequest) -> SessionIdlePower:
    """Idle power per GPU for the whole session, measured once and cached (see baselines.py).

    Under pytest-xdist, per worker: the GPU the controller gave it. Override in a conftest to
    supply baselines of your own, or to disable them (return None).
    """
    from pytest_llem.execution.idle_power import SessionIdlePower

    session: LlemSession = request.config.pluginmanager.getplugin(SESSION_PLUGIN_NAME)
    return SessionIdlePower(gpu_uuid=session.gpu_uuid)


@pytest.fixture
def llem_run_cell(request: pytest.FixtureRequest, llem_idle_baseline: SessionIdlePower | None) -> Callable[[], None]:
    """Runs the requesting cell in its own process; override in a conftest to wrap it."""
    session: LlemSession = request.config.pluginmanager.getplugin(SESSION_PLUGIN_NAME)
    node = request.node
    return lambda: session.run_cell(node, llem_idle_baseline)


def _is_cell(item: pytest.Item) -> bool:
    from pytest_llem.nodes import CellItem

    return isinstance(item, CellItem)


class LlemSession:
    """Per-session state: the studies being run, their directories and outcomes."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.runs: dict[Path, StudyRun] = {}
        self.cli_limits: list[Any] = []
        self.compare_rules: list[Any] = []
        self.gate_lines: list[str] = []  # the regression section of the terminal summary
        # Under pytest-xdist the controller hands every worker one stamp (so they share each
        # study's directory) and one GPU; serially both are this process's own.
        workerinput: dict[str, Any] = getattr(config, "workerinput", {})
        self.is_worker = bool(workerinput)
        self.stamp: str | None = workerinput.get("llem_stamp")
        self.gpu_uuid: str | None = workerinput.get("llem_gpu_uuid")
        self.study_dirs: list[Path] = []  # every study directory this session wrote to
        self._finalized: list[FinalizedStudy] | None = None

    def results_root(self, item: CellItem) -> Path:
        chosen = (
            self.config.getoption("llem_results_dir")
            or self.config.getini("llem_results_dir")
            or (item.configuration.config.output.results_dir if item.configuration.config else None)
            or "results"
        )
        root = Path(chosen)
        return root if root.is_absolute() else self.config.rootpath / root

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Put cells in their studies' run order; other tests keep their places."""
        slots = [i for i, item in enumerate(items) if _is_cell(item)]
        if slots and vars(self.config.option).get("reruns"):
            raise pytest.UsageError(
                "--reruns (pytest-rerunfailures) would rerun failing llem cells until one passes, laundering"
                " energy regressions and limit breaches; run studies without it, or leave them out with -m 'not llem'"
            )
        cells: list[CellItem] = [items[i] for i in slots]  # type: ignore[misc]
        study_rank: dict[Path, int] = {}
        for cell in cells:
            study_rank.setdefault(cell.study.path, len(study_rank))
        cells.sort(key=lambda c: (study_rank[c.study.path], c.position))
        for slot, cell in zip(slots, cells):
            items[slot] = cell

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.config.option.collectonly:
            return
        from pytest_llem.execution.study_run import CellRef, StudyRun
        from pytest_llem.nodes import CellItem
        from pytest_llem.results.writer import utc_stamp

        by_study: dict[Path, list[CellItem]] = {}
        for item in session.items:
            if isinstance(item, CellItem):
                by_study.setdefault(item.study.path, []).append(item)
        if not by_study:
            return
        self.stamp = self.stamp or utc_stamp()
        for path, items in by_study.items():
            refs = [CellRef(i.configuration, i.cycle, i.position, i.nodeid) for i in items]
            run = StudyRun.create(
                items[0].study, refs, self.results_root(items[0]), self.stamp, self.config.getoption("llem_timeout"),
                shared=self.is_worker,
            )  # fmt: skip
            self.runs[path] = run
            self.study_dirs.append(run.study_dir)

    def missing_engine_policy(self) -> str:
        """``--llem-missing-engine``, else the ini key, else fail; a bad ini value is a usage error."""
        chosen = self.config.getoption("llem_missing_engine") or self.config.getini("llem_missing_engine") or "fail"
        if chosen not in ("fail", "skip"):
            raise pytest.UsageError(f"llem_missing_engine must be 'fail' or 'skip', got {chosen!r}")
        return str(chosen)

    def _ref(self, item: CellItem) -> Any:
        from pytest_llem.execution.study_run import CellRef

        return CellRef(item.configuration, item.cycle, item.position, item.nodeid)

    def run_cell(self, item: CellItem, baselines: SessionIdlePower | None = None) -> None:
        from pytest_llem.errors import CellEngineUnavailable

        run = self.runs[item.study.path]
        ref = self._ref(item)
        try:
            outcome = run.run_cell(ref, baselines, self.results_root(item), gpu_uuid=self.gpu_uuid)
        except CellEngineUnavailable as exc:
            if self.missing_engine_policy() == "skip":
                run.skip(ref, f"engine unavailable: {exc}")
                pytest.skip(f"engine unavailable: {exc}")
            raise
        record = outcome.record or {}
        item.llem_report = {  # type: ignore[attr-defined]
            key: record.get(key)
            for key in (
                "experiment_id", "measurement_config_hash", "total_tokens", "total_inference_time_sec",
                "avg_tokens_per_second", "total_energy_j", "mj_per_tok_total", "mj_per_tok_adjusted",
                "energy_meter", "energy_unavailable_reason",
            )
        }  # fmt: skip
        item.llem_report["cell_dir"] = str(outcome.cell_dir)  # type: ignore[attr-defined]
        for key in ("mj_per_tok_total", "mj_per_tok_adjusted", "avg_tokens_per_second", "total_energy_j"):
            item.user_properties.append((f"llem_{key}", record.get(key)))
        self._check_limits(item, run, outcome)

    def _check_limits(self, item: CellItem, run: StudyRun, outcome: Any) -> None:
        """Judge the record against the study's ``expect:`` and the command line's limits."""
        from pytest_llem.errors import LimitBreached
        from pytest_llem.verdicts.limits import Limit, breaches

        config = item.configuration.config
        assert config is not None
        where = item.configuration.expect_lines
        limits: list[Limit] = []
        for metric, bounds in config.expect.items():
            source = f"{item.study.path.name}:{where.get(metric, 1)}"
            if bounds.min is not None:
                limits.append(Limit(metric, "min", bounds.min, source))
            if bounds.max is not None:
                limits.append(Limit(metric, "max", bounds.max, source))
        limits += self.cli_limits
        found = breaches(outcome.record or {}, limits)
        item.llem_report["limits"] = [limit.describe() for limit in limits]  # type: ignore[attr-defined]
        item.llem_report["limit_breaches"] = found  # type: ignore[attr-defined]
        if not limits:
            return
        run.manifest.update(
            outcome.cell.experiment_id(run.study), "completed", verdict="failed" if found else "passed", limit_breaches=found
        )
        if found:
            result_path = outcome.cell_dir / "result.json" if outcome.cell_dir else None
            raise LimitBreached(
                f"{len(found)} limit{'s' if len(found) > 1 else ''} breached:\n  "
                + "\n  ".join(found)
                + (f"\n  result: {result_path}" if result_path else "")
            )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if not _is_cell(item):
            return report
        if call.when == "call":
            report.llem = getattr(item, "llem_report", None)  # type: ignore[attr-defined]
            from pytest_llem.errors import CellError

            if call.excinfo is not None and isinstance(call.excinfo.value, CellError) and call.excinfo.value.log_tail:
                from pytest_llem.results.writer import scrub

                report.sections.append(("Captured log of the cell's process (tail)", scrub(call.excinfo.value.log_tail)))
        elif call.when == "setup" and report.skipped:
            run = self.runs.get(item.study.path)  # type: ignore[attr-defined]
            if run is not None:
                reason = item.configuration.skip_reason or "skipped"  # type: ignore[attr-defined]
                run.skip(self._ref(item), reason)  # type: ignore[arg-type]
        return report

    def pytest_sessionfinish(self) -> None:
        for run in self.runs.values():
            run.finish()
        if self.is_worker:
            self.config.workeroutput["llem_study_dirs"] = [str(p) for p in self.study_dirs]  # type: ignore[attr-defined]

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """After every cell ran (on the controller under xdist): store baselines and judge regressions.

        A regression fails the session through ``testsfailed`` even when every cell passed.
        """
        result = yield
        if self.is_worker or not self.study_dirs:
            return result
        from pytest_llem.verdicts.gate import remember_last, run_gate

        if self.compare_rules or self.config.getoption("llem_baseline_update"):
            failures, self.gate_lines = run_gate(self.config, self.finalized(), self.compare_rules)
            session.testsfailed += failures
        remember_last(self.config, self.finalized())  # for the next run's --llem-compare=last
        return result

    def finalized(self) -> list[FinalizedStudy]:
        """Every study of the session read back from disk with its statistics (once)."""
        if self._finalized is None:
            from pytest_llem.verdicts.finalize import finalize_study

            self._finalized = [finalize_study(d) for d in dict.fromkeys(self.study_dirs)]
        return self._finalized

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_runtest_metadata(self, item: pytest.Item, call: pytest.CallInfo[None]) -> dict[str, Any]:
        """pytest-json-report: each cell's figures under its test's ``metadata.llem``."""
        if call.when != "call" or not _is_cell(item):
            return {}
        return {"llem": getattr(item, "llem_report", None)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_json_modifyreport(self, json_report: dict[str, Any]) -> None:
        """pytest-json-report: the studies' directories and statistics at the top level, under ``llem``."""
        if self.is_worker or not self.study_dirs:
            return
        json_report["llem"] = {
            "studies": [
                {
                    "study_name": f.result.study_name,
                    "study_dir": str(f.result.study_dir),
                    "study_design_hash": f.result.study_design_hash,
                    "summary": f.result.summary,
                    "statistics": [g.to_json() for g in f.groups],
                }
                for f in self.finalized()
            ]
        }

    def pytest_report_header(self, config: pytest.Config) -> list[str] | None:
        """One line on what measures: only when study files are named on the command line."""
        if not any(is_study_file(a) for a in config.args):
            return None
        from pytest_llem.energy._nvml import visible_gpu_uuids

        uuids, reason = visible_gpu_uuids()
        gpus = f"{len(uuids)} GPU(s) visible to NVML, meter per study (auto: nvml)" if uuids else f"no GPU energy ({reason})"
        limits = f", {len(self.cli_limits)} command-line limit(s)" if self.cli_limits else ""
        target = "the last run (pytest cache)" if config.getoption("llem_compare") == "last" else "stored baselines"
        compare = f", compare with {target}" if self.compare_rules else ""
        return [f"llem: {gpus}{limits}{compare}; cells run in each study's experiment_order"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.study_dirs:
            return
        from pytest_llem.report.terminal import render_study_table

        for study in self.finalized():
            terminalreporter.write_sep("-", f"llem: {study.result.study_name}")
            for line in render_study_table(study.result, study.groups):
                terminalreporter.write_line(line)
        if self.gate_lines:
            terminalreporter.write_sep("-", "llem: comparison with stored baselines")
            for line in self.gate_lines:
                terminalreporter.write_line(line)
