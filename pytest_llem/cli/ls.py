"""``ls [RESULTS_DIR]``: which studies are on disk, newest first, and how far each got.

A user's first question after a few runs is "which directory was that?". Each study directory's
``manifest.json`` already knows its name, when it started and every cell's status (it is
rewritten as each cell starts and ends), so this reads manifests only: no records, no
statistics, and it answers at once even for a study that is still running or was cut off.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines, existing_path, table

STATUSES = ("completed", "failed", "skipped", "pending", "running")
DEFAULT_RESULTS_DIR = Path("results")


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "ls",
        help="list the study directories under a results directory, newest first",
        description="List the study directories under RESULTS_DIR (default ./results), newest first: "
        "study name, start time and how many cells are completed, failed, skipped, pending or running.",
    )
    parser.add_argument(
        "results_dir", nargs="?", type=Path, default=DEFAULT_RESULTS_DIR, metavar="RESULTS_DIR",
        help="where the runs wrote their studies (--llem-results-dir; default ./results)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


def describe(study_dir: Path) -> dict[str, Any]:
    """One study as ``ls`` lists it, from its manifest (an unreadable one says so, not raises)."""
    from pytest_llem.results.manifest import read_manifest

    manifest = read_manifest(study_dir)
    entries = [e for e in manifest.get("experiments") or [] if isinstance(e, dict)]
    counts = {status: sum(e.get("status") == status for e in entries) for status in STATUSES}
    return {
        "study_dir": str(study_dir),
        "study_name": manifest.get("study_name") or None,
        "start_time": manifest.get("start_time"),
        "end_time": manifest.get("end_time"),
        "cells": len(entries),
        "counts": counts,
        "readable": bool(manifest),
    }


def run(args: argparse.Namespace) -> int:
    from pytest_llem.results.loader import study_dirs

    root: Path = existing_path(args.results_dir, "results directory")
    if not root.is_dir():
        raise UsageProblem(f"results directory {root} is not a directory")
    studies = [describe(d) for d in reversed(study_dirs(root))]
    if args.json:
        emit_json({"results_dir": str(root), "studies": studies})
        return 0
    if not studies:
        emit_lines([f"no study directories under {root} (a study directory holds a manifest.json)"])
        return 0
    rows = [
        (
            s["study_name"] or "(unreadable manifest)",
            s["start_time"] or "-",
            *(str(s["counts"][status]) for status in STATUSES),
            Path(s["study_dir"]).name,
        )
        for s in studies
    ]
    lines = table(("study", "started", *STATUSES, "directory"), rows, align="llrrrrrl")
    emit_lines([*lines, "", f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} under {root}"])
    return 0
