"""``report DIR... [--out FILE] [--where QUERY]``: one study, or several merged, as one HTML page with figures.

The page a run writes with ``--llem-report=html``, on demand: for a study run elsewhere, for
several studies together (one page; configurations measured on different GPUs stay apart), or
with a recommendation (``--where "itl_s.p50 <= 0.1"``). The figures go to ``plots/`` beside the
page as SVG and PNG. Needs matplotlib (the ``plot`` extra); without it the command says so and
writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines, existing_path


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "report",
        help="write a study's HTML report (summary, recommendation, figures), or one for several studies",
        description="Write one self-contained HTML page for the studies given: the configurations with their"
        " intervals and validity flags, the Pareto frontiers, energy per token by configuration, cycle-to-cycle"
        " drift, GPU telemetry, the environment, links to the records. Each DIR is a study directory, its"
        " manifest.json, or a results directory (its newest study). The figures are written to plots/ next to"
        " the page. Needs matplotlib: pip install 'pytest-llem[plot]'.",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a study directory (ls lists them)")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE",
        help="the page to write (default: DIR/report.html for one study, ./report.html for several)",
    )  # fmt: skip
    parser.add_argument(
        "--where", default=None, metavar="QUERY",
        help="recommend a configuration: 'minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1', or only the"
        " conditions ('itl_s.p50 <= 0.1 and ttft_s.p95 <= 1')",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pytest_llem.report.study_report import ReportUnavailable, check_matplotlib, write_report

    dirs = [existing_path(d, "study directory") for d in args.dirs]
    if args.out is not None and args.out.is_dir():
        raise UsageProblem(f"--out {args.out} is a directory: name the page to write, e.g. {args.out / 'report.html'}")
    try:
        check_matplotlib()
        written = write_report(dirs, args.out, where=args.where)
    except ReportUnavailable as exc:
        raise UsageProblem(str(exc)) from None
    except OSError as exc:
        raise UsageProblem(f"cannot write the report {args.out or ''}: {exc}".replace("  ", " ")) from None
    if args.json:
        emit_json({"report": str(written.page), "plots": [str(p) for p in written.plots]})
        return 0
    emit_lines([f"report: {written.page}", f"figures: {len(written.plots) // 2} (SVG and PNG) in {written.page.parent / 'plots'}"])
    return 0
