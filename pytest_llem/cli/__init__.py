"""The command line, ``python -m pytest_llem COMMAND``: the everyday questions asked between runs.

``ls`` (which studies are on disk), ``show`` (one study's table and statistics), ``compare`` (two
studies judged by the regression gate's test), ``doctor`` (what this machine can measure) and
``repair`` (a manifest rebuilt from the records on disk), ``schema`` (the JSON Schema of study files). One module per command, each with ``add_parser``
and ``run``; this module only dispatches. The commands read results and ask the layers below
(results, verdicts, report, energy, engines); nothing here knows pytest.

Exit status: 0 when the command did what was asked, 1 when ``compare`` found a regression, 2 for
a usage error (an unknown option, a path that does not exist, results that cannot be read).
"""

from __future__ import annotations

import argparse
import sys

from pytest_llem.cli import compare, doctor, export, ls, merge, recommend, repair, report, schema, show, submit
from pytest_llem.cli.common import UsageProblem

PROG = "python -m pytest_llem"
COMMANDS = (ls, show, compare, doctor, repair, schema, merge, submit, recommend, export, report)
DESCRIPTION = (
    "pytest-llem's everyday commands: list, show and compare study results, check what this machine can "
    "measure, print the study file schema. Studies themselves run under pytest: pytest STUDY.llem.yaml."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (a usage error is 2, with its message on stderr)."""
    from pytest_llem.errors import LlemError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own usage errors and --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status: int = args.run(args)
    except (UsageProblem, LlemError) as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return 2
    return status


__all__ = ["build_parser", "main"]
