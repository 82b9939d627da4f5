"""``python -m pytest_llem schema``: print the JSON Schema of study files."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_llem", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="print the JSON Schema of *.llem.yaml study files")
    args = parser.parse_args(argv)
    if args.command == "schema":
        from pytest_llem.study.jsonschema import study_json_schema_text

        sys.stdout.write(study_json_schema_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
