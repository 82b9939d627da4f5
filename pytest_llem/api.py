"""The library API: run a study from Python and work with its results.

:func:`run_study` runs a study exactly as the command line does (``python -m pytest`` in a
subprocess, every cell in its own process) and returns a :class:`StudyResult` loaded from the
directory that run wrote. :func:`load_results` loads a study that already ran. The
repetition statistics of :mod:`pytest_llem.verdicts.statistics` are re-exported here.

Example::

    from pytest_llem import run_study, load_results

    result = run_study("studies/precision.llem.yaml", results_dir="results")
    print(result)                      # StudyResult(study_name='precision', ..., completed=6, failed=0, ...)
    for failure in result.failed_experiments:
        print(failure["experiment_id"], failure["error"])

    for group in result.summarise(by=("precision",)):
        m = group.metrics["mj_per_tok_total"]
        print(group.key, m.mean, (m.ci_low, m.ci_high))

    import pandas as pd
    frame = pd.DataFrame(result.to_rows())   # one row per completed cell

    latest = load_results("results")   # the newest study under results/
    same = load_results(result.study_dir)

A study whose cells failed still returns its :class:`StudyResult` (the failures are in
``failed_experiments`` and in the manifest); :func:`run_study` raises only when the run left no
study directory (a study file with errors, say), with the tail of pytest's output, or when it
ran past ``timeout``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_llem.errors import LlemError, StudyFailedToRun, StudyTimeout
from pytest_llem.results import loader
from pytest_llem.results.loader import study_dirs
from pytest_llem.results.writer import utc_iso

logger = logging.getLogger("pytest_llem")

if TYPE_CHECKING:
    from pytest_llem.verdicts.statistics import (
        GroupSummary,
        group_records,
        summarise,
        summarise_groups,
    )

#: Re-exported from :mod:`pytest_llem.verdicts.statistics` on first use: numpy and scipy load
#: only when statistics are asked for, so loading results stays light.
_STATISTICS = ("group_records", "summarise", "summarise_groups")


def __getattr__(name: str) -> Any:
    if name in _STATISTICS:
        from pytest_llem.verdicts import statistics

        return getattr(statistics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "StudyFailedToRun",
    "StudyResult",
    "StudyTimeout",
    "group_records",
    "load_results",
    "run_study",
    "summarise",
    "summarise_groups",
]


@dataclass(repr=False)
class StudyResult(loader.StudyResult):
    """One study's results as loaded from disk (see :class:`pytest_llem.results.loader.StudyResult`),
    with the repetition statistics of the verdicts layer."""

    def summarise(
        self,
        by: Sequence[str] = ("measurement_config_hash",),
        metrics: Sequence[str] | None = None,
        **kw: Any,
    ) -> list[GroupSummary]:
        """Repetition statistics of the completed records, one summary per group.

        ``by`` holds dotted paths looked up in each record, then in its ``config`` (so
        ``by=("precision",)`` works); ``metrics`` defaults to
        :data:`pytest_llem.verdicts.statistics.METRICS`. Further keywords (``confidence``,
        ``n_resamples``, ``seed``) go to :func:`~pytest_llem.verdicts.statistics.summarise_groups`.
        """

        from pytest_llem.verdicts import statistics

        chosen = statistics.METRICS if metrics is None else metrics
        return statistics.summarise_groups(self.experiments, by, chosen, **kw)


def load_results(
    path: str | os.PathLike[str],
    *more: str | os.PathLike[str],
    all_studies: bool = False,
    exclude_flagged: bool = False,
) -> StudyResult:
    """Load one study's results, or several merged, from disk: :func:`pytest_llem.results.loader.load_results`,
    with statistics.

    ``load_results("results/a", "results/b")`` or ``load_results("results", all_studies=True)``
    merge studies (duplicates removed, the newer study's record kept); ``exclude_flagged=True``
    leaves out records with validity flags. ``pytest_llem.report.dataset.export_table`` writes
    the result as one tidy Parquet or CSV table.
    """
    return loader.read_studies((path, *more), StudyResult, all_studies=all_studies, exclude_flagged=exclude_flagged)


#: Lines of pytest's output quoted in errors.
OUTPUT_TAIL_LINES = 60
#: Seconds pytest gets to wind down (kill its cell, finish the manifest) after an interrupt.
INTERRUPT_GRACE_SECONDS = 90.0


#: ``python -m pytest``, with Ctrl-C restored first: a process started in the background
#: inherits SIGINT ignored, and pytest must take the interrupt to kill its running cell and
#: finish the manifest when ``timeout`` passes.
_PYTEST_MAIN = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
    " sys.argv[0] = 'pytest'; runpy.run_module('pytest', run_name='__main__', alter_sys=True)"
)


def _tail(output: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def _plugin_args() -> list[str]:
    """Load the plugin explicitly only where its entry point is not installed (a bare checkout)."""
    if any(ep.value.startswith("pytest_llem.plugin") for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "pytest_llem.plugin"]


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """Interrupt pytest as Ctrl-C would (it kills its running cell and finishes the manifest)."""
    for sig, grace in ((signal.SIGINT, INTERRUPT_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class CellProgress:
    """What a running cell of :func:`run_study` is doing: its node id, phase and how far (``detail``)."""

    nodeid: str
    phase: str  # ready, load, preflight, warmup, measure, report
    detail: str | None  # e.g. "4/10 s" of the measured window


_PROGRESS_LINE = re.compile(r"^\[llem\] (?P<nodeid>\S+): (?P<phase>\S+)(?: (?P<detail>.+))?$")


class _OutputReader(threading.Thread):
    """Reads pytest's output as it comes: keeps it, and turns its progress lines into events."""

    def __init__(self, stream: IO[str], progress: Callable[[CellProgress], None] | None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.progress = progress
        self.lines: list[str] = []

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line)
            match = _PROGRESS_LINE.match(line.rstrip("\n"))
            if match is None:
                continue
            event = CellProgress(match["nodeid"], match["phase"], match["detail"])
            logger.info("%s: %s%s", event.nodeid, event.phase, f" {event.detail}" if event.detail else "")
            if self.progress is not None:
                try:
                    self.progress(event)
                except Exception:
                    logger.exception("run_study's progress callback failed; it is not called again")
                    self.progress = None

    def run_to_end(self, timeout: float | None = None) -> str:
        """Wait for the output to end (the pipe closes with pytest), close it, and return it."""
        self.join(timeout)
        if not self.is_alive():
            self.stream.close()
        return "".join(self.lines)


def _new_study_dir(before: set[Path], root: Path, path: Path) -> Path | None:
    created = [d for d in study_dirs(root) if d.resolve() not in before]
    if not created:
        return None
    if len(created) > 1 and path.is_file():
        def study_file(d: Path) -> Path | None:
            try:
                value = json.loads((d / "manifest.json").read_text(encoding="utf-8")).get("study_file")
                return Path(value).resolve() if value else None
            except (OSError, ValueError, AttributeError):
                return None

        matching = [d for d in created if study_file(d) == path.resolve()]
        created = matching or created
    if len(created) > 1:
        names = ", ".join(str(d) for d in created)
        raise LlemError(
            f"the run wrote {len(created)} study directories ({names}); run_study returns one study:"
            " pass a single study file, or load each directory with load_results()"
        )
    return created[0]


def _resume_args(resume: bool | str | os.PathLike[str]) -> list[str]:
    if resume is False:
        return []
    return ["--llem-resume"] if resume is True else [f"--llem-resume={os.fspath(resume)}"]


def _resumed_study_dir(root: Path, since: str) -> Path | None:
    """The study directory a resumed run continued: the one whose manifest says it resumed since ``since``."""
    resumed = []
    for study_dir in study_dirs(root):
        try:
            data = json.loads((study_dir / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        times = [r.get("at") for r in data.get("resumed") or [] if isinstance(r, dict)]
        if any(isinstance(t, str) and t >= since for t in times):
            resumed.append(study_dir)
    return resumed[-1] if resumed else None


def run_study(
    path: str | os.PathLike[str],
    *,
    results_dir: str | os.PathLike[str] | None = None,
    pytest_args: Sequence[str] = (),
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    progress: Callable[[CellProgress], None] | None = None,
    resume: bool | str | os.PathLike[str] = False,
) -> StudyResult:
    """Run the study at ``path`` and return its results.

    Runs ``python -m pytest <path> -p no:cacheprovider --llem-results-dir <results_dir>
    *pytest_args`` in a subprocess (the current interpreter, the current working directory), so
    the study gets the same isolation as on the command line; ``pytest_args`` may select cells
    (``["-k", "bf16"]``) or set ``--llem-timeout``. ``results_dir`` defaults to ``./results``.
    ``env`` holds extra environment variables, laid over ``os.environ`` for the run.
    ``timeout`` bounds the whole run in seconds: past it, pytest is interrupted (as by Ctrl-C,
    which kills the running cell) and :class:`StudyTimeout` is raised, carrying what the study
    recorded so far. ``progress`` is called with a :class:`CellProgress` as each running cell
    moves on (its phase, and the measured window's elapsed/target seconds); the same goes to the
    ``pytest_llem`` logger at INFO level. ``resume`` (True, or a study directory) continues an
    earlier, unfinished run of the study (``--llem-resume``); the whole study is returned.

    The study directory the run created under ``results_dir`` is loaded with
    :func:`load_results`. Cells that failed do not raise: they are in the result's
    ``failed_experiments``. :class:`StudyFailedToRun` is raised, with the tail of pytest's
    output, when the run created no study directory (a study file with errors, a path with no
    study, every cell deselected). ``path`` should name one study: when the run writes several
    study directories, :class:`~pytest_llem.errors.LlemError` lists them.
    """
    study_path = Path(path)
    if not study_path.exists():
        raise StudyFailedToRun(f"no study at {study_path}: the path does not exist")
    root = Path(results_dir if results_dir is not None else "results").absolute()
    before = {d.resolve() for d in study_dirs(root)}
    command = [
        sys.executable, "-c", _PYTEST_MAIN, str(study_path), "-p", "no:cacheprovider", *_plugin_args(),
        "--llem-results-dir", str(root), *_resume_args(resume), *pytest_args,
    ]  # fmt: skip
    started = utc_iso()
    environment = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=environment,
        start_new_session=True,
    )
    assert proc.stdout is not None
    reader = _OutputReader(proc.stdout, progress)
    reader.start()
    try:
        proc.wait(timeout=timeout)
        output = reader.run_to_end()
    except subprocess.TimeoutExpired:
        _interrupt(proc)
        output = reader.run_to_end(timeout=10)
        study_dir = _new_study_dir(before, root, study_path)
        partial = load_results(study_dir) if study_dir is not None else None
        raise StudyTimeout(
            f"the study {study_path} ran past the timeout of {timeout:g} s and was interrupted"
            + (f"; what it recorded is in {study_dir}" if study_dir is not None else "")
            + f"\n--- pytest output (tail) ---\n{_tail(output)}",
            partial,
            output,
        ) from None
    except BaseException:
        _interrupt(proc)
        reader.run_to_end(timeout=10)
        raise
    output = output or ""
    study_dir = _new_study_dir(before, root, study_path) or (_resumed_study_dir(root, started) if resume else None)
    if study_dir is None:
        raise StudyFailedToRun(
            f"running {study_path} produced no study directory under {root} (pytest exited with code"
            f" {proc.returncode})\n--- pytest output (tail) ---\n{_tail(output)}",
            output,
            proc.returncode,
        )
    return load_results(study_dir)
