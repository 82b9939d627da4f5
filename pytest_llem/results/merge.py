"""Shards of one study, run on several machines, made one study directory again.

Each shard (``pytest --llem-shard=K/N``) writes a study directory of its own holding its cells
only. Merging makes one directory that honours the results contract as a local run's does, so
``show``, ``compare`` (the regression gate on a finished study), ``repair``, ``ls`` and
``load_results`` read it unchanged:

* the cell directories (records, time series, logs) are carried over unchanged: hard-linked
  where the file system allows, copied otherwise. Every record keeps its ``provenance``, so it
  still names the host and GPU it ran on;
* one manifest lists every cell of every shard, its counts recomputed (sums of the shards'),
  the shards themselves under ``shards`` and the merge under ``merged`` (complete or not, and the
  cells of the study no shard holds);
* one plan (``_study-artefacts/plan.json``), the union of the shards' plans, so ``repair`` can
  rebuild the merged manifest as it rebuilds any other.

Refused, naming what is wrong: shards of different studies (name or design hash), a cell held
by two directories (a shard given twice, or a failed shard and its re-run: pass the re-run
only), a directory a live session is still writing, an output that already holds something.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.results.loader import study_dirs
from pytest_llem.results.repair import (
    MANIFEST_FILE,
    PLAN_NAME,
    read_valid_manifest,
    rebuild,
    study_in_use,
    summarise,
    write_plan,
)
from pytest_llem.results.writer import utc_iso, write_json_atomic

SHARD_FILE = "_study-artefacts/shard.json"
ARTEFACTS = "_study-artefacts"
#: Manifest keys about the study as a whole, taken from the shards (they must agree on the design hash).
HEADER_KEYS = ("schema_version", "llenergymeasure_version", "study_name", "study_file", "study_design_hash", "measurement_protocol")


class MergeRefused(ValueError):
    """The directories cannot be merged into one study (the message says which and why)."""


@dataclass
class Source:
    """One shard's study directory as its files tell it."""

    study_dir: Path
    manifest: dict[str, Any]
    shard: dict[str, Any] | None
    plan: list[dict[str, Any]]


@dataclass
class MergeResult:
    """The merged study, and what the merge found."""

    study_dir: Path
    manifest: dict[str, Any]
    missing_cells: list[str] = field(default_factory=list)
    not_completed: list[str] = field(default_factory=list)
    linked: int = 0
    copied: int = 0

    @property
    def complete(self) -> bool:
        return not self.missing_cells and not self.not_completed


