"""``show DIR``: a study's table, statistics and warnings, as the run printed them at its end.

The end-of-run summary scrolls away, and a study run by CI or on another machine was never seen
at all. This reads the study back from disk and renders it with the session's own functions
(:func:`pytest_llem.report.terminal.summary_sections`), so what ``show`` prints cannot drift from
what a run prints. The statistics are computed in memory and nothing is written: ``show`` may
point at a directory it must not change (a colleague's, a read-only copy, a study still running).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llem.cli.common import Commands, emit_json, emit_lines, existing_path, separator

if TYPE_CHECKING:
    from pytest_llem.results.loader import StudyResult

#: The record's headline figures that ``--json`` gives per cell (the table's columns, and adjusted mJ/token).
CELL_FIGURES = (
    "total_tokens", "total_inference_time_sec", "avg_tokens_per_second", "total_energy_j",
    "mj_per_tok_total", "mj_per_tok_adjusted",
)  # fmt: skip


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "show",
        help="print a study's table, statistics and warnings as at the end of its run",
        description="Print a study's per-cell table, its statistics across cycles and its warnings, as the run "
        "printed them at its end. DIR is a study directory, its manifest.json, or a results directory "
        "(its newest study). Nothing is written.",
    )
    parser.add_argument("study_dir", type=Path, metavar="DIR", help="the study directory (ls lists them)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


def _cells(result: StudyResult) -> list[dict[str, Any]]:
    """Every cell of the manifest in run order, with its record's figures where it completed."""
    records = {r.get("experiment_id"): r for r in result.experiments}
    cells: list[dict[str, Any]] = []
    for entry in result.records(status=None):
        record = records.get(entry.get("experiment_id"), {})
        cells.append(
            {
                "experiment_id": entry.get("experiment_id"),
                "config_id": entry.get("config_id"),
                "cycle": entry.get("cycle"),
                "status": entry.get("status"),
                "verdict": entry.get("verdict"),
                **{name: record.get(name) for name in CELL_FIGURES},
                "warnings": list(record.get("warnings") or []),
                "error": entry.get("error"),
                "skip_reason": entry.get("skip_reason"),
            }
        )
    return cells


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "(no reason recorded)"


def _extra_lines(result: StudyResult) -> list[str]:
    """What the run said elsewhere than its table: why cells did not complete, the study's own warnings.

    The study's warnings (a sweep of more cells than meant, say) were pytest warnings at collection.
    """
    out: list[str] = []
    missing = [(e["experiment_id"], e.get("error")) for e in result.failed_experiments]
    missing += [(e["experiment_id"], e.get("reason")) for e in result.skipped_experiments]
    if missing:
        out += ["", "cells without a result:"]
        out += [f"  {eid}: {_first_line(why)}" for eid, why in missing]
    # The manifest also repeats each cell's warnings as "<cell>: ..."; the table has those already.
    cells = tuple(f"{e.get('experiment_id')}: " for e in result.records(status=None))
    study_warnings = [str(w) for w in result.summary.get("warnings") or [] if not str(w).startswith(cells)]
    if study_warnings:
        out += ["", "study warnings:", *(f"  {w}" for w in study_warnings)]
    return out


def run(args: argparse.Namespace) -> int:
    from pytest_llem.report.terminal import summary_sections
    from pytest_llem.results.loader import load_results
    from pytest_llem.verdicts.finalize import FinalizedStudy
    from pytest_llem.verdicts.statistics import summarise_groups

    result = load_results(existing_path(args.study_dir, "study directory"))
    groups = summarise_groups(result.experiments) if result.experiments else []
    lines: list[str] = []
    for title, body in summary_sections([FinalizedStudy(result, groups)], []):
        lines += [separator(title), *body]
    lines += _extra_lines(result)
    if args.json:
        emit_json(
            {
                "study_name": result.study_name,
                "study_dir": str(result.study_dir),
                "study_design_hash": result.study_design_hash,
                "start_time": result.manifest.get("start_time"),
                "end_time": result.manifest.get("end_time"),
                "summary": result.summary,
                "cells": _cells(result),
                "statistics": [g.to_json() for g in groups],
                "lines": lines,
            }
        )
        return 0
    emit_lines(lines)
    return 0
