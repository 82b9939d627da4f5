"""A manifest rebuilt from what is on disk: after a crash, a full disk, or a truncated write.

Three things survive whatever happens to ``manifest.json``: the plan (``_study-artefacts/plan.json``,
written once when the study starts: its header and every cell it meant to run, with adaptive
cells appended as they are decided), each completed cell's ``result.json`` (written atomically
before the manifest says "completed"), and the cell directories of cells that started. From
these :func:`rebuild` makes a manifest that tells the truth: a cell is completed exactly when
its record is on disk, a cell the manifest still calls running when no session holds the study
was interrupted, and a cell whose record is missing is not completed, whatever the old
manifest said.

A study in use by a live session is never repaired from outside: every process that runs a
study holds a shared lock on ``_study-artefacts/in-use.lock`` for as long as it runs it (the
kernel drops it when the process dies, SIGKILL included), and :func:`study_in_use` asks for it
exclusively without waiting.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pytest_llem.results.writer import utc_stamp, write_json_atomic

PLAN_NAME = "_study-artefacts/plan.json"
IN_USE_NAME = "_study-artefacts/in-use.lock"
MANIFEST_FILE = "manifest.json"
RESULT_FILE = "result.json"
STATUSES = ("pending", "running", "completed", "failed", "skipped")
#: Manifest fields copied from a cell's record when the record is what says it completed.
RECORD_FIGURES = ("total_energy_j", "mj_per_tok_total", "avg_tokens_per_second", "total_inference_time_sec")


def write_plan(study_dir: Path, header: dict[str, Any], experiments: list[dict[str, Any]]) -> None:
    """The study's plan, beside the manifest: what a rebuilt manifest starts from."""
    write_json_atomic(study_dir / PLAN_NAME, {**header, "experiments": experiments})


def add_to_plan(study_dir: Path, entry: dict[str, Any]) -> None:
    """An adaptive cell decided during the run joins the plan (called under the manifest's lock)."""
    plan = _read_json(study_dir / PLAN_NAME)
    if isinstance(plan, dict) and isinstance(plan.get("experiments"), list):
        plan["experiments"] = [e for e in plan["experiments"] if e.get("experiment_id") != entry["experiment_id"]]
        plan["experiments"].append(entry)
        write_json_atomic(study_dir / PLAN_NAME, plan)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_valid_manifest(study_dir: Path) -> dict[str, Any] | None:
    """The manifest when it is readable and shaped like one, else None."""
    data = _read_json(study_dir / MANIFEST_FILE)
    entries = data.get("experiments") if isinstance(data, dict) else None
    if isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("experiment_id"), str) for e in entries):
        return data  # type: ignore[no-any-return]
    return None