def _read(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def expand(paths: list[Path]) -> list[Path]:
    """Study directories from ``paths``: a study directory itself, or every study under a results directory."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise MergeRefused(f"{path} is not a directory (expected a shard's study directory)")
        if (path / MANIFEST_FILE).exists() or (path / ARTEFACTS).is_dir():
            found.append(path)
            continue
        inside = study_dirs(path)
        if not inside:
            raise MergeRefused(f"{path} is neither a study directory (no manifest.json) nor a results directory holding any")
        found += inside
    return list(dict.fromkeys(p.resolve() for p in found))


def _source(study_dir: Path) -> Source:
    if study_in_use(study_dir):
        raise MergeRefused(f"{study_dir}: a running pytest session still holds this study; merge it when the shard has ended")
    previous = read_valid_manifest(study_dir)
    if previous is None and not (study_dir / PLAN_NAME).is_file():
        raise MergeRefused(
            f"{study_dir}: no readable manifest.json and no plan; run python -m pytest_llem repair {study_dir} first"
        )
    # The shard's manifest made to agree with its records: a cell is completed when its record is on disk.
    manifest = rebuild(study_dir, previous, interrupted=True).manifest
    shard = _read(study_dir / SHARD_FILE)
    plan = _read(study_dir / PLAN_NAME)
    entries = plan.get("experiments") if isinstance(plan, dict) else None
    return Source(
        study_dir=study_dir,
        manifest=manifest,
        shard=shard if isinstance(shard, dict) else None,
        plan=[e for e in entries or [] if isinstance(e, dict) and isinstance(e.get("experiment_id"), str)],
    )


def _check_same_study(sources: list[Source]) -> None:
    first = sources[0]
    for other in sources[1:]:
        for key in ("study_name", "study_design_hash"):
            a, b = first.manifest.get(key), other.manifest.get(key)
            if a != b:
                raise MergeRefused(
                    f"{first.study_dir} and {other.study_dir} are not shards of one study: {key} {a!r} there,"
                    f" {b!r} here; merge the shards of one study file as it was for all of them"
                )


def _check_no_duplicates(sources: list[Source]) -> None:
    held: dict[str, Path] = {}
    for source in sources:
        for entry in source.manifest["experiments"]:
            experiment_id = entry["experiment_id"]
            if experiment_id in held:
                raise MergeRefused(
                    f"cell {experiment_id} is in both {held[experiment_id]} and {source.study_dir}: give each shard"
                    " once (after re-running a failed shard, give the re-run's directory, not the failed one's)"
                )
            held[experiment_id] = source.study_dir


def _cell_dirs(source: Source) -> list[Path]:
    return sorted(p for p in source.study_dir.iterdir() if p.is_dir() and p.name.split("_", 1)[0].isdigit())


def _carry(src: Path, dst: Path, counts: dict[str, int]) -> None:
    """``src``'s tree at ``dst``: files hard-linked (same file system) or copied, unchanged either way."""
    for root, _, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(Path(root) / name, target / name)
                counts["linked"] += 1
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                shutil.copy2(Path(root) / name, target / name)
                counts["copied"] += 1


def _hosts(study_dir: Path, entries: list[dict[str, Any]]) -> list[str]:
    """The hosts the shard's records say they ran on."""
    hosts: list[str] = []
    for entry in entries:
        path = entry.get("result_path")
        record = _read(study_dir / path) if isinstance(path, str) else None
        host = ((record or {}).get("provenance") or {}).get("hostname") if isinstance(record, dict) else None
        if isinstance(host, str) and host not in hosts:
            hosts.append(host)
    return hosts


def _shard_entry(source: Source) -> dict[str, Any]:
    entries = source.manifest["experiments"]
    summary = source.manifest.get("summary") or {}
    return {
        "dir": str(source.study_dir),
        "shard": (source.shard or {}).get("shard"),
        "by": (source.shard or {}).get("by"),
        "hosts": _hosts(source.study_dir, entries) or [h for h in [(source.shard or {}).get("host")] if isinstance(h, str)],
        "cells": [e["experiment_id"] for e in entries],
        "completed": sum(e.get("status") == "completed" for e in entries),
        "start_time": source.manifest.get("start_time"),
        "end_time": source.manifest.get("end_time"),
        "wall_time_s": summary.get("total_wall_time_s"),
    }


def _expected_cells(sources: list[Source]) -> list[str]:
    """Every cell of the study as the shards' plans say (empty when no source is a shard)."""
    cells: list[str] = []
    for source in sources:
        for cell in (source.shard or {}).get("all_cells") or []:
            if isinstance(cell, str) and cell not in cells:
                cells.append(cell)
    return cells


def _prepare_out(out: Path, sources: list[Source]) -> None:
    if any(out.resolve() == s.study_dir for s in sources):
        raise MergeRefused(f"{out} is one of the shards: merge into a new directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeRefused(f"{out} already exists and is not empty: merge into a new directory")
    out.mkdir(parents=True, exist_ok=True)


def merge_studies(out: Path, paths: list[Path]) -> MergeResult:
    """Merge the shards' study directories ``paths`` into the new study directory ``out``."""
    sources = [_source(p) for p in expand(paths)]
    if not sources:
        raise MergeRefused("no study directories to merge")
    _check_same_study(sources)
    _check_no_duplicates(sources)
    names: dict[str, Path] = {}
    for source in sources:
        for cell_dir in _cell_dirs(source):
            if cell_dir.name in names:
                raise MergeRefused(f"cell directory {cell_dir.name} is in both {names[cell_dir.name]} and {source.study_dir}")
            names[cell_dir.name] = source.study_dir
    _prepare_out(out, sources)
    counts = {"linked": 0, "copied": 0}
    for source in sources:
        for cell_dir in _cell_dirs(source):
            _carry(cell_dir, out / cell_dir.name, counts)
        for name in ("shard.json", "plan.json"):
            kept = source.study_dir / ARTEFACTS / name
            if kept.is_file():
                target = out / ARTEFACTS / "shards" / source.study_dir.name
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(kept, target / name)
    manifest, missing, not_completed = _merged_manifest(sources)
    header = {k: manifest[k] for k in HEADER_KEYS if k in manifest}
    plan: dict[str, dict[str, Any]] = {}
    for source in sources:
        for entry in source.plan or [{k: v for k, v in e.items() if k not in ("status", "result_path")} for e in source.manifest["experiments"]]:
            plan.setdefault(entry["experiment_id"], entry)
    write_plan(out, header, sorted(plan.values(), key=_order))
    write_json_atomic(out / MANIFEST_FILE, manifest)  # last: a merge cut off midway leaves no manifest claiming a study
    return MergeResult(out, manifest, missing, not_completed, counts["linked"], counts["copied"])


def _order(entry: dict[str, Any]) -> tuple[int, str]:
    position = entry.get("position")
    return (position if isinstance(position, int) else 1 << 30, str(entry.get("experiment_id")))


def _merged_manifest(sources: list[Source]) -> tuple[dict[str, Any], list[str], list[str]]:
    first = sources[0].manifest
    entries = sorted((dict(e) for s in sources for e in s.manifest["experiments"]), key=_order)
    held = {e["experiment_id"] for e in entries}
    missing = [cell for cell in _expected_cells(sources) if cell not in held]
    not_completed = [e["experiment_id"] for e in entries if e.get("status") not in ("completed", "skipped")]
    warnings: list[str] = []
    for source in sources:
        for warning in (source.manifest.get("summary") or {}).get("warnings") or []:
            if warning not in warnings:
                warnings.append(warning)
    if missing:
        shown = ", ".join(missing[:8]) + (f", +{len(missing) - 8} more" if len(missing) > 8 else "")
        warnings.append(f"merged study incomplete: {len(missing)} cell(s) of the study are in no shard given: {shown}")
    if not_completed:
        warnings.append(f"merged study incomplete: {len(not_completed)} cell(s) did not complete on their shard")
    walls = [w for w in ((s.manifest.get("summary") or {}).get("total_wall_time_s") for s in sources) if isinstance(w, (int, float))]
    starts = [t for t in (s.manifest.get("start_time") for s in sources) if isinstance(t, str)]
    ends = [s.manifest.get("end_time") for s in sources]
    manifest: dict[str, Any] = {
        **{k: first[k] for k in HEADER_KEYS if k in first},
        "start_time": min(starts) if starts else None,
        "end_time": max(e for e in ends if isinstance(e, str)) if ends and all(isinstance(e, str) for e in ends) else None,
        "experiments": entries,
        # The shards' wall times summed: machine time, not the span (the shards ran side by side).
        "summary": summarise(entries, {"total_wall_time_s": float(sum(walls)) if walls else None, "warnings": warnings}),
        "shards": [_shard_entry(s) for s in sources],
        "merged": {
            "at": utc_iso(),
            "complete": not missing and not not_completed,
            "sources": len(sources),
            "missing_cells": missing,
            "not_completed": not_completed,
        },
    }
    return manifest, missing, not_completed
