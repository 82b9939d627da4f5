"""One study's run in a session: its directory, its manifest, and running a cell end to end.

Knows nothing of pytest: the plugin hands it cells in run order and gets back a plain record
(or a :class:`~pytest_llem.errors.CellError`). A failure of one cell is recorded in the
manifest and re-raised for that cell only; the study goes on.

A results disk that fills up or turns read-only mid-study fails the cell it hits with a
:class:`~pytest_llem.errors.ResultsWriteError` naming the path, the OS error, what of the
cell was kept (its figures, when it was measured but its record could not be written) and
how to continue; the session then stops (see session.py).
"""

from __future__ import annotations

import errno
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.errors import CellError, ResultsWriteError
from pytest_llem.execution.cell_process import CellProcess
from pytest_llem.execution.idle_power import SessionIdlePower
from pytest_llem.results.manifest import Manifest
from pytest_llem.results.measurement import CellIdentity, CellIdlePower, CellMeasurement
from pytest_llem.results.record import SCHEMA_VERSION, build_result, timeline_json
from pytest_llem.results.writer import (
    cell_dir_name,
    contained,
    make_study_dir,
    utc_iso,
    write_json_atomic,
)
from pytest_llem.runner.envelope import CellTask
from pytest_llem.runner.parent import ChildReport, PhaseClock, PhaseListener, run_in_child
from pytest_llem.study.study import Configuration, Study
from pytest_llem.version import __version__

RESULT_NAME = "result.json"
EFFECTIVE_CONFIG_NAME = "effective_config.json"


@dataclass(frozen=True)
class CellRef:
    """One cell of a study: a configuration at one cycle, with its place in the run order."""

    configuration: Configuration
    cycle: int
    position: int  # 1-based position in the study's full run order
    nodeid: str

    def experiment_id(self, study: Study) -> str:
        return f"{self.configuration.config_id}::{study.cycle_name(self.cycle)}"


@dataclass
class CellOutcome:
    """What the terminal summary and the reports need to know about a finished cell."""

    cell: CellRef
    status: str
    record: dict[str, Any] | None = None
    error: str | None = None
    cell_dir: Path | None = None


def os_error_text(exc: OSError) -> str:
    """``[Errno 28] No space left on device``: the error without its file name (often a temporary one)."""
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc)


def written_path(exc: OSError, default: Path) -> Path:
    """The file a failed write was making: an atomic write fails on its temporary sibling."""
    if not exc.filename:
        return default
    path = Path(os.fsdecode(exc.filename))
    # write_text_atomic's sibling: ".<name>.<random>.tmp" (mkstemp's random part has no dots).
    if path.name.startswith(".") and path.name.endswith(".tmp") and path.name.count(".") >= 3:
        return path.with_name(path.name[1:].rsplit(".", 2)[0])
    return path


def headline(record: dict[str, Any]) -> str:
    """A record's figures in one line: what must not be lost when the record cannot be written."""

    def figure(key: str, unit: str) -> str:
        value = record.get(key)
        return f"{value:.6g} {unit}" if isinstance(value, (int, float)) else f"{unit} -"

    energy = record.get("total_energy_j")
    energy_text = figure("total_energy_j", "J") if energy is not None else "energy not measured"
    return ", ".join(
        [
            f"energy {energy_text}" if energy is not None else energy_text,
            f"{record.get('total_tokens')} tokens",
            figure("mj_per_tok_total", "mJ/tok"),
            figure("avg_tokens_per_second", "tok/s"),
            figure("total_inference_time_sec", "s window"),
        ]
    )


def _manifest_entry(study: Study, cell: CellRef) -> dict[str, Any]:
    """A cell as the manifest first lists it: who it is and its resolved configuration."""
    configuration = cell.configuration
    return {
        "experiment_id": cell.experiment_id(study),
        "config_id": configuration.config_id,
        "cycle": cell.cycle,
        "position": cell.position,
        "nodeid": cell.nodeid,
        "measurement_config_hash": configuration.config_hash,
        "config": configuration.config.model_dump(mode="json") if configuration.config is not None else configuration.raw,
        **({"skip_reason": configuration.skip_reason} if configuration.skip_reason else {}),
    }