def records_on_disk(study_dir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """experiment id -> (path relative to the study, record) of every readable ``result.json``."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(study_dir.glob(f"*/{RESULT_FILE}")):
        record = _read_json(path)
        if isinstance(record, dict) and isinstance(record.get("experiment_id"), str):
            found[record["experiment_id"]] = (path.relative_to(study_dir).as_posix(), record)
    return found


def _started_positions(study_dir: Path) -> set[int]:
    """Run-order positions of the cells whose directories exist (``003_c0_...``: position 3)."""
    positions: set[int] = set()
    for path in study_dir.iterdir():
        head = path.name.split("_", 1)[0]
        if path.is_dir() and head.isdigit():
            positions.add(int(head))
    return positions


@dataclass
class Rebuilt:
    """A manifest made from the disk, and what was changed to make it."""

    manifest: dict[str, Any]
    changes: list[str] = field(default_factory=list)


def _entry_from_record(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment_id": record["experiment_id"],
        "config_id": record.get("config_id"),
        "cycle": record.get("cycle"),
        "position": record.get("position"),
        "nodeid": record.get("nodeid"),
        "measurement_config_hash": record.get("measurement_config_hash"),
        "config": record.get("config"),
        "status": "pending",
        "result_path": None,
    }


def rebuild(study_dir: Path, previous: dict[str, Any] | None = None, *, interrupted: bool = True) -> Rebuilt:
    """The manifest the study's files on disk support.

    ``previous``: the best manifest known (the one on disk when readable, or the copy in a
    running session's memory); without one, the plan. ``interrupted``: no session is running
    the study, so a cell still marked running was cut off (False when the caller is the
    session running it).
    """
    plan = _read_json(study_dir / PLAN_NAME)
    plan = plan if isinstance(plan, dict) and isinstance(plan.get("experiments"), list) else None
    base = previous if previous is not None else plan
    changes: list[str] = []
    records_only = base is None
    if base is None:
        changes.append("neither a readable manifest nor a plan: rebuilt from the records alone")
        base = {"experiments": []}
    data: dict[str, Any] = {k: v for k, v in base.items() if k != "experiments"}
    entries = [dict(e) for e in base["experiments"] if isinstance(e, dict) and isinstance(e.get("experiment_id"), str)]
    known = {e["experiment_id"] for e in entries}
    for extra in (plan or {}).get("experiments", []) if previous is not None else []:
        if isinstance(extra, dict) and extra.get("experiment_id") not in known:
            entries.append({**extra, "status": "pending", "result_path": None})
            known.add(extra["experiment_id"])
            changes.append(f"{extra['experiment_id']}: back from the plan (pending)")
    records = records_on_disk(study_dir)
    for experiment_id, (_, record) in records.items():
        if experiment_id not in known:
            entries.append(_entry_from_record(record))
            changes.append(f"{experiment_id}: found on disk, not in the manifest")
            if records_only and not data:
                data = {
                    "study_name": record.get("study_name"),
                    "study_design_hash": record.get("study_design_hash"),
                    "schema_version": record.get("schema_version"),
                }
    started = _started_positions(study_dir)
    for entry in entries:
        if entry.get("status") not in STATUSES:
            entry["status"] = "pending"  # the plan's entries carry no status
        if interrupted and entry["status"] == "pending" and entry.get("position") in started:
            entry["status"] = "running"  # its directory says it started; the manifest saying so was lost
        changes += _settle(entry, records.get(entry["experiment_id"]), interrupted)
    data["experiments"] = entries
    data.setdefault("start_time", None)
    data.setdefault("end_time", None)
    data["summary"] = summarise(entries, data.get("summary") or {})
    if not data["summary"]["warnings"]:
        data["summary"]["warnings"] = [
            f"{experiment_id}: {w}" for experiment_id, (_, r) in records.items() for w in r.get("warnings") or []
        ]
    return Rebuilt(manifest=data, changes=changes)


def _settle(entry: dict[str, Any], found: tuple[str, dict[str, Any]] | None, interrupted: bool) -> list[str]:
    """Make one entry agree with the disk; the changes made, in words."""
    experiment_id = entry["experiment_id"]
    status = entry.get("status") if entry.get("status") in STATUSES else "pending"
    if found is not None:
        path, record = found
        changed = status != "completed" or entry.get("result_path") != path
        entry.update(status="completed", result_path=path, error=None)
        entry.update({name: record.get(name) for name in RECORD_FIGURES})
        return [f"{experiment_id}: completed (its result.json is on disk)"] if changed else []
    if status == "completed":
        entry.update(status="failed", result_path=None, error="the manifest said completed, but no result.json is on disk")
        return [f"{experiment_id}: failed (its result.json is missing)"]
    if status == "running" and interrupted:
        entry.update(status="failed", error="interrupted: the session ended while this cell ran (no result on disk)")
        return [f"{experiment_id}: failed (interrupted while running)"]
    entry["status"] = status
    return []


def _efficiency(entries: list[dict[str, Any]], wall_time_s: Any) -> dict[str, float | None]:
    """Once the study's wall time is known: its measured windows, summed, and their share of it.

    A completed cell's window is its record's ``total_inference_time_sec``. Under pytest-xdist
    the windows of several GPUs run at once, so the share can exceed 1.
    """
    if not isinstance(wall_time_s, (int, float)):
        return {}
    windows = [e.get("total_inference_time_sec") for e in entries if e["status"] == "completed"]
    measured = float(sum(w for w in windows if isinstance(w, (int, float))))
    return {"measured_window_s": measured, "study_efficiency": measured / wall_time_s if wall_time_s > 0 else None}


def summarise(entries: list[dict[str, Any]], previous: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``summary`` for ``entries``, keeping what the entries cannot tell."""
    energies = [e.get("total_energy_j") for e in entries if e["status"] == "completed"]
    hashes = {e.get("measurement_config_hash") for e in entries if e.get("measurement_config_hash")}
    return {
        "total_experiments": len(entries),
        **{status: sum(e["status"] == status for e in entries) for status in ("completed", "failed", "skipped", "pending", "running")},
        "total_wall_time_s": previous.get("total_wall_time_s"),
        **_efficiency(entries, previous.get("total_wall_time_s")),
        "total_energy_j": sum(v for v in energies if v is not None) if any(v is not None for v in energies) else None,
        "unique_configurations": len(hashes),
        "warnings": list(previous.get("warnings") or []),
    }


class StudyInUse(RuntimeError):
    """Another live session holds the study."""


def hold_in_use(study_dir: Path) -> IO[str]:
    """Say "this process runs the study" until the returned handle is closed (or the process dies)."""
    path = study_dir / IN_USE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open on purpose, for the process's run
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    return handle


def try_hold_alone(study_dir: Path) -> IO[str] | None:
    """The study's in-use lock taken exclusively, or None when another process runs the study."""
    path = study_dir / IN_USE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - returned to the caller, who releases it
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def study_in_use(study_dir: Path) -> bool:
    handle = try_hold_alone(study_dir)
    if handle is None:
        return True
    handle.close()
    return False


def repair(study_dir: Path) -> Rebuilt:
    """Rewrite the manifest of a study no session is running from what is on disk.

    An unreadable manifest is kept beside it as ``manifest.json.corrupt-<stamp>``. Raises
    :class:`StudyInUse` when a live session holds the study.
    """
    handle = try_hold_alone(study_dir)
    if handle is None:
        raise StudyInUse(f"{study_dir}: a running pytest session holds this study; repair it after that session ends")
    try:
        previous = read_valid_manifest(study_dir)
        manifest_path = study_dir / MANIFEST_FILE
        if previous is None and manifest_path.exists():
            kept = manifest_path.with_name(f"{MANIFEST_FILE}.corrupt-{utc_stamp()}")
            os.replace(manifest_path, kept)
        rebuilt = rebuild(study_dir, previous, interrupted=True)
        if previous is None:
            rebuilt.changes.insert(0, "the manifest was unreadable or missing: rebuilt from the plan and the records")
        if rebuilt.changes or previous is None:
            write_json_atomic(manifest_path, rebuilt.manifest)
        return rebuilt
    finally:
        handle.close()
