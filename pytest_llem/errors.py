"""The exception hierarchy of pytest-llem.

One base class, so callers can catch everything we raise on purpose with a single ``except``,
and a few branches named after who has to act: the author of a study file
(:class:`StudyError`), the environment (:class:`EngineUnavailable`, :class:`MeterUnavailable`),
or a single cell that went wrong at run time (:class:`CellError` and its kinds), or results
on disk (:class:`ResultsError`). Every exception pytest-llem defines lives in this module.
"""

from __future__ import annotations

from typing import Any


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


class LimitSyntaxError(LlemError):
    """A limit, a metric name or a ``--llem-compare-fail`` rule that cannot be understood."""


class PromptSourceError(LlemError, ValueError):
    """A prompt source cannot be read; names the path (and line, field) to fix.

    A ``ValueError`` too, since the problem is a bad value in the study file.
    """


class EngineUnavailable(LlemError):
    """An engine's package is not installed or cannot run here; names the extra to install."""


class MeterUnavailable(LlemError):
    """The requested energy meter cannot measure on this machine."""


class MeasurementRefused(LlemError):
    """The cell's conditions make a trustworthy measurement impossible (MIG, a busy GPU)."""


class MeasurementInvalid(LlemError):
    """A measurement was taken but its figures cannot be true, so none of them is recorded.

    A stuck or reset energy counter (a window of 0 J or less), an idle power of 0 W or less, or
    the counter and the integral of sampled power disagreeing beyond
    ``measurement.cross_check_fail_tolerance``. Raised instead of recording the figure, because
    a 0 J window passes every ``max:`` limit and every gate.
    """


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


class ResultsWriteError(CellError):
    """A cell's results could not be written (a full or read-only disk, an unwritable directory).

    The message names the path, the operating system's error, what of the cell was kept (its
    figures, when it was measured and its record could not be written) and how to continue.
    The session stops after it: every later cell would be measured for nothing.
    """


class ResultsError(LlemError):
    """Results on disk cannot be loaded; the message names the path."""


class ResultsNotFound(ResultsError):
    """No manifest where one was expected, or a completed cell's ``result.json`` is missing."""


class ResultsUnreadable(ResultsError):
    """A manifest or ``result.json`` exists but is not readable JSON of the expected shape."""


class BaselineUnreadable(ResultsUnreadable):
    """A stored baseline, or the last run's figures in pytest's cache, is unreadable or malformed.

    The message names the file (or cache key), the dotted key inside it and what was expected.
    The regression gate refuses to compare with it, which fails the session: a corrupt baseline
    that let every configuration pass would be a gate that is silently off.
    """


class StudyFailedToRun(LlemError):
    """:func:`~pytest_llem.run_study` produced no study directory; ``output`` is pytest's output."""

    def __init__(self, message: str, output: str = "", returncode: int | None = None) -> None:
        super().__init__(message)
        self.output = output
        self.returncode = returncode


class StudyTimeout(LlemError):
    """The run passed :func:`~pytest_llem.run_study`'s ``timeout`` and was interrupted.

    ``result`` is the :class:`~pytest_llem.StudyResult` the study had recorded by then (its
    manifest shows the interrupted cell), or None when it had written nothing. Typed loosely:
    this module sits below the results layer and imports nothing of it.
    """

    def __init__(self, message: str, result: Any, output: str = "") -> None:
        super().__init__(message)
        self.result = result
        self.output = output
