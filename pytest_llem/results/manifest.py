"""``manifest.json``: the study's checkpoint, rewritten atomically as every cell starts and ends.

After a crash or an interrupt the manifest still tells the truth: cells that never started are
``pending``, the one that was cut off is ``running``, and every finished cell names its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pytest_llem.results.repair import (
    add_to_plan,
    hold_in_use,
    read_valid_manifest,
    rebuild,
    summarise,
    try_hold_alone,
    write_plan,
)
from pytest_llem.results.writer import utc_iso, write_json_atomic

Status = Literal["pending", "running", "completed", "failed", "skipped"]
MANIFEST_NAME = "manifest.json"


def read_manifest(study_dir: Path) -> dict[str, Any]:
    """A study's manifest as it is on disk; empty when it is missing or unreadable (for notes only)."""
    try:
        data = json.loads((study_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Manifest:
    """The manifest of one study run, on disk after every change.

    Several processes may share one study (pytest-xdist workers): every change takes an
    exclusive lock on ``_study-artefacts/manifest.lock``, re-reads the file, applies itself and rewrites it
    atomically, so no worker's update is lost. The first process to open the study creates the
    manifest; later ones join it.
    """

    def __init__(
        self,
        study_dir: Path,
        header: dict[str, Any],
        experiments: list[dict[str, Any]],
        warnings: list[str] | None = None,
        *,
        resume: bool = False,
    ) -> None:
        """Create the study's manifest, or join the one on disk.

        ``resume``: the study directory is an earlier run's, picked up again. When no other
        process holds it, its manifest is first made to agree with the disk (cells cut off by
        the earlier session's end are marked failed, see results/repair.py), and adaptive
        cells that never completed are dropped: this run decides anew whether it needs them.
        """
        self.path = study_dir / MANIFEST_NAME
        self.study_dir = study_dir
        # The lock lives beside the artefacts: manifest.json itself is replaced on every write.
        self._lock_path = study_dir / "_study-artefacts" / "manifest.lock"
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self._previous_wall_time_s = 0.0
        alone = try_hold_alone(study_dir) if resume else None
        with self._locked():
            if alone is not None:
                self._resume(experiments)
            elif self.path.exists():
                self._data = self._read_or_rebuild()
            else:
                self._data = {
                    **header,
                    "start_time": utc_iso(),
                    "end_time": None,
                    "experiments": [{**e, "status": "pending", "result_path": None} for e in experiments],
                    "summary": {"warnings": list(warnings or [])},
                }
                write_plan(study_dir, header, experiments)
                self._refresh_summary()
                self.flush()
        if alone is not None:
            alone.close()
        # Held until finish() (or until this object goes): tells `repair` and other sessions'
        # --llem-resume that the study is live. The kernel drops it if the process dies.
        self._release_in_use = weakref.finalize(self, hold_in_use(study_dir).close)

    def _resume(self, experiments: list[dict[str, Any]]) -> None:
        """Take up an earlier run's manifest (called alone, under the lock).

        ``experiments``: the cells this session will run; those the earlier run never listed
        (left out by ``-k`` then) join the manifest and the plan.
        """
        repaired = rebuild(self.study_dir, read_valid_manifest(self.study_dir), interrupted=True)
        data = repaired.manifest
        dropped = [e for e in data["experiments"] if e.get("adaptive_reason") and e["status"] != "completed"]
        data["experiments"] = [e for e in data["experiments"] if e not in dropped]
        listed = {e["experiment_id"] for e in data["experiments"]}
        for entry in experiments:
            if entry["experiment_id"] not in listed:
                data["experiments"].append({**entry, "status": "pending", "result_path": None})
                add_to_plan(self.study_dir, entry)
        self._previous_wall_time_s = float((data.get("summary") or {}).get("total_wall_time_s") or 0.0)
        data.setdefault("resumed", []).append(
            {"at": utc_iso(), "previous_end_time": data.get("end_time"), "repaired": repaired.changes}
        )
        data["end_time"] = None
        self._data = data
        self._refresh_summary()
        self.flush()

    def _read_or_rebuild(self) -> dict[str, Any]:
        """The manifest on disk; rebuilt from the plan, the records and our copy when it is unreadable.

        A truncated or corrupt manifest (a full disk, a hand edit, a crash of a non-atomic tool)
        must neither stop the study nor orphan the next cell's record.
        """
        data = read_valid_manifest(self.study_dir)
        if data is not None:
            return data
        rebuilt = rebuild(self.study_dir, self._data or None, interrupted=False).manifest
        warning = f"manifest.json was found unreadable at {utc_iso()} and rebuilt from the plan and the records on disk"
        rebuilt["summary"].setdefault("warnings", []).append(warning)
        return rebuilt

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock, open(self._lock_path, "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, Any]]:
        """Lock, take in other processes' changes, let the caller change, write back.

        A write that fails (a full or read-only disk) raises; our copy then goes back to what
        the disk says, so this process never believes a change the disk does not hold.
        """
        with self._locked():
            if self.path.exists() or self._data:
                self._data = self._read_or_rebuild()
            yield self._data
            self._refresh_summary()
            try:
                self.flush()
            except OSError:
                self._data = read_valid_manifest(self.study_dir) or self._data
                raise

    @property
    def data(self) -> dict[str, Any]:
        return self._data

    def entries(self) -> list[dict[str, Any]]:
        return list(self._data["experiments"])

    def update(self, experiment_id: str, status: Status, **fields: Any) -> None:
        with self._changing() as data:
            matches = [e for e in data["experiments"] if e["experiment_id"] == experiment_id]
            if not matches:
                raise KeyError(experiment_id)
            matches[0]["status"] = status
            matches[0].update(fields)

    def add(self, entry: dict[str, Any]) -> None:
        """A cell decided on during the run (an adaptive cycle), pending until it starts.

        It joins the plan too, so a rebuilt manifest still lists it. An entry of the same id
        that never completed (a cut-off earlier attempt) is replaced; a completed one is kept.
        """
        with self._changing() as data:
            same = [e for e in data["experiments"] if e["experiment_id"] == entry["experiment_id"]]
            if any(e["status"] == "completed" for e in same):
                raise ValueError(f"{entry['experiment_id']} is already in the manifest, completed")
            data["experiments"] = [e for e in data["experiments"] if e not in same]
            data["experiments"].append({**entry, "status": "pending", "result_path": None})
            add_to_plan(self.study_dir, entry)

    def warn(self, message: str) -> None:
        with self._changing() as data:
            warnings = data["summary"].setdefault("warnings", [])
            if message not in warnings:
                warnings.append(message)

    def finish(self, wall_time_s: float) -> None:
        """The run is over: its wall time (added to earlier runs' when resumed), and the study is free."""
        try:
            with self._changing() as data:
                data["end_time"] = utc_iso()
                data["summary"]["total_wall_time_s"] = self._previous_wall_time_s + wall_time_s
        finally:
            self._release_in_use()  # the run is over even when the disk would not take its end

    def _refresh_summary(self) -> None:
        self._data["summary"] = summarise(self._data["experiments"], self._data.get("summary") or {})

    def flush(self) -> None:
        """Write the manifest; a failure names ``manifest.json`` itself, not the temporary file it was."""
        try:
            write_json_atomic(self.path, self._data)
        except OSError as exc:
            if exc.errno is None or exc.filename == str(self.path):
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
