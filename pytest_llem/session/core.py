"""One pytest session of pytest-llem: its studies, their cells, and the verdicts at the end.

What happens at collection is in :mod:`~pytest_llem.session.collection`, pytest-xdist's hand-out
in :mod:`~pytest_llem.session.workers`, the options checked at start-up in
:mod:`~pytest_llem.session.options`; :class:`LlemSession` takes the first two in as mixins.

The hooks in plugin.py and xdist.py are thin: each fetches the :class:`LlemSession` from
``config.stash`` and calls one method of it. Keeping the state in an ordinary object (not a
plugin whose methods are hooks) lets each concern read as plain code, and keeps pytest's
hook calling conventions at the edge.

A session exists in every pytest run of the user's environment, studies or not, so this module
imports only pytest and the suffix check at module level; the study grammar (pydantic), the
runner and the statistics are imported inside the methods that need them, once a study is in play.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.session.collection import CollectionSteps
from pytest_llem.session.common import as_cell, cell_ref, names_studies, os_error
from pytest_llem.session.options import command_line_limits, compare_rules, report_format
from pytest_llem.session.workers import XdistWorkers

if TYPE_CHECKING:
    from pytest_llem.execution.idle_power import SessionIdlePower
    from pytest_llem.execution.shard import ShardPlan, ShardSpec
    from pytest_llem.execution.study_run import CellOutcome, StudyRun
    from pytest_llem.nodes import CellItem
    from pytest_llem.verdicts.compare import CompareRule
    from pytest_llem.verdicts.finalize import FinalizedStudy
    from pytest_llem.verdicts.gate import Cache, GateOptions
    from pytest_llem.verdicts.limits import Limit

#: Where the session lives: ``config.stash[SESSION_KEY]``, set in ``pytest_configure``.
SESSION_KEY = pytest.StashKey["LlemSession"]()


def session_of(config: pytest.Config) -> LlemSession:
    return config.stash[SESSION_KEY]


class LlemSession(CollectionSteps, XdistWorkers):
    """Per-session state: the studies being run, their directories and outcomes, and the verdicts."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.runs: dict[Path, StudyRun] = {}
        # Bad limits, rules or policy are usage errors now, not at the first cell (in this order).
        self.cli_limits: list[Limit] = command_line_limits(config)
        self.compare_rules: list[CompareRule] = compare_rules(config)
        self.missing_engine_policy()
        self.inconclusive_policy()
        self.report_format: str | None = report_format(config)  # --llem-report: checked before any cell runs
        self.gate_lines: list[str] = []  # the regression section of the terminal summary
        self.adaptive_lines: list[str] = []  # what adaptive cycles did, for the terminal summary
        self._studies_finished = False
        # Under pytest-xdist the controller hands every worker one stamp (so they share each
        # study's directory) and one GPU; serially both are this process's own.
        workerinput: dict[str, Any] = getattr(config, "workerinput", {})
        self.is_worker = bool(workerinput)
        self.stamp: str | None = workerinput.get("llem_stamp")
        # Names this session's study directories: its workers share them, no other session does.
        self.session_id: str = workerinput.get("llem_session_id") or uuid.uuid4().hex[:12]
        self.gpu_uuid: str | None = workerinput.get("llem_gpu_uuid")
        self.next_item: pytest.Item | None = None  # the item pytest runs after this one: its cell's process starts ahead
        self.after_next_item: pytest.Item | None = None  # and the one after it (serial runs only)
        self._positions: dict[int, int] = {}  # id(item) -> its index in session.items
        self._positions_of: list[pytest.Item] | None = None
        self.study_dirs: list[Path] = []  # every study directory this session wrote to
        self._finalized: list[FinalizedStudy] | None = None
        # --llem-resume: study file -> the earlier run's directory it continues, and what was said.
        self.resume_dirs: dict[Path, Path] = {}
        self.resume_lines: list[str] = []
        self._gpu_pool: list[str] | None = None
        self._start_refused = False  # collection ended in a usage error: start no study
        # Results that could not be written (a full or read-only disk), for the terminal summary.
        self.write_problems: list[str] = []
        # --llem-shard: this session's shard and each study's plan (see execution/shard.py).
        self.shard_plans: dict[Path, ShardPlan] = {}
        self.shard: ShardSpec | None = None
        self.shard_left_nothing = False  # every collected item belongs to other shards (see plugin.pytest_sessionfinish)

    # -- options ---------------------------------------------------------------------------

    def missing_engine_policy(self) -> str:
        """``--llem-missing-engine``, else the ini key, else fail; a bad ini value is a usage error."""
        chosen = self.config.getoption("llem_missing_engine") or self.config.getini("llem_missing_engine") or "fail"
        if chosen not in ("fail", "skip"):
            raise pytest.UsageError(f"llem_missing_engine must be 'fail' or 'skip', got {chosen!r}")
        return str(chosen)

    def header_lines(self) -> list[str] | None:
        """One line on what measures: only when study files are named on the command line."""
        if not names_studies(self.config):
            return None
        from pytest_llem.energy._nvml import visible_gpu_uuids

        uuids, reason = visible_gpu_uuids()
        gpus = f"{len(uuids)} GPU(s) visible to NVML, meter per study (auto: nvml)" if uuids else f"no GPU energy ({reason})"
        limits = f", {len(self.cli_limits)} command-line limit(s)" if self.cli_limits else ""
        target = "the last run (pytest cache)" if self.config.getoption("llem_compare") == "last" else "stored baselines"
        compare = f", compare with {target}" if self.compare_rules else ""
        return [f"llem: {gpus}{limits}{compare}; cells run in each study's experiment_order"]

    # -- cells -----------------------------------------------------------------------------

    def idle_power(self) -> SessionIdlePower:
        """The session's idle baselines: of the GPU the controller gave this worker, else of every GPU."""
        from pytest_llem.execution.idle_power import SessionIdlePower

        return SessionIdlePower(gpu_uuid=self.gpu_uuid)

    def note_next(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """What pytest runs after ``item``, and after that: their cells' processes may start ahead.

        The item after next is known in a serial run only (pytest runs ``session.items`` in
        order); a pytest-xdist worker learns its next test alone, the scheduler picks the rest.
        """
        self.next_item = nextitem
        self.after_next_item = None
        if nextitem is None or self.is_worker:
            return
        items = item.session.items
        if self._positions_of is not items or len(self._positions) != len(items):
            self._positions = {id(each): index for index, each in enumerate(items)}
            self._positions_of = items
        index = self._positions.get(id(nextitem))
        if index is not None and index + 1 < len(items) and items[index] is nextitem:
            self.after_next_item = items[index + 1]

    def run_cell(self, item: pytest.Item, baselines: SessionIdlePower | None = None) -> None:
        """Run one cell in its own process, keep its figures on the item, and judge its limits."""
        from pytest_llem.errors import CellEngineUnavailable, ResultsWriteError
        from pytest_llem.report.cell import cell_figures, junit_properties

        cell = as_cell(item)
        if cell is None:
            raise TypeError(f"{item.nodeid} is not a pytest-llem cell: llem_run_cell runs cells of *.llem.yaml studies only")
        from pytest_llem.progress import CellProgress

        run = self.runs[cell.study.path]
        ref = cell_ref(cell)
        progress = CellProgress(self.config, cell.nodeid)
        coming = [as_cell(i) for i in (self.next_item, self.after_next_item) if i is not None]
        upcoming = tuple(dict.fromkeys(c.configuration.engine for c in coming if c is not None))
        try:
            outcome = run.run_cell(
                ref, baselines, self.results_root(cell), gpu_uuid=self.gpu_uuid, on_phase=progress, upcoming_engines=upcoming
            )
        except CellEngineUnavailable as exc:
            if self.missing_engine_policy() == "skip":
                self._note_write_problem(run.skip(ref, f"engine unavailable: {exc}"))
                pytest.skip(f"engine unavailable: {exc}")
            raise
        except ResultsWriteError:
            self._stop_after_write_failure(cell, run)
            raise
        finally:
            progress.close()
        record = outcome.record or {}
        figures = cell.llem_report = cell_figures(record, outcome.cell_dir)
        cell.user_properties.extend(junit_properties(record))
        try:
            self._judge_limits(cell, run, outcome, figures)
        except ResultsWriteError:
            self._stop_after_write_failure(cell, run)
            raise

    def _stop_after_write_failure(self, cell: CellItem, run: StudyRun) -> None:
        """Results cannot be written: every later cell would be measured for nothing, so stop.

        ``shouldfail`` rather than ``shouldstop``: pytest then ends as a failed run (exit code 1),
        with its summary and ours, instead of as an interrupted one.
        """
        cell.session.shouldfail = (
            f"llem: stopped after {cell.nodeid}: its results could not be written under {run.study_dir};"
            " the cells after it did not run (see its failure for how to continue)"
        )
        experiment_id = cell_ref(cell).experiment_id(run.study)
        on_disk = [e.get("status") for e in run.manifest.entries() if e.get("experiment_id") == experiment_id]
        if on_disk and on_disk[0] != "failed":  # the manifest could not record the failure: the table shows the disk
            self.write_problems.append(
                f"{experiment_id}: failed in this session, but the manifest on disk still says {on_disk[0]};"
                f" `python -m pytest_llem repair {run.study_dir}` or --llem-resume settles it from the records on disk"
            )

    def _note_write_problem(self, problem: str | None) -> None:
        if problem is not None:
            self.write_problems.append(problem)

    def _judge_limits(self, cell: CellItem, run: StudyRun, outcome: CellOutcome, figures: dict[str, Any]) -> None:
        """Judge the record against the study's ``expect:`` and the command line's limits.

        A breach fails the cell as an ordinary test failure; the manifest records the verdict.
        """
        from pytest_llem.errors import LimitBreached
        from pytest_llem.verdicts.limits import breaches, cell_limits

        config = cell.configuration.config
        assert config is not None  # a cell with no config is an invalid combination: skipped, never run
        limits = cell_limits(config.expect, cell.configuration.expect_lines, cell.study.path.name, self.cli_limits)
        found = breaches(outcome.record or {}, limits)
        figures["limits"] = [limit.describe() for limit in limits]
        figures["limit_breaches"] = found
        if not limits:
            return
        run.record_verdict(outcome.cell, found)
        if found:
            result_path = outcome.cell_dir / "result.json" if outcome.cell_dir else None
            raise LimitBreached(
                f"{len(found)} limit{'s' if len(found) > 1 else ''} breached:\n  "
                + "\n  ".join(found)
                + (f"\n  result: {result_path}" if result_path else "")
            )

    def annotate_report(self, item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
        """A cell's figures onto its report, the tail of a failed child's log, skips into the manifest; secrets out."""
        cell = as_cell(item)
        if cell is None:
            return
        if call.when == "call":
            # pytest-xdist serialises a report's attributes to the controller: ``report.llem`` is
            # how a cell's figures cross. TestReport declares no such attribute, hence setattr.
            setattr(report, "llem", cell.llem_report)  # noqa: B010
            from pytest_llem.errors import CellEngineUnavailable, CellError

            failure = call.excinfo.value if call.excinfo is not None else None
            # A missing engine's message names the package to install; its child's log adds nothing.
            if isinstance(failure, CellError) and failure.log_tail and not isinstance(failure, CellEngineUnavailable):
                report.sections.append(("Captured log of the cell's process (tail)", failure.log_tail))
        elif call.when == "setup" and report.skipped:
            run = self.runs.get(cell.study.path)
            if run is not None:
                self._note_write_problem(run.skip(cell_ref(cell), cell.configuration.skip_reason or "skipped"))
        # The terminal, JUnit XML and pytest-json-report all render the report: one place to redact.
        from pytest_llem.results.redaction import scrub_report

        scrub_report(report)

    # -- adaptive cycles ---------------------------------------------------------------------

    def run_adaptive_cycles(self, session: pytest.Session) -> None:
        """After the planned cells: more cycles where a study asks for them (see verdicts/adaptive.py).

        Serial runs only: under pytest-xdist the controller, which decides, has no GPU and no
        cells of its own, so it says which studies asked for adaptive cycles and did not get them.
        """
        if self.is_worker:
            return
        if not self.runs:
            self._note_adaptive_under_xdist()
            return
        adaptive = {path: run for path, run in self.runs.items() if run.study.execution.adaptive}
        if not adaptive:
            return
        from pytest_llem.execution.adaptive_cycles import AdaptiveCycles
        from pytest_llem.nodes import ConfigurationCollector

        cells = [c for c in map(as_cell, session.items) if c is not None and c.study.path in adaptive]
        collectors: dict[tuple[Path, str], ConfigurationCollector] = {}
        for cell in cells:
            if isinstance(cell.parent, ConfigurationCollector):
                collectors[(cell.study.path, cell.configuration.config_id)] = cell.parent
        ran = [(c.study.path, c.configuration.config_id, c.cycle) for c in cells if c.configuration.runnable]
        rounds = AdaptiveCycles(adaptive, ran, self._inconclusive)
        while not (session.shouldfail or session.shouldstop):
            extra = rounds.next_round()
            if not extra:
                break
            items = [
                (collectors[(cell.study_path, cell.config_id)].make_cell(cell.cycle, cell.position), cell.reason)
                for cell in extra
            ]
            self._run_extra(session, items)
        self.adaptive_lines = rounds.report()

    def _inconclusive(self, study_dirs: list[Path]) -> dict[str, dict[str, str]]:
        """Study name -> config id -> the gate rules it is inconclusive under (none without rules)."""
        if not self.compare_rules:
            return {}
        from pytest_llem.verdicts.finalize import finalize_study
        from pytest_llem.verdicts.gate import inconclusive_configs

        studies = [finalize_study(d) for d in study_dirs]
        return inconclusive_configs(self.gate_options(), studies, self.compare_rules, self._cache())

    def _run_extra(self, session: pytest.Session, extra: list[tuple[CellItem, str]]) -> None:
        """Run a round of adaptive cells through pytest's own protocol, so they report like any test."""
        for item, reason in extra:
            self.runs[item.study.path].add_cell(cell_ref(item), reason)
        items = [item for item, _ in extra]
        session.items.extend(items)
        session.testscollected += len(items)
        for index, item in enumerate(items):
            following = items[index + 1] if index + 1 < len(items) else None
            item.ihook.pytest_runtest_protocol(item=item, nextitem=following)
            if session.shouldfail or session.shouldstop:
                break
        self._finalized = None

    def _note_adaptive_under_xdist(self) -> None:
        """On the xdist controller: studies that asked for adaptive cycles did not get them."""
        if not self.study_dirs:
            return
        from pytest_llem.results.manifest import read_manifest

        for study_dir in dict.fromkeys(self.study_dirs):
            protocol = read_manifest(study_dir).get("measurement_protocol") or {}
            if (protocol.get("max_cycles") or 0) > (protocol.get("n_cycles") or 0):
                self.adaptive_lines.append(
                    f"{study_dir.name}: adaptive cycles (target_ci_pct/max_cycles) need a serial run and did not run"
                    " under pytest-xdist; only the planned cycles were measured"
                )

    def finish_studies(self) -> None:
        """Close every study's manifest; a worker tells the controller which directories it wrote.

        Called when the last cell has run (from the runtestloop wrapper, so the wall time is in
        the manifest before pytest-json-report reads it) and again at session finish (a no-op
        then, unless the loop was interrupted).
        """
        if self._studies_finished:
            return
        self._studies_finished = True
        if self.runs:
            from pytest_llem.runner.spare import POOL

            POOL.close()  # a spare started for a cell that will not come
        for run in self.runs.values():
            self._note_write_problem(run.finish())  # a disk that takes no writes: said in the summary
        workeroutput: dict[str, Any] | None = getattr(self.config, "workeroutput", None)
        if self.is_worker and workeroutput is not None:
            workeroutput["llem_study_dirs"] = [str(p) for p in self.study_dirs]

    # -- verdicts at the end ---------------------------------------------------------------

    def finalized(self) -> list[FinalizedStudy]:
        """Every study of the session read back from disk with its statistics (once)."""
        if self._finalized is None:
            self._finalized = [self._finalize(d) for d in dict.fromkeys(self.study_dirs)]
        return self._finalized

    def _finalize(self, study_dir: Path) -> FinalizedStudy:
        """A study's statistics; when summary.json/csv cannot be written, still shown, and said so."""
        from pytest_llem.verdicts.finalize import FinalizedStudy, finalize_study

        try:
            return finalize_study(study_dir)
        except OSError as exc:
            if exc.errno is None:
                raise
            from pytest_llem.results.loader import load_results
            from pytest_llem.verdicts.statistics import summarise_groups

            self.write_problems.append(
                f"{study_dir}: summary.json and summary.csv could not be written: {os_error(exc)}"
                " (the statistics above are computed from the records all the same)"
            )
            result = load_results(study_dir)
            return FinalizedStudy(result, summarise_groups(result.experiments) if result.experiments else [])

    def gate_options(self) -> GateOptions:
        from pytest_llem.verdicts.gate import GateOptions

        chosen = Path(self.config.getoption("llem_baseline_dir") or ".llem-baselines")
        return GateOptions(
            baseline_root=chosen if chosen.is_absolute() else self.config.rootpath / chosen,
            required=bool(self.config.getoption("llem_baseline_required")),
            any_hardware=bool(self.config.getoption("llem_compare_any_hardware")),
            compare="last" if self.config.getoption("llem_compare") == "last" else "stored",
            update=bool(self.config.getoption("llem_baseline_update")),
            inconclusive="fail" if self.inconclusive_policy() == "fail" else "pass",
        )

    def inconclusive_policy(self) -> str:
        """``--llem-inconclusive``, else the ini key, else pass; a bad ini value is a usage error."""
        chosen = self.config.getoption("llem_inconclusive") or self.config.getini("llem_inconclusive") or "pass"
        if chosen not in ("pass", "fail"):
            raise pytest.UsageError(f"llem_inconclusive must be 'pass' or 'fail', got {chosen!r}")
        return str(chosen)

    def _cache(self) -> Cache | None:
        """pytest's cache, or None under ``-p no:cacheprovider`` (then ``config.cache`` is never set)."""
        if not hasattr(self.config, "cache"):
            return None
        return self.config.cache

    def judge_regressions(self) -> int:
        """After every cell ran (on the controller under xdist): store baselines and judge regressions.

        Returns how many failures the session gets on top of its tests': a regression fails the
        session even when every cell passed.
        """
        if self.is_worker or not self.study_dirs:
            return 0
        from pytest_llem.verdicts.gate import remember_last, run_gate

        failures = 0
        options = self.gate_options()
        if self.compare_rules or options.update:
            failures, self.gate_lines = run_gate(options, self.finalized(), self.compare_rules, self._cache())
        remember_last(self._cache(), self.finalized())  # for the next run's --llem-compare=last
        return failures

    # -- reports ---------------------------------------------------------------------------

    def json_metadata(self, item: pytest.Item, call: pytest.CallInfo[None]) -> dict[str, Any]:
        """pytest-json-report: each cell's figures under its test's ``metadata.llem``."""
        cell = as_cell(item)
        if call.when != "call" or cell is None:
            return {}
        from pytest_llem.results.redaction import scrub

        return {"llem": scrub(cell.llem_report)}

    def add_to_json_report(self, json_report: dict[str, Any]) -> None:
        """pytest-json-report: the studies' directories and statistics at the top level, under ``llem``."""
        if self.is_worker or not self.study_dirs:
            return
        from pytest_llem.report.json_report import studies_json
        from pytest_llem.results.redaction import scrub

        json_report["llem"] = scrub(studies_json(self.finalized()))

    def write_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Each study's table, then the regression gate's lines (on the controller only)."""
        if self.is_worker or not self.study_dirs:
            return
        from pytest_llem.report.terminal import summary_sections
        from pytest_llem.results.redaction import scrub_text, secret_pattern

        secrets = secret_pattern()  # a path or a warning may hold a secret's value: none reaches the terminal

        def write(lines: list[str]) -> None:
            for line in lines:
                terminalreporter.write_line(scrub_text(line, secrets) if secrets is not None else line)

        compared_with = "the last run (pytest cache)" if self.config.getoption("llem_compare") == "last" else "stored baselines"
        if self.resume_lines:
            terminalreporter.write_sep("-", "llem resume")
            write(self.resume_lines)
        for title, lines in summary_sections(self.finalized(), self.gate_lines, self.adaptive_lines, compared_with):
            terminalreporter.write_sep("-", title)
            write(lines)
        if self.report_format:
            written, failed = self.write_reports()
            if written:
                terminalreporter.write_sep("-", "llem: report")
                write(written)
            if failed:  # the tests' outcome stands: a report is a reading of results already on disk
                terminalreporter.write_sep("-", "llem: report not written", red=True)
                write(failed)
        if self.write_problems:
            terminalreporter.write_sep("-", "llem: results not written", red=True)
            write(list(dict.fromkeys(self.write_problems)))

    def write_reports(self) -> tuple[list[str], list[str]]:
        """``--llem-report=html``: each study's report.html; (lines naming the pages, lines saying what failed)."""
        from pytest_llem.report.study_report import write_study_report

        written: list[str] = []
        failed: list[str] = []
        for study in self.finalized():
            try:
                page = write_study_report(study.result, self.gate_lines).page
            except Exception as exc:  # noqa: BLE001 - any failure is reported, none fails the session's tests
                failed.append(f"{study.result.study_dir}: {type(exc).__name__}: {exc}")
            else:
                written.append(f"report: {page}")
        return written, failed
