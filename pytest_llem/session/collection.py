"""Collection: the cells' run order, the shard's and a resumed run's selections, the studies' start.

A mixin of :class:`~pytest_llem.session.core.LlemSession`, called from ``pytest_collection_modifyitems``
(:meth:`CollectionSteps.order_cells`) and ``pytest_collection_finish`` (:meth:`CollectionSteps.start_studies`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llem.session.common import as_cell, cell_ref, disk_fix, os_error

if TYPE_CHECKING:
    from pytest_llem.execution.shard import ShardPlan, ShardSpec
    from pytest_llem.execution.study_run import StudyRun
    from pytest_llem.nodes import CellItem


class CollectionSteps:
    """What the session does with the collected items before the first cell runs."""

    config: pytest.Config
    runs: dict[Path, StudyRun]
    stamp: str | None
    session_id: str
    study_dirs: list[Path]
    resume_dirs: dict[Path, Path]
    resume_lines: list[str]
    write_problems: list[str]
    shard_plans: dict[Path, ShardPlan]
    shard: ShardSpec | None
    shard_left_nothing: bool
    _start_refused: bool

    def results_root(self, item: CellItem) -> Path:
        """Where a cell's study directory goes: option, ini key, the study's own, else ./results."""
        chosen = (
            self.config.getoption("llem_results_dir")
            or self.config.getini("llem_results_dir")
            or (item.configuration.config.output.results_dir if item.configuration.config else None)
            or "results"
        )
        root = Path(chosen)
        return root if root.is_absolute() else self.config.rootpath / root


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
                    why = f"{os_error(exc)}; {disk_fix(exc)}, then run again"
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
            self.write_problems.append(f"{study_dir}: which shard it holds could not be written: {os_error(exc)}")

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
            ran = found is not None and f"{found.study.path}::{cell_ref(found).experiment_id(found.study)}" in done
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
                        cells[0].study, self.resume_dirs[path], [cell_ref(c) for c in cells], self.config.getoption("llem_timeout")
                    )
                except OSError as exc:
                    why = f"{os_error(exc)}; {disk_fix(exc)}, then run again"
                    raise pytest.UsageError(f"cannot resume the study in {self.resume_dirs[path]}: {why}") from None
                self.study_dirs.append(self.resume_dirs[path])
                self._write_shard(path, self.resume_dirs[path])
                continue
            root = self.results_root(cells[0])
            try:
                run = StudyRun.create(
                    cells[0].study, [cell_ref(c) for c in cells], root, self.stamp,
                    self.config.getoption("llem_timeout"), self.session_id,
                )  # fmt: skip
            except OSError as exc:  # a read-only or full disk, a root that is a file: before any cell ran
                raise pytest.UsageError(
                    f"cannot create the study directory for {path.name} under {root}: {os_error(exc)}; choose another"
                    f" with --llem-results-dir, or {disk_fix(exc)}"
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
