"""What every part of the session shares: telling cells from other tests, and saying disk errors.

Imports only pytest at module level, like the rest of the session (it loads in every pytest run).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_llem.study.files import is_study_file

if TYPE_CHECKING:
    from pytest_llem.execution.study_run import CellRef
    from pytest_llem.nodes import CellItem


def as_cell(item: pytest.Item) -> CellItem | None:
    """The item as a cell, else None.

    Only a ``StudyFile`` makes cells, and it lives in nodes.py: while that module was never
    imported, no item can be a cell, and a session without studies need not import it (nor
    pydantic behind it) to find that out.
    """
    if "pytest_llem.nodes" not in sys.modules:
        return None
    from pytest_llem.nodes import CellItem

    return item if isinstance(item, CellItem) else None


def cell_ref(item: CellItem) -> CellRef:
    """What the study's run needs of a cell item: its configuration, cycle, place and node id."""
    from pytest_llem.execution.study_run import CellRef

    return CellRef(item.configuration, item.cycle, item.position, item.nodeid)


def names_studies(config: pytest.Config) -> bool:
    """Whether study files are named on the command line."""
    return any(is_study_file(a) for a in config.args)


def os_error(exc: OSError) -> str:
    """``[Errno 30] Read-only file system: '/path'``: the error and the file it hit (not a temporary one)."""
    text = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc)
    temporary = Path(os.fsdecode(exc.filename)).name.startswith(".") if exc.filename else True
    return text if temporary else f"{text}: {exc.filename!r}"


def disk_fix(exc: OSError) -> str:
    return "free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
