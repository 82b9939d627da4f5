"""``manifest.json``: the study's checkpoint, rewritten atomically as every cell starts and ends.

After a crash or an interrupt the manifest still tells the truth: cells that never started are
``pending``, the one that was cut off is ``running``, and every finished cell names its result.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from pytest_llem.results.writer import utc_iso, write_json_atomic

Status = Literal["pending", "running", "completed", "failed", "skipped"]
MANIFEST_NAME = "manifest.json"


class Manifest:
    """In-memory manifest of one study run, flushed to disk on every change."""

    def __init__(
        self,
        study_dir: Path,
        header: dict[str, Any],
        experiments: list[dict[str, Any]],
        warnings: list[str] | None = None,
    ) -> None:
        self.path = study_dir / MANIFEST_NAME
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {
            **header,
            "start_time": utc_iso(),
            "end_time": None,
            "experiments": [{**e, "status": "pending", "result_path": None} for e in experiments],
            "summary": {},
        }
        self._index = {e["experiment_id"]: i for i, e in enumerate(self._data["experiments"])}
        self._warnings: list[str] = list(warnings or [])
        self._refresh_summary()
        self.flush()

    @property
    def data(self) -> dict[str, Any]:
        return self._data

    def entries(self) -> list[dict[str, Any]]:
        return list(self._data["experiments"])

    def update(self, experiment_id: str, status: Status, **fields: Any) -> None:
        with self._lock:
            entry = self._data["experiments"][self._index[experiment_id]]
            entry["status"] = status
            entry.update(fields)
            self._refresh_summary()
            self.flush()

    def warn(self, message: str) -> None:
        with self._lock:
            if message not in self._warnings:
                self._warnings.append(message)
            self._refresh_summary()
            self.flush()

    def finish(self, wall_time_s: float) -> None:
        with self._lock:
            self._data["end_time"] = utc_iso()
            self._refresh_summary(wall_time_s)
            self.flush()

    def _refresh_summary(self, wall_time_s: float | None = None) -> None:
        entries = self._data["experiments"]
        energies = [e.get("total_energy_j") for e in entries if e["status"] == "completed"]
        hashes = {e.get("measurement_config_hash") for e in entries if e.get("measurement_config_hash")}
        self._data["summary"] = {
            "total_experiments": len(entries),
            "completed": sum(e["status"] == "completed" for e in entries),
            "failed": sum(e["status"] == "failed" for e in entries),
            "skipped": sum(e["status"] == "skipped" for e in entries),
            "pending": sum(e["status"] == "pending" for e in entries),
            "running": sum(e["status"] == "running" for e in entries),
            "total_wall_time_s": wall_time_s if wall_time_s is not None else self._data["summary"].get("total_wall_time_s"),
            "total_energy_j": sum(v for v in energies if v is not None) if any(v is not None for v in energies) else None,
            "unique_configurations": len(hashes),
            "warnings": list(self._warnings),
        }

    def flush(self) -> None:
        write_json_atomic(self.path, self._data)
