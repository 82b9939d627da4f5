"""``schema``: the JSON Schema of study files, for editors and for the copy committed in docs/."""

from __future__ import annotations

import argparse
import sys

from pytest_llem.cli.common import Commands


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "schema",
        help="print the JSON Schema of *.llem.yaml study files",
        description="Print the JSON Schema of *.llem.yaml study files (the copy in docs/llem-study.schema.json is this output).",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pytest_llem.study.jsonschema import study_json_schema_text

    sys.stdout.write(study_json_schema_text())
    return 0
