"""What a running cell is doing, in pytest's terminal, while it runs.

A cell takes seconds to minutes (process start, imports, model load, warm-up, the measured
window), and pytest shows nothing until it ends. The child reports its phases through the
runner (``run_in_child(on_phase=...)``); this shows them:

* on a terminal (TTY): after the cell's place on pytest's line, ``[llem: measure 4/10 s]``,
  rewritten in place as the cell moves on and erased before pytest writes the outcome;
* elsewhere (CI logs): a plain line per phase change, and one per ten seconds of the window;
* under ``-q`` (verbosity below 0), in pytest-xdist workers (whose output nobody sees) and
  without a terminal reporter: nothing.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from typing import cast

import pytest

#: Seconds between two plain lines about one window, where lines cannot be rewritten.
PLAIN_DETAIL_EVERY_S = 10.0


class CellProgress:
    """One cell's progress on pytest's terminal; call :meth:`close` when the cell ends."""

    def __init__(self, config: pytest.Config, nodeid: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        # While a test runs pytest captures file descriptor 1, where the terminal writer writes:
        # progress must go around the capture, as pytest's own live logging does.
        self._capture = config.pluginmanager.get_plugin("capturemanager")
        quiet = config.get_verbosity() < 0 or hasattr(config, "workerinput")
        self._reporter: pytest.TerminalReporter | None = None if quiet else reporter
        self._tty = bool(getattr(reporter, "isatty", False))
        self._nodeid = nodeid
        self._shown = 0  # characters of our suffix on the current line (TTY)
        self._last_phase: str | None = None
        self._last_plain = 0.0

    def __call__(self, phase: str, detail: str | None) -> None:
        if self._reporter is None:
            return
        text = f"{phase} {detail}" if detail else phase
        with self._uncaptured():
            if self._tty:
                self._rewrite(f" [llem: {text}]")
            elif phase != self._last_phase or time.monotonic() - self._last_plain >= PLAIN_DETAIL_EVERY_S:
                self._reporter.write_line(f"[llem] {self._nodeid}: {text}")
                self._last_plain = time.monotonic()
        self._last_phase = phase

    def _uncaptured(self) -> AbstractContextManager[None]:
        if self._capture is None:
            return contextlib.nullcontext()
        return cast("AbstractContextManager[None]", self._capture.global_and_fixture_disabled())

    def _rewrite(self, suffix: str) -> None:
        """Replace our suffix at the end of pytest's current line (backspaces keep pytest's part)."""
        assert self._reporter is not None
        erase = "\b" * self._shown + " " * self._shown + "\b" * self._shown
        self._reporter.write(erase + suffix)
        self._reporter.flush()
        self._shown = len(suffix)

    def close(self) -> None:
        """Take our suffix off the line, so pytest's outcome follows its own text."""
        if self._reporter is not None and self._tty and self._shown:
            with self._uncaptured():
                self._rewrite("")
