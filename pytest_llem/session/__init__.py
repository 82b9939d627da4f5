"""The pytest session of pytest-llem (see :mod:`pytest_llem.session.core`): what plugin.py and xdist.py call.

Imported in every pytest run, studies or not: nothing here imports more than pytest at module level.
"""

from __future__ import annotations

from pytest_llem.session.common import as_cell
from pytest_llem.session.core import SESSION_KEY, LlemSession, session_of
from pytest_llem.session.workers import LlemContentionWarning

__all__ = ["SESSION_KEY", "LlemContentionWarning", "LlemSession", "as_cell", "session_of"]
