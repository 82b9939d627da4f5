"""``merge OUT DIR...``: the shards of a study, run on several machines, made one study directory.

``pytest --llem-shard=K/N`` runs a share of a study's cells into a directory of its own; this
command joins those directories (results/merge.py) so that statistics, limits and the gate run
on the whole study as on a local run: ``show OUT``, ``compare BASELINE OUT`` (exit 1 on a
regression), ``repair OUT``, ``ls``. A DIR may also be a results directory: every study in it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "merge",
        help="merge the shards of a study (pytest --llem-shard=K/N) into one study directory",
        description="Merge the study directories of a study's shards into the new study directory OUT: records,"
        " time series and logs carried over unchanged (hard-linked where possible), one manifest whose counts"
        " are the shards' sums, listing the shards and any cell of the study no shard holds. Refused when the"
        " directories hold different studies (name or design hash) or one cell twice.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="the merged study directory (new, or empty)")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a shard's study directory, or a results directory")
    parser.add_argument(
        "--require-complete",
        action="store_true",
        help="exit 1 when the merged study is incomplete (a cell in no shard, or a cell that did not complete)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pytest_llem.results.merge import MergeRefused, merge_studies

    try:
        merged = merge_studies(Path(args.out), [Path(d) for d in args.dirs])
    except MergeRefused as exc:
        raise UsageProblem(str(exc)) from None
    except OSError as exc:
        raise UsageProblem(f"cannot write the merged study {args.out}: {exc}") from None
    manifest = merged.manifest
    summary = manifest["summary"]
    if args.json:
        emit_json(
            {
                "study_dir": str(merged.study_dir),
                "study_name": manifest.get("study_name"),
                "study_design_hash": manifest.get("study_design_hash"),
                "complete": merged.complete,
                "missing_cells": merged.missing_cells,
                "not_completed": merged.not_completed,
                "shards": manifest["shards"],
                "summary": summary,
                "files_linked": merged.linked,
                "files_copied": merged.copied,
            }
        )
    else:
        dirs = f"{len(manifest['shards'])} shard director{'y' if len(manifest['shards']) == 1 else 'ies'}"
        head = (
            f"merged {dirs} of {manifest.get('study_name')} into {merged.study_dir}: {summary['total_experiments']} cells,"
            f" {summary['completed']} completed, {summary['failed']} failed, {summary['skipped']} skipped"
            f" ({merged.linked} files linked, {merged.copied} copied)"
        )
        lines = [head]
        for shard in manifest["shards"]:
            label = f"shard {shard['shard']}" if shard.get("shard") else "whole run"
            hosts = ", ".join(shard["hosts"]) or "host unknown"
            lines.append(f"  {label}: {len(shard['cells'])} cells ({shard['completed']} completed) on {hosts}: {shard['dir']}")
        if merged.complete:
            lines.append("complete: every cell of the study is here and completed")
        else:
            lines.append("INCOMPLETE:")
            if merged.missing_cells:
                lines.append(f"  in no shard given ({len(merged.missing_cells)}): {', '.join(merged.missing_cells)}")
            if merged.not_completed:
                lines.append(f"  did not complete ({len(merged.not_completed)}): {', '.join(merged.not_completed)}")
            lines.append("  re-run the shard that holds them with the same --llem-shard, then merge again with its new directory")
        lines.append(f"next: python -m pytest_llem show {merged.study_dir}; gate: python -m pytest_llem compare BASELINE {merged.study_dir}")
        emit_lines(lines)
    return 1 if args.require_complete and not merged.complete else 0
