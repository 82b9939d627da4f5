"""``manifest.json``: the study's checkpoint, rewritten atomically as every cell starts and ends.

After a crash or an interrupt the manifest still tells the truth: cells that never started are
``pending``, the one that was cut off is ``running``, and every finished cell names its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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
    ) -> None:
        self.path = study_dir / MANIFEST_NAME
        # The lock lives beside the artefacts: manifest.json itself is replaced on every write.
        self._lock_path = study_dir / "_study-artefacts" / "manifest.lock"
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()
        self._data: dict[str, Any] = {}
        with self._locked():
            if self.path.exists():
                self._data = json.loads(self.path.read_text(encoding="utf-8"))
            else:
                self._data = {
                    **header,
                    "start_time": utc_iso(),
                    "end_time": None,
                    "experiments": [{**e, "status": "pending", "result_path": None} for e in experiments],
                    "summary": {"warnings": list(warnings or [])},
                }
                self._refresh_summary()
                self.flush()

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
        """Lock, take in other processes' changes, let the caller change, write back."""
        with self._locked():
            if self.path.exists():
                self._data = json.loads(self.path.read_text(encoding="utf-8"))
            yield self._data
            self._refresh_summary()
            self.flush()

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
        """A cell decided on during the run (an adaptive cycle), pending until it starts."""
        with self._changing() as data:
            if any(e["experiment_id"] == entry["experiment_id"] for e in data["experiments"]):
                raise ValueError(f"{entry['experiment_id']} is already in the manifest")
            data["experiments"].append({**entry, "status": "pending", "result_path": None})

    def warn(self, message: str) -> None:
        with self._changing() as data:
            warnings = data["summary"].setdefault("warnings", [])
            if message not in warnings:
                warnings.append(message)

    def finish(self, wall_time_s: float) -> None:
        with self._changing() as data:
            data["end_time"] = utc_iso()
            data["summary"]["total_wall_time_s"] = wall_time_s

    def _refresh_summary(self) -> None:
        entries = self._data["experiments"]
        previous = self._data.get("summary") or {}
        energies = [e.get("total_energy_j") for e in entries if e["status"] == "completed"]
        hashes = {e.get("measurement_config_hash") for e in entries if e.get("measurement_config_hash")}
        self._data["summary"] = {
            "total_experiments": len(entries),
            "completed": sum(e["status"] == "completed" for e in entries),
            "failed": sum(e["status"] == "failed" for e in entries),
            "skipped": sum(e["status"] == "skipped" for e in entries),
            "pending": sum(e["status"] == "pending" for e in entries),
            "running": sum(e["status"] == "running" for e in entries),
            "total_wall_time_s": previous.get("total_wall_time_s"),
            "total_energy_j": sum(v for v in energies if v is not None) if any(v is not None for v in energies) else None,
            "unique_configurations": len(hashes),
            "warnings": list(previous.get("warnings", [])),
        }

    def flush(self) -> None:
        write_json_atomic(self.path, self._data)
