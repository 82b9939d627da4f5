"""python -m pytest_llem: the command line; the commands live in pytest_llem.cli."""

from __future__ import annotations

import sys

from pytest_llem.cli import main

if __name__ == "__main__":
    sys.exit(main())