def _timeline_parts(report: ChildReport[CellMeasurement]) -> dict[str, dict[str, float]]:
    """What was timed within the timeline's phases: the engine's load parts, the runner's own."""
    return {"load": report.measurement.load_parts_s or {}, **report.parts}


def _header(study: Study, timeout_override: float | None) -> dict[str, Any]:
    """The manifest's fields about the study as a whole."""
    ex = study.execution
    return {
        "schema_version": SCHEMA_VERSION,
        "llenergymeasure_version": __version__,
        "study_name": study.name,
        "study_file": str(study.path),
        "study_design_hash": study.design_hash,
        "measurement_protocol": {
            "n_cycles": ex.n_cycles,
            "target_ci_pct": ex.target_ci_pct,
            "max_cycles": ex.cycle_cap,
            "experiment_order": ex.experiment_order,
            "experiment_gap_seconds": ex.experiment_gap_seconds,
            "cycle_gap_seconds": ex.cycle_gap_seconds,
            "shuffle_seed": ex.shuffle_seed,
            "experiment_timeout_seconds": timeout_override or ex.experiment_timeout_seconds,
            "prestart_child": ex.prestart_child,
            "teardown": ex.teardown,
            "compile_cache": ex.compile_cache,
            "skip_unused_kernels": ex.skip_unused_kernels,
        },
        **({"report": study.report.model_dump()} if study.report.recommend else {}),
    }


