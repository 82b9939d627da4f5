"""One pytest session of pytest-llem: its studies, their cells, and the verdicts at the end.

The hooks in plugin.py and xdist.py are thin: each fetches the :class:`LlemSession` from
``config.stash`` and calls one method of it. Keeping the state in an ordinary object (not a
plugin whose methods are hooks) lets each concern read as plain code, and keeps pytest's
hook calling conventions at the edge.

A session exists in every pytest run of the user's environment, studies or not, so this module
imports only pytest and the suffix check at module level; the study grammar (pydantic), the
runner and the statistics are imported inside the methods that need them, once a study is in play.
"""

from __future__ import annotations

import errno
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_llem.study.files import is_study_file

if TYPE_CHECKING:
    from pytest_llem.execution.idle_power import SessionIdlePower
    from pytest_llem.execution.shard import ShardPlan, ShardSpec
    from pytest_llem.execution.study_run import CellOutcome, CellRef, StudyRun
    from pytest_llem.nodes import CellItem
    from pytest_llem.verdicts.compare import CompareRule
    from pytest_llem.verdicts.finalize import FinalizedStudy
    from pytest_llem.verdicts.gate import Cache, GateOptions
    from pytest_llem.verdicts.limits import Limit

class LlemContentionWarning(pytest.PytestWarning):
    """Cells of one run share what they measure on (CPU cores under ``-n`` without GPUs)."""


#: Where the session lives: ``config.stash[SESSION_KEY]``, set in ``pytest_configure``.
SESSION_KEY = pytest.StashKey["LlemSession"]()


def session_of(config: pytest.Config) -> LlemSession:
    return config.stash[SESSION_KEY]


def as_cell(item: pytest.Item) -> CellItem | None:
    """The item as a cell, else None.

    Only a ``StudyFile`` makes cells, and it lives in nodes.py: while that module was never
    imported, no item can be a cell, and a session without studies need not import it (nor
    pydantic behind it) to find that out.
    """
    if "pytest_llem.nodes" not in sys.modules:
        return None
    from pytest_llem.nodes import CellItem

    return item if isinstance(item, CellItem) else None


def _cell_ref(item: CellItem) -> CellRef:
    from pytest_llem.execution.study_run import CellRef

    return CellRef(item.configuration, item.cycle, item.position, item.nodeid)


