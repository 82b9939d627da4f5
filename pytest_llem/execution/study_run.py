"""One study's run in a session: its directory, its manifest, and running a cell end to end.

Knows nothing of pytest: the plugin hands it cells in run order and gets back a plain record
(or a :class:`~pytest_llem.errors.CellError`). A failure of one cell is recorded in the
manifest and re-raised for that cell only; the study goes on.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.errors import CellError
from pytest_llem.execution.idle_power import SessionIdlePower
from pytest_llem.results.manifest import Manifest
from pytest_llem.results.measurement import CellIdentity, CellIdlePower, CellMeasurement
from pytest_llem.results.record import SCHEMA_VERSION, build_result
from pytest_llem.results.writer import (
    cell_dir_name,
    contained,
    make_study_dir,
    utc_iso,
    write_json_atomic,
)
from pytest_llem.runner.envelope import CellTask
from pytest_llem.runner.parent import ChildReport, PhaseListener, run_in_child
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
        },
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

    def skip(self, cell: CellRef, reason: str) -> None:
        self.manifest.update(cell.experiment_id(self.study), "skipped", skip_reason=reason, error=None)

    def run_cell(
        self, cell: CellRef, baselines: SessionIdlePower | None = None, results_root: Path | None = None,
        gpu_uuid: str | None = None, on_phase: PhaseListener | None = None,
    ) -> CellOutcome:  # fmt: skip
        """Run one cell in its own process and write its record; raise CellError on failure.

        The phases: pause (the study's gaps), make sure the idle baseline is fresh, run the
        child, then turn its measurement into the record and the files beside it.
        """
        config = cell.configuration.config
        assert config is not None
        self._pause_before(cell)
        idle_reason = self._prepare_idle_power(config, baselines, results_root)
        cell_dir = self.cell_dir(cell)
        self._set_aside_earlier_attempt(cell_dir)
        self.manifest.update(cell.experiment_id(self.study), "running", cell_dir=self._relative(cell_dir), error=None)
        started_at = utc_iso(precise=True)
        report = self._measure(cell, config, cell_dir, baselines, gpu_uuid, on_phase)
        ended_at = utc_iso(precise=True)  # the cell's own span: before any idle re-measurement it caused
        idle = self._idle_power_of(report.measurement, config, baselines, idle_reason)
        record = self._write_record(cell, config, cell_dir, report, idle, (started_at, ended_at))
        return CellOutcome(cell, "completed", record=record, cell_dir=cell_dir)

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
        gpu_uuid: str | None, on_phase: PhaseListener | None = None,
    ) -> ChildReport[CellMeasurement]:  # fmt: skip
        """The cell's child, from spawn to measurement; a failure is recorded and re-raised."""
        ex = self.study.execution
        task = CellTask(
            config=config,
            base_dir=str(self.study.path.parent.resolve()),
            cell_dir=str(cell_dir),
            idle_reference_w=baselines.reference_w() if baselines is not None else {},
        )
        try:
            return run_in_child(
                task,
                cell_dir,
                CellMeasurement,
                timeout_s=self.timeout_override or ex.experiment_timeout_seconds,
                startup_timeout_s=ex.startup_timeout_seconds,
                gpu_uuid=gpu_uuid,
                on_phase=on_phase,
            )
        except CellError as exc:
            self.manifest.update(cell.experiment_id(self.study), "failed", error=f"{type(exc).__name__}: {exc}")
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

    def _write_record(
        self, cell: CellRef, config: ExperimentConfig, cell_dir: Path, report: ChildReport[CellMeasurement],
        idle: CellIdlePower, span: tuple[str, str],
    ) -> dict[str, Any]:  # fmt: skip
        """result.json and effective_config.json, then the manifest says the cell completed."""
        config_hash = cell.configuration.config_hash
        assert config_hash is not None
        measurement = report.measurement
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
        )
        record = build_result(
            experiment_id=cell.experiment_id(self.study),
            config_hash=config_hash,
            config=config,
            measurement=measurement,
            idle=idle,
            identity=identity,
            version=__version__,
        )
        write_json_atomic(
            cell_dir / EFFECTIVE_CONFIG_NAME,
            {
                "measurement_config_hash": config_hash,
                "experiment": record["config"],
                "engine": {
                    "name": measurement.engine,
                    "version": measurement.engine_version,
                    "effective_settings": measurement.effective_settings,
                },
                "software_versions": measurement.versions,
            },
        )
        write_json_atomic(cell_dir / RESULT_NAME, record)
        for warning in record.get("warnings") or []:  # the study's summary says what each cell warned of
            self.manifest.warn(f"{record['experiment_id']}: {warning}")
        self.manifest.update(
            cell.experiment_id(self.study),
            "completed",
            result_path=f"{self._relative(cell_dir)}/{RESULT_NAME}",
            total_energy_j=record["total_energy_j"],
            mj_per_tok_total=record["mj_per_tok_total"],
            avg_tokens_per_second=record["avg_tokens_per_second"],
        )
        return record

    def finish(self) -> None:
        """Record the study's wall time; statistics come from :func:`finalize_study`."""
        self.manifest.finish(time.monotonic() - self.started)