@dataclass
class StudyRun:
    study: Study
    study_dir: Path
    manifest: Manifest
    timeout_override: float | None = None
    started: float = field(default_factory=time.monotonic)
    _last_cycle: int | None = None
    _ran_any: bool = False

    @classmethod
    def create(
        cls, study: Study, cells: list[CellRef], results_root: Path, stamp: str, timeout_override: float | None = None,
        session_id: str = "",
    ) -> StudyRun:  # fmt: skip
        """A new study directory for this session (shared by its xdist workers) with its manifest."""
        study_dir = make_study_dir(results_root, study.name, stamp, session_id or uuid.uuid4().hex[:12])
        header = _header(study, timeout_override)
        experiments = [_manifest_entry(study, cell) for cell in cells]
        manifest = Manifest(study_dir, header, experiments, warnings=list(study.warnings))
        return cls(study=study, study_dir=study_dir, manifest=manifest, timeout_override=timeout_override)

    @classmethod
    def resume(
        cls, study: Study, study_dir: Path, cells: list[CellRef], timeout_override: float | None = None
    ) -> StudyRun:
        """Take up an earlier run of the same study in its own directory (see execution/resume.py)."""
        header = _header(study, timeout_override)
        experiments = [_manifest_entry(study, cell) for cell in cells]
        manifest = Manifest(study_dir, header, experiments, warnings=list(study.warnings), resume=True)
        return cls(study=study, study_dir=study_dir, manifest=manifest, timeout_override=timeout_override)

    def add_cell(self, cell: CellRef, reason: str) -> None:
        """An adaptive cycle decided on after the planned ones: into the manifest, with why."""
        self.manifest.add({**_manifest_entry(self.study, cell), "adaptive_reason": reason})

    def _pause_before(self, cell: CellRef) -> None:
        """Gaps between cells let the GPU return towards idle; a new cycle may ask for more."""
        ex = self.study.execution
        if self._ran_any:
            pause = ex.experiment_gap_seconds
            if self._last_cycle is not None and cell.cycle != self._last_cycle:
                pause += ex.cycle_gap_seconds
            if pause > 0:
                time.sleep(pause)
        self._ran_any = True
        self._last_cycle = cell.cycle

    def cell_dir(self, cell: CellRef) -> Path:
        config = cell.configuration
        width = max(3, len(str(len(self.study.configurations) * self.study.execution.cycle_cap)))
        name = cell_dir_name(
            cell.position, self.study.cycle_name(cell.cycle), config.raw.get("model", "model"), config.engine,
            config.config_hash or "invalid", width,
        )  # fmt: skip
        return contained(self.study_dir, name)

    def skip(self, cell: CellRef, reason: str) -> str | None:
        """Record a skipped cell; what could not be written, if anything (the skip stands regardless)."""
        try:
            self.manifest.update(cell.experiment_id(self.study), "skipped", skip_reason=reason, error=None)
        except OSError as exc:
            return f"{cell.experiment_id(self.study)}: skipped, but {self.manifest.path} could not say so: {os_error_text(exc)}"
        return None

    def run_cell(
        self, cell: CellRef, baselines: SessionIdlePower | None = None, results_root: Path | None = None,
        gpu_uuid: str | None = None, on_phase: PhaseListener | None = None, upcoming_engines: tuple[str, ...] = (),
    ) -> CellOutcome:  # fmt: skip
        """Run one cell in its own process and write its record; raise CellError on failure.

        The phases: pause (the study's gaps), make sure the idle baseline is fresh, run the
        child, then turn its measurement into the record and the files beside it. Each is marked
        on the cell's :class:`PhaseClock`: its timeline goes into the record and the manifest.
        ``upcoming_engines``: the engines of the cells pytest runs next, distinct, the next one's
        first: their processes may start ahead while this cell's engine loads
        (``execution.prestart_child``).
        """
        config = cell.configuration.config
        assert config is not None
        clock = PhaseClock()
        clock.mark("gap")
        process = CellProcess(config.engine, self.study.execution, gpu_uuid, self.study.path.parent.resolve(), upcoming_engines)
        try:
            return self._run_cell(cell, config, clock, process, baselines, results_root, on_phase)
        finally:
            process.close()

    def _run_cell(
        self, cell: CellRef, config: ExperimentConfig, clock: PhaseClock, process: CellProcess,
        baselines: SessionIdlePower | None, results_root: Path | None, on_phase: PhaseListener | None,
    ) -> CellOutcome:  # fmt: skip
        process.prestart()  # its imports overlap the gap and the idle checks below
        self._pause_before(cell)
        cell_dir = self.cell_dir(cell)
        try:
            clock.mark("idle_baseline")
            idle_reason = self._prepare_idle_power(config, baselines, results_root)
            clock.mark("manifest_update")
            self._set_aside_earlier_attempt(cell_dir)
            self.manifest.update(cell.experiment_id(self.study), "running", cell_dir=self._relative(cell_dir), error=None)
        except OSError as exc:
            raise self._write_failed(
                cell, exc, self.manifest.path, "as the cell was about to start",
                "Nothing of this cell was measured, so nothing is lost.",
            ) from exc  # fmt: skip
        started_at = utc_iso(precise=True)
        report = self._measure(cell, config, cell_dir, baselines, process, on_phase, clock)
        span = (started_at, utc_iso(precise=True))  # the cell's own span: before any idle re-measurement it caused
        clock.mark("idle_drift")
        try:
            idle = self._idle_power_of(report.measurement, config, baselines, idle_reason)
        except OSError as exc:  # re-measured idle power could not be stored: the cell's figures still count
            unadjusted = CellIdlePower(baseline_unavailable_reason=f"idle power could not be stored: {os_error_text(exc)}")
            record = self._build_record(cell, config, report, unadjusted, span, clock, process)
            raise self._record_not_written(cell, exc, self.study_dir, record) from exc
        record = self._write_record(cell, config, cell_dir, report, idle, span, clock, process)
        return CellOutcome(cell, "completed", record=record, cell_dir=cell_dir)

    def _write_failed(
        self, cell: CellRef, exc: OSError, default: Path, when: str, kept: str, *, record_on_disk: bool = False
    ) -> ResultsWriteError:
        """The cell's error for a write that failed; the manifest says so where it still can.

        ``kept``: what of the cell survives, in words. A cell whose record is on disk is left as
        the manifest has it: repair and resume find it completed from its ``result.json``.
        """
        path = written_path(exc, default)
        message = f"cannot write {path} {when}: {os_error_text(exc)}. {kept} {self.how_to_continue(exc)}"
        if not record_on_disk:
            try:
                self.manifest.update(cell.experiment_id(self.study), "failed", error=f"ResultsWriteError: {message}")
            except OSError:
                pass  # the same disk: the manifest still says running, which repair turns into failed
        return ResultsWriteError(message)

    def how_to_continue(self, exc: OSError) -> str:
        """What to do once the disk takes writes again: resume (and, for a look first, repair)."""
        fix = "free space on its disk" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable again"
        return (
            f"To continue: {fix}, then `pytest --llem-resume={self.study_dir} {self.study.path}` runs the cells"
            f" that did not complete into the same directory (`python -m pytest_llem repair {self.study_dir}`"
            " makes its manifest agree with the records on disk)."
        )

    def _record_not_written(self, cell: CellRef, exc: OSError, default: Path, record: dict[str, Any]) -> ResultsWriteError:
        return self._write_failed(
            cell, exc, default, "after the cell was measured",
            f"The cell's figures, which are not on disk: {headline(record)}. It did not complete: resuming"
            " measures it again.",
        )  # fmt: skip

    def _set_aside_earlier_attempt(self, cell_dir: Path) -> None:
        """A resumed cell's earlier, unfinished attempt moves to ``_study-artefacts/attempts/``.

        Its log says why it did not finish, so it is kept; but nothing of it may mix with the
        new attempt's files, and a cell directory holds one attempt.
        """
        if not cell_dir.exists():
            return
        attempts = self.study_dir / "_study-artefacts" / "attempts"
        attempts.mkdir(parents=True, exist_ok=True)
        for number in range(1, 10_000):
            target = attempts / f"{cell_dir.name}.{number}"
            if not target.exists():
                cell_dir.rename(target)
                return

    def _relative(self, cell_dir: Path) -> str:
        return cell_dir.relative_to(self.study_dir).as_posix()

    def _prepare_idle_power(
        self, config: ExperimentConfig, baselines: SessionIdlePower | None, results_root: Path | None
    ) -> str | None:
        """A fresh idle baseline for every visible GPU before a GPU cell; why there is none, else None."""
        if baselines is None:
            return "no idle baseline fixture in use"
        if config.measurement.device == "cpu":
            return None
        return baselines.ensure(
            config.measurement.baseline,
            self.study_dir,
            results_root or self.study_dir.parent,
            self.study.execution.startup_timeout_seconds,
        )

    def _measure(
        self, cell: CellRef, config: ExperimentConfig, cell_dir: Path, baselines: SessionIdlePower | None,
        process: CellProcess, on_phase: PhaseListener | None = None, clock: PhaseClock | None = None,
    ) -> ChildReport[CellMeasurement]:  # fmt: skip
        """The cell's child, from spawn to measurement; a failure is recorded (with its timeline) and re-raised."""
        ex = self.study.execution
        task = CellTask(
            config=config,
            base_dir=str(self.study.path.parent.resolve()),
            cell_dir=str(cell_dir),
            idle_reference_w=baselines.reference_w() if baselines is not None else {},
            skip_unused_kernels=ex.skip_unused_kernels,
        )
        try:
            return run_in_child(
                task,
                cell_dir,
                CellMeasurement,
                timeout_s=self.timeout_override or ex.experiment_timeout_seconds,
                startup_timeout_s=ex.startup_timeout_seconds,
                gpu_uuid=process.gpu_uuid,
                on_phase=process.listener(on_phase),
                clock=clock,
                env=process.env,
                spare=process.take_spare(),
                teardown=process.teardown,
            )
        except CellError as exc:
            # The time a failed cell took is the study's too: its timeline says where it went.
            spent = {"timeline": timeline_json(clock.phases())} if clock is not None else {}
            try:
                self.manifest.update(
                    cell.experiment_id(self.study), "failed", error=f"{type(exc).__name__}: {exc}", **spent
                )
            except OSError as write_error:  # the disk went with the cell: say both, and stop (see session.py)
                both = self._write_failed(
                    cell, write_error, self.manifest.path, "to record the cell's failure",
                    f"The cell itself failed: {type(exc).__name__}: {exc}.",
                )  # fmt: skip
                both.log_tail, both.child_traceback, both.phases = exc.log_tail, exc.child_traceback, exc.phases
                raise both from exc
            raise
        except OSError as exc:  # the cell's directory or its log could not be made
            raise self._write_failed(
                cell, exc, cell_dir, "for the cell's process", "No measurement of this cell was kept."
            ) from exc
        except KeyboardInterrupt:  # Ctrl-C (the child's process group is gone): the manifest says so
            try:
                self.manifest.update(
                    cell.experiment_id(self.study), "failed", error="interrupted: the session was stopped during this cell"
                )
            except OSError:
                pass  # "running" stays, which repair and --llem-resume read as interrupted
            raise

    def _idle_power_of(
        self, measurement: CellMeasurement, config: ExperimentConfig, baselines: SessionIdlePower | None,
        reason: str | None,
    ) -> CellIdlePower:  # fmt: skip
        """The idle baseline of the cell's GPUs, checked against the cell's own idle spot check.

        Called after the cell's child finished and before its record is built, so that a spot
        check that found the baseline drifted can have idle power measured again for this cell
        (``SessionIdlePower.settle_drift``); what happened goes into the cell's warnings. A cell
        that asked for no baseline (``baseline.enabled: false``) gets none, even where the session
        holds one for another configuration.
        """
        if baselines is None:
            return CellIdlePower(baseline_unavailable_reason=reason)
        if not config.measurement.baseline.enabled:
            return CellIdlePower(baseline_unavailable_reason="measurement.baseline.enabled is false")
        idle, warnings = baselines.settle_drift(
            [g.uuid for g in measurement.gpus],
            reason,
            measurement.idle_spot_check or {},
            config.measurement.baseline,
            remeasure=lambda: self._remeasure_idle_power(config, baselines),
        )
        measurement.warnings.extend(warnings)
        return idle

    def _remeasure_idle_power(self, config: ExperimentConfig, baselines: SessionIdlePower) -> str | None:
        """Idle power again, right after a drifted cell: what ``_prepare_idle_power`` does before one.

        The GPUs the spot check marked stale are measured afresh (never taken from a cache). The
        results root is the study directory's parent, where ``make_study_dir`` made it.
        """
        return self._prepare_idle_power(config, baselines, None)

    def _build_record(
        self, cell: CellRef, config: ExperimentConfig, report: ChildReport[CellMeasurement], idle: CellIdlePower,
        span: tuple[str, str], clock: PhaseClock, process: CellProcess,
    ) -> dict[str, Any]:  # fmt: skip
        config_hash = cell.configuration.config_hash
        assert config_hash is not None
        measurement = report.measurement
        timeline = clock.phases(_timeline_parts(report))
        identity = CellIdentity(
            study_name=self.study.name,
            study_design_hash=self.study.design_hash,
            config_id=cell.configuration.config_id,
            cycle=cell.cycle,
            position=cell.position,
            nodeid=cell.nodeid,
            cell_wall_time_s=report.wall_time_s,
            cell_started_at=span[0],
            cell_ended_at=span[1],
            timeline=timeline,
            timeline_total_s=sum(p.seconds for p in timeline),
            cell_process=process.describe(),
        )
        return build_result(
            experiment_id=cell.experiment_id(self.study),
            config_hash=config_hash,
            config=config,
            measurement=measurement,
            idle=idle,
            identity=identity,
            version=__version__,
        )

    def _write_record(
        self, cell: CellRef, config: ExperimentConfig, cell_dir: Path, report: ChildReport[CellMeasurement],
        idle: CellIdlePower, span: tuple[str, str], clock: PhaseClock, process: CellProcess,
    ) -> dict[str, Any]:  # fmt: skip
        """result.json and effective_config.json, then the manifest says the cell completed.

        In that order, so a manifest never names a record that is not there; a write that fails
        in between leaves a record the manifest does not name yet, which repair and resume find.
        The manifest's entry gets the cell's whole timeline: the record's, then ``result_write``
        (up to that last manifest write, which cannot time itself).
        """
        record = self._build_record(cell, config, report, idle, span, clock, process)
        clock.mark("result_write")
        measurement = report.measurement
        result_path = cell_dir / RESULT_NAME
        try:
            write_json_atomic(
                cell_dir / EFFECTIVE_CONFIG_NAME,
                {
                    "measurement_config_hash": record["measurement_config_hash"],
                    "experiment": record["config"],
                    "engine": {
                        "name": measurement.engine,
                        "version": measurement.engine_version,
                        "effective_settings": measurement.effective_settings,
                    },
                    "software_versions": measurement.versions,
                },
            )
            write_json_atomic(result_path, record)
        except OSError as exc:
            raise self._record_not_written(cell, exc, result_path, record) from exc
        try:
            for warning in record.get("warnings") or []:  # the study's summary says what each cell warned of
                self.manifest.warn(f"{record['experiment_id']}: {warning}")
            self.manifest.update(
                cell.experiment_id(self.study),
                "completed",
                result_path=f"{self._relative(cell_dir)}/{RESULT_NAME}",
                total_energy_j=record["total_energy_j"],
                mj_per_tok_total=record["mj_per_tok_total"],
                avg_tokens_per_second=record["avg_tokens_per_second"],
                total_inference_time_sec=record["total_inference_time_sec"],
                timeline=timeline_json(clock.phases(_timeline_parts(report))),
            )
        except OSError as exc:
            raise self._write_failed(
                cell, exc, self.manifest.path, "to say that the cell completed",
                f"The cell was measured and its record is on disk ({result_path}): {headline(record)}. It counts as"
                " failed in this session, but repair and --llem-resume find it completed from its result.json,"
                " so resuming does not measure it again.",
                record_on_disk=True,
            ) from exc  # fmt: skip
        return record

    def record_verdict(self, cell: CellRef, breaches: list[str]) -> None:
        """The limits' verdict on a completed cell, into the manifest."""
        try:
            self.manifest.update(
                cell.experiment_id(self.study), "completed", verdict="failed" if breaches else "passed", limit_breaches=breaches
            )
        except OSError as exc:
            verdict = f"failed: {'; '.join(breaches)}" if breaches else "passed"
            raise self._write_failed(
                cell, exc, self.manifest.path, "to record the cell's verdict on its limits",
                f"The cell completed and its record is on disk; its verdict ({verdict}) is not in the manifest.",
                record_on_disk=True,
            ) from exc  # fmt: skip

    def finish(self) -> str | None:
        """Record the study's wall time (statistics come from :func:`finalize_study`); what failed, if anything.

        At the session's end a disk that takes no writes must not take the session's report with
        it: the manifest keeps its last state, which repair and resume make agree with the records.
        """
        try:
            self.manifest.finish(time.monotonic() - self.started)
        except OSError as exc:
            return (
                f"{written_path(exc, self.manifest.path)}: the study's end could not be recorded: {os_error_text(exc)}."
                f" {self.how_to_continue(exc)}"
            )
        return None
