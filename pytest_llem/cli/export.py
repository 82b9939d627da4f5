"""``export DIR... --out table.parquet|table.csv``: one tidy table of one or many studies.

Every study under the paths is loaded and merged (:func:`pytest_llem.results.loader.load_results` with
``all_studies=True``: duplicates removed, the newer study's record kept) and written as one row
per cell (:func:`pytest_llem.report.dataset.export_table`), for pandas, polars or DuckDB.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from pytest_llem.cli.common import Commands, UsageProblem, emit_lines, existing_path


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "export",
        help="write one tidy table (Parquet or CSV) of one or many studies",
        description="Load every study under the paths (study directories, manifest.json files or results "
        "directories), merge them (a cell recorded twice is kept once: the newer study's) and write one row per "
        "cell, its figures, validity flags, hardware and flattened configuration (config.<dotted path>).",
    )
    parser.add_argument("paths", type=Path, nargs="+", metavar="DIR", help="study or results directories")
    parser.add_argument("--out", type=Path, required=True, help="the table to write: a .parquet or .csv file")
    parser.add_argument("--exclude-flagged", action="store_true", help="leave out cells with validity flags")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pytest_llem.errors import LlemError
    from pytest_llem.report.dataset import export_table, table_format
    from pytest_llem.results.loader import load_results

    paths = [existing_path(p, "results path") for p in args.paths]
    try:
        table_format(args.out)
    except LlemError as exc:
        raise UsageProblem(f"--out: {exc}") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_results(*paths, all_studies=True, exclude_flagged=args.exclude_flagged)
    written = export_table(result, args.out)
    for w in caught:
        sys.stderr.write(f"warning: {w.message}\n")
    lines = []
    lines.append(
        f"wrote {len(result.experiments)} row(s) from {len(result.studies)} study(ies) to {written}"
        + (f"; {len(result.duplicates)} duplicate record(s) left out" if result.duplicates else "")
        + (f"; {len(result.excluded_flagged)} flagged record(s) left out" if result.excluded_flagged else "")
    )
    emit_lines(lines)
    return 0
