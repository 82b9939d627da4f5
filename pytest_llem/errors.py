"""The exception hierarchy of pytest-llem.

One base class, so callers can catch everything we raise on purpose with a single ``except``,
and a few branches named after who has to act: the author of a study file
(:class:`StudyError`), the environment (:class:`EngineUnavailable`, :class:`MeterUnavailable`),
or a single cell that went wrong at run time (:class:`CellError` and its kinds).
"""

from __future__ import annotations


class LlemError(Exception):
    """Base of every error pytest-llem raises deliberately."""


class StudyError(LlemError):
    """A study file cannot be read or validated; the message is meant for its author.

    ``problems`` holds every problem found in the file, each already formatted as
    ``file:line: key.path: message`` so that all of them can be shown at once.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{path}: {len(self.problems)} {noun}\n" + "\n".join(self.problems))


class EngineUnavailable(LlemError):
    """An engine's package is not installed or cannot run here; names the extra to install."""


class MeterUnavailable(LlemError):
    """The requested energy meter cannot measure on this machine."""


class MeasurementRefused(LlemError):
    """The cell's conditions make a trustworthy measurement impossible (MIG, a busy GPU)."""


class LimitBreached(LlemError):
    """A cell was measured, and a figure broke a limit (or could not be judged)."""


class CellError(LlemError):
    """A single cell failed; the session goes on.

    ``log_tail`` is the end of the child's log and ``child_traceback`` the traceback the child
    reported, so the failed test report shows what happened inside the isolated process.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.log_tail = ""
        self.child_traceback = ""
        self.phases: list[str] = []


class CellCrashed(CellError):
    """The cell's child process died (signal, non-zero exit) or reported an exception."""


class CellStartupFailed(CellCrashed):
    """The child died or stalled before the handshake said it was ready."""


class CellEngineUnavailable(CellError):
    """The cell's engine cannot run in this environment (its package is missing, say).

    Not a crash: the session's ``--llem-missing-engine`` policy decides whether the cell fails
    with this message or is skipped with it.
    """


class CellTimeout(CellError):
    """The cell ran past its time limit and its process group was killed."""