class LlemSession:
    """Per-session state: the studies being run, their directories and outcomes, and the verdicts."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.runs: dict[Path, StudyRun] = {}
        # Bad limits, rules or policy are usage errors now, not at the first cell (in this order).
        self.cli_limits: list[Limit] = _command_line_limits(config)
        self.compare_rules: list[CompareRule] = _compare_rules(config)
        self.missing_engine_policy()
        self.inconclusive_policy()
        self.report_format: str | None = _report_format(config)  # --llem-report: checked before any cell runs
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

    def results_root(self, item: CellItem) -> Path:
        chosen = (
            self.config.getoption("llem_results_dir")
            or self.config.getini("llem_results_dir")
            or (item.configuration.config.output.results_dir if item.configuration.config else None)
            or "results"
        )
        root = Path(chosen)
        return root if root.is_absolute() else self.config.rootpath / root

    def _names_studies(self) -> bool:
        return any(is_study_file(a) for a in self.config.args)

    def header_lines(self) -> list[str] | None:
        """One line on what measures: only when study files are named on the command line."""
        if not self._names_studies():
            return None
        from pytest_llem.energy._nvml import visible_gpu_uuids

        uuids, reason = visible_gpu_uuids()
        gpus = f"{len(uuids)} GPU(s) visible to NVML, meter per study (auto: nvml)" if uuids else f"no GPU energy ({reason})"
        limits = f", {len(self.cli_limits)} command-line limit(s)" if self.cli_limits else ""
        target = "the last run (pytest cache)" if self.config.getoption("llem_compare") == "last" else "stored baselines"
        compare = f", compare with {target}" if self.compare_rules else ""
        return [f"llem: {gpus}{limits}{compare}; cells run in each study's experiment_order"]

    # -- collection ------------------------------------------------------------------------

    def order_cells(self, items: list[pytest.Item]) -> None:
        """Put cells in their studies' run order; other tests keep their places."""
        slots: list[int] = []
        cells: list[CellItem] = []
        for i, item in enumerate(items):
            cell = as_cell(item)
            if cell is not None:
                slots.append(i)
                cells.append(cell)
        if slots and vars(self.config.option).get("reruns"):
            raise pytest.UsageError(
                "--reruns (pytest-rerunfailures) would rerun failing llem cells until one passes, laundering"
                " energy regressions and limit breaches; run studies without it, or leave them out with -m 'not llem'"
            )
        study_rank: dict[Path, int] = {}
        for cell in cells:
            study_rank.setdefault(cell.study.path, len(study_rank))
        cells.sort(key=lambda c: (study_rank[c.study.path], c.position))
        for slot, cell in zip(slots, cells):
            items[slot] = cell
        self._deselect_other_shards(items, cells)
        if self.config.getoption("llem_resume") is not None:
            try:
                self._deselect_completed(items, cells)
            except (pytest.UsageError, OSError) as exc:
                # pytest calls pytest_collection_finish even now: no study may start a new directory.
                self._start_refused = True
                if isinstance(exc, OSError):  # the earlier run's directory takes no writes (its lock)
                    why = f"{_os_error(exc)}; {_disk_fix(exc)}, then run again"
                    raise pytest.UsageError(f"--llem-resume: cannot take up the earlier run: {why}") from None
                raise

    def _deselect_other_shards(self, items: list[pytest.Item], cells: list[CellItem]) -> None:
        """``--llem-shard=K/N``: leave out (as ``-k`` does) the cells other shards run; ``--llem-shard-plan`` prints the plan."""
        plan_only = bool(self.config.getoption("llem_shard_plan"))
        sources = [
            (self.config.getoption("llem_shard"), "--llem-shard"),
            (os.environ.get("LLEM_SHARD"), "LLEM_SHARD"),
            (self.config.getini("llem_shard"), "ini llem_shard"),
        ]
        text, source = next(((t, s) for t, s in sources if t), (None, ""))
        if text is None:
            if plan_only:
                raise pytest.UsageError("--llem-shard-plan prints the plan of --llem-shard=K/N (or N): give it the shards")
            return
        # Imported only now: a run without shards (or studies) loads none of the study machinery.
        from pytest_llem.execution.shard import ShardError, parse_shard, parse_shard_by, plan_shards, recorded_cell_s

        costs = self.config.getoption("llem_shard_costs")
        try:
            spec = parse_shard(str(text), source, plan_only=plan_only)
            by = parse_shard_by(self.config.getoption("llem_shard_by") or "config", "--llem-shard-by")
            recorded = recorded_cell_s(self.config.invocation_params.dir / costs) if costs else {}
        except ShardError as exc:
            raise pytest.UsageError(str(exc)) from None
        for study in {cell.study.path: cell.study for cell in cells}.values():
            if by == "cell" and study.execution.adaptive:
                raise pytest.UsageError(
                    f"--llem-shard-by=cell would split the cycles of {study.path.name}'s configurations over machines,"
                    " but its adaptive cycles (execution.target_ci_pct) decide per configuration from all of them;"
                    " shard it by configuration (the default)"
                )
            self.shard_plans[study.path] = plan_shards(study, spec.count, by, recorded)
        if plan_only:
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            lines = [line for plan in self.shard_plans.values() for line in plan.table()]
            if reporter is not None:
                for line in lines:
                    reporter.write_line(line)
            self._start_refused = True  # pytest calls pytest_collection_finish even after exit: start nothing
            pytest.exit("llem: shard plan printed (--llem-shard-plan); no cell was run", returncode=0)
        self.shard = spec
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            found = as_cell(item)
            plan = self.shard_plans.get(found.study.path) if found is not None else None
            theirs = plan is not None and found is not None and not plan.holds(spec.index, found.configuration.config_id, found.cycle)
            (drop if theirs else keep).append(item)
        if drop:
            self.config.hook.pytest_deselected(items=drop)
            items[:] = keep
        self.shard_left_nothing = bool(drop) and not keep

    def _check_resumed_shard(self, study_dir: Path | None) -> None:
        """A shard resumes only its own directory: another shard's (or a whole run's) would mix two cell sets."""
        from pytest_llem.execution.shard import read_shard_file

        if study_dir is None:
            return
        held = (read_shard_file(study_dir) or {}).get("shard")
        ours = self.shard.label if self.shard is not None else None
        if held != ours:
            what = f"shard {held}" if held else "a whole (unsharded) run"
            raise pytest.UsageError(
                f"--llem-resume: {study_dir} holds {what}, and this session runs {f'shard {ours}' if ours else 'the whole study'};"
                " name the directory of the same shard with --llem-resume=DIR (or run the shard anew and merge that)"
            )

    def _write_shard(self, path: Path, study_dir: Path) -> None:
        """A shard's study directory says which shard it holds (``_study-artefacts/shard.json``, read by merge)."""
        if self.shard is None or path not in self.shard_plans:
            return
        from pytest_llem.execution.shard import write_shard_file

        try:
            write_shard_file(study_dir, self.shard_plans[path], self.shard.index, self.shard.source)
        except OSError as exc:
            self.write_problems.append(f"{study_dir}: which shard it holds could not be written: {_os_error(exc)}")

    def _deselect_completed(self, items: list[pytest.Item], cells: list[CellItem]) -> None:
        """``--llem-resume``: find each study's earlier run and leave out the cells it completed."""
        from pytest_llem.execution.resume import ResumeRefused, find_resume

        chosen = self.config.getoption("llem_resume")
        explicit = None if chosen == "auto" else Path(chosen)
        if explicit is not None and not explicit.is_absolute():
            explicit = self.config.invocation_params.dir / explicit
        studies = {cell.study.path: cell for cell in cells}
        if explicit is not None and len(studies) > 1:
            raise pytest.UsageError(
                f"--llem-resume={chosen} names one study directory, but {len(studies)} studies were collected;"
                " name one study file, or use --llem-resume without a directory"
            )
        done: set[str] = set()
        for path, cell in studies.items():
            try:
                plan = find_resume(cell.study, self.results_root(cell), explicit)
            except ResumeRefused as exc:
                raise pytest.UsageError(f"--llem-resume: {exc}") from None
            self._check_resumed_shard(plan.study_dir)
            self.resume_lines.append(plan.note)
            if plan.study_dir is not None:
                self.resume_dirs[path] = plan.study_dir
                done |= {f"{path}::{experiment_id}" for experiment_id in plan.completed}
        if not done:
            return
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            found = as_cell(item)
            ran = found is not None and f"{found.study.path}::{_cell_ref(found).experiment_id(found.study)}" in done
            (drop if ran else keep).append(item)
        if drop:
            self.config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def start_studies(self, items: list[pytest.Item]) -> None:
        """Create each collected study's directory and manifest (not under ``--collect-only``)."""
        self._freeze_large_collections(items)
        if self.config.option.collectonly or self._start_refused:
            return
        by_study: dict[Path, list[CellItem]] = {}
        for item in items:
            cell = as_cell(item)
            if cell is not None:
                by_study.setdefault(cell.study.path, []).append(cell)
        # A resumed study with nothing left to run is still this session's to summarise and gate.
        self.study_dirs += [d for path, d in self.resume_dirs.items() if path not in by_study]
        if not by_study:
            return
        from pytest_llem.execution.study_run import StudyRun
        from pytest_llem.results.writer import utc_stamp

        self.stamp = self.stamp or utc_stamp()
        for path, cells in by_study.items():
            if path in self.resume_dirs:
                try:
                    self.runs[path] = StudyRun.resume(
                        cells[0].study, self.resume_dirs[path], [_cell_ref(c) for c in cells], self.config.getoption("llem_timeout")
                    )
                except OSError as exc:
                    why = f"{_os_error(exc)}; {_disk_fix(exc)}, then run again"
                    raise pytest.UsageError(f"cannot resume the study in {self.resume_dirs[path]}: {why}") from None
                self.study_dirs.append(self.resume_dirs[path])
                self._write_shard(path, self.resume_dirs[path])
                continue
            root = self.results_root(cells[0])
            try:
                run = StudyRun.create(
                    cells[0].study, [_cell_ref(c) for c in cells], root, self.stamp,
                    self.config.getoption("llem_timeout"), self.session_id,
                )  # fmt: skip
            except OSError as exc:  # a read-only or full disk, a root that is a file: before any cell ran
                raise pytest.UsageError(
                    f"cannot create the study directory for {path.name} under {root}: {_os_error(exc)}; choose another"
                    f" with --llem-results-dir, or {_disk_fix(exc)}"
                ) from None
            self.runs[path] = run
            self.study_dirs.append(run.study_dir)
            self._write_shard(path, run.study_dir)

    @staticmethod
    def _freeze_large_collections(items: list[pytest.Item]) -> None:
        """After collecting a large sweep, leave its items out of later cyclic garbage collections.

        As ``nodes._keep_out_of_garbage_collection`` does for the loaded study: the items live
        until the session ends, and pytest's full collections at exit would walk every one of
        them for nothing (on a 100,000-cell sweep, seconds each).
        """
        cells = sum(1 for item in items if as_cell(item) is not None)
        if not cells:
            return  # no study: nothing of pytest-llem's grammar is imported (the plugin stays light)
        from pytest_llem.study.study import LARGE_STUDY_CELLS

        if cells > LARGE_STUDY_CELLS:
            import gc

            gc.freeze()

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
        ref = _cell_ref(cell)
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
        experiment_id = _cell_ref(cell).experiment_id(run.study)
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
                self._note_write_problem(run.skip(_cell_ref(cell), cell.configuration.skip_reason or "skipped"))
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
            self.runs[item.study.path].add_cell(_cell_ref(item), reason)
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
                f"{study_dir}: summary.json and summary.csv could not be written: {_os_error(exc)}"
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

    # -- pytest-xdist: one GPU and one stamp per worker (the hooks are in xdist.py) ----------

    def gpu_pool(self) -> list[str]:
        """The GPUs to hand out, one per worker (empty on a machine without NVIDIA GPUs)."""
        if self._gpu_pool is None:
            from pytest_llem.energy._nvml import visible_gpu_uuids

            self._gpu_pool = visible_gpu_uuids()[0]
        return self._gpu_pool

    def check_worker_count(self) -> None:
        """``-n`` beyond the GPUs is a usage error when studies are named: each worker needs its own GPU."""
        if self.is_worker or not self._names_studies():
            return
        workers = getattr(self.config.option, "numprocesses", None)
        pool = self.gpu_pool()
        if isinstance(workers, int) and workers > 1 and not pool:
            self.config.issue_config_time_warning(
                LlemContentionWarning(
                    f"-n {workers} without a GPU: every worker runs its cells on this machine's CPU cores at the"
                    " same time, so the cells contend for them and their speed and energy figures describe that"
                    " contention, not the configuration; run studies on a CPU without -n"
                ),
                stacklevel=2,
            )
        if isinstance(workers, int) and pool and workers > len(pool):
            raise pytest.UsageError(
                f"-n {workers} asks for more workers than the {len(pool)} GPU(s) visible: pytest-llem gives each"
                f" worker its own GPU; use -n {len(pool)} or -n auto"
            )

    def worker_input(self, gateway_id: str) -> dict[str, Any]:
        """What the controller hands worker ``gwN``: the session's stamp and the N-th GPU (or None)."""
        from pytest_llem.results.writer import utc_stamp

        self.stamp = self.stamp or utc_stamp()
        pool = self.gpu_pool()
        index = int(gateway_id.removeprefix("gw") or 0)
        return {
            "llem_stamp": self.stamp,
            "llem_session_id": self.session_id,
            "llem_gpu_uuid": pool[index] if index < len(pool) else None,
        }

    def add_worker_output(self, workeroutput: Mapping[str, Any]) -> None:
        """The study directories a finished worker wrote, for the controller's summary and gate."""
        for path in workeroutput.get("llem_study_dirs", []):
            self.study_dirs.append(Path(path))


def _os_error(exc: OSError) -> str:
    """``[Errno 30] Read-only file system: '/path'``: the error and the file it hit (not a temporary one)."""
    text = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc)
    temporary = Path(os.fsdecode(exc.filename)).name.startswith(".") if exc.filename else True
    return text if temporary else f"{text}: {exc.filename!r}"


def _disk_fix(exc: OSError) -> str:
    return "free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"


def _command_line_limits(config: pytest.Config) -> list[Limit]:
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


def _compare_rules(config: pytest.Config) -> list[CompareRule]:
    """``--llem-compare-fail`` rules; a bad one is a usage error."""
    if not config.getoption("llem_compare_fail"):
        return []
    from pytest_llem.errors import LimitSyntaxError
    from pytest_llem.verdicts.compare import parse_rule

    try:
        return [parse_rule(text) for text in config.getoption("llem_compare_fail")]
    except LimitSyntaxError as exc:
        raise pytest.UsageError(str(exc)) from None


def _report_format(config: pytest.Config) -> str | None:
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
