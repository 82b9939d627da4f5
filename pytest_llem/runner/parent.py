"""Running one cell in its own spawned process, from the parent's side.

The child is a fresh interpreter (``python -m pytest_llem.runner.child``), never a fork: a
forked CUDA context is undefined behaviour, and a fresh process also guarantees that no state
(allocator caches, compiled graphs, warmed clocks) leaks from one cell into the next.

The child runs in a new session, so it leads its own process group: on timeout the whole group
(engine workers included) is killed. It reports over a dedicated pipe as JSON lines; its
stdout and stderr go to ``child.log`` in the cell directory, whose tail is attached to a
failure. A handshake (``alive``, then ``ready`` once imports and device setup are done) lets a
child that dies or stalls while starting fail in seconds instead of at the cell's timeout.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from pytest_llem.engines.protocol import CELL_LOG_VARIABLE
from pytest_llem.errors import (
    CellCrashed,
    CellEngineUnavailable,
    CellError,
    CellStartupFailed,
    CellTimeout,
)
from pytest_llem.results.measurement import TimelinePhase
from pytest_llem.results.redaction import scrub_file, scrub_text
from pytest_llem.runner.envelope import (
    EVENTS,
    AliveEvent,
    AnyEvent,
    CellTask,
    ErrorEvent,
    IdleTask,
    PhaseEvent,
    ReadyEvent,
    ResultEvent,
)

LOG_NAME = "child.log"
KILL_GRACE_SECONDS = 5.0

MeasurementT = TypeVar("MeasurementT", bound=BaseModel)


@dataclass
class ChildReport(Generic[MeasurementT]):
    """What the parent learnt from a child that finished its task."""

    measurement: MeasurementT
    wall_time_s: float
    phases: list[str] = field(default_factory=list)


def log_tail(log_path: Path, max_lines: int = 40) -> str:
    """The end of the child's log, secrets redacted: it is shown in the failure report."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return scrub_text("\n".join(lines[-max_lines:]))


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the child's whole process group, then make sure nothing of it survives."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        if wait is None:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its engine workers may not be.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass


def _close_quietly(stream: IO[bytes] | None) -> None:
    """Close the child's lifeline; a child that already died leaves a broken pipe, which is fine."""
    if stream is None:
        return
    try:
        stream.close()
    except OSError:
        pass


def child_environment(gpu_uuid: str | None, log_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if log_path is not None:
        env[CELL_LOG_VARIABLE] = str(log_path.resolve())  # the child runs in the cell directory
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keeps child.log readable
    if gpu_uuid:
        env["CUDA_VISIBLE_DEVICES"] = gpu_uuid
    # GPU indices mean NVML's order (PCI bus) throughout pytest-llem; CUDA's default order is
    # fastest first, so on a host with mixed GPUs "cuda:0" and the meter's GPU could differ.
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


class _Channel:
    """JSON lines from the child, read without blocking past a deadline."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(fd, selectors.EVENT_READ)
        self.closed = False

    def read(self, timeout: float) -> list[AnyEvent]:
        if self.closed:
            time.sleep(min(timeout, 0.05))
            return []
        if self._selector.select(timeout=max(timeout, 0.0)):
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.closed = True
            self._buffer += chunk
        events = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.strip():
                events.append(EVENTS.validate_json(line))
        return events

    def close(self) -> None:
        self._selector.close()
        os.close(self._fd)


#: Hears a child's progress: ``(phase, detail)``, e.g. ``("measure", "4/10 s")``.
PhaseListener = Callable[[str, str | None], None]

#: The child's phase names as a cell's timeline calls them: its "measure" is the measured window.
TIMELINE_NAMES = {"measure": "window"}


class PhaseClock:
    """Where a cell's time goes: each phase is marked as it begins, on the monotonic clock.

    Marks are taken on the parent's side as the child's events arrive (a pipe's latency late, far
    below the phases' lengths), so the child does nothing extra for them, least of all within its
    measured window. A phase lasts until the next mark: the phases tile the cell's time.
    """

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self._marks: list[tuple[str, float]] = []

    def mark(self, phase: str, at: float | None = None) -> None:
        """``phase`` begins now (or ``at``); a phase marked again while it runs goes on."""
        name = TIMELINE_NAMES.get(phase, phase)
        if not self._marks or self._marks[-1][0] != name:
            self._marks.append((name, time.monotonic() if at is None else at))

    def phases(self, parts: dict[str, dict[str, float]] | None = None) -> list[TimelinePhase]:
        """The phases so far, the last one ending now; ``parts`` (by phase) what was timed within them."""
        end = time.monotonic()
        bounds = [start for _, start in self._marks[1:]] + [end]
        return [
            TimelinePhase(
                phase=name,
                start_s=max(0.0, start - self.origin),
                seconds=max(0.0, stop - start),
                parts=(parts or {}).get(name) or None,
            )
            for (name, start), stop in zip(self._marks, bounds)
        ]


@dataclass
class _Progress:
    """What the child has said so far; every event goes through :meth:`take`."""

    ready: bool = False
    phases: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    failure: ErrorEvent | None = None
    on_phase: PhaseListener | None = None
    clock: PhaseClock = field(default_factory=PhaseClock)

    def take(self, events: list[AnyEvent]) -> None:
        for event in events:
            if isinstance(event, AliveEvent):
                self.clock.mark("imports")  # the interpreter is up; the engine's libraries load until "ready"
            elif isinstance(event, ReadyEvent):
                self.ready = True
                self._tell("ready", None)
            elif isinstance(event, PhaseEvent):
                self.clock.mark(event.phase)
                if not self.phases or self.phases[-1] != event.phase:
                    self.phases.append(event.phase)
                self._tell(event.phase, event.detail)
            elif isinstance(event, ResultEvent):
                self.clock.mark("teardown")
                self.result = event.measurement
            elif isinstance(event, ErrorEvent):
                self.clock.mark("teardown")
                self.failure = event

    def _tell(self, phase: str, detail: str | None) -> None:
        """The listener hears every phase; a failing listener must not fail the cell."""
        if self.on_phase is None:
            return
        try:
            self.on_phase(phase, detail)
        except Exception:  # noqa: BLE001 - progress is for the eye; the measurement goes on
            self.on_phase = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.failure is not None

    @property
    def stage(self) -> str:
        return f"during {self.phases[-1]}" if self.ready and self.phases else "during start-up (imports, device setup)"


def _spawn(task: CellTask | IdleTask, cell_dir: Path, gpu_uuid: str | None) -> tuple[subprocess.Popen[bytes], _Channel, Path]:
    """Start the child in its own session, hand it the task, and open its report pipe."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    log_path = cell_dir / LOG_NAME
    read_fd, write_fd = os.pipe()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_llem.runner.child", "--fd", str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
            env=child_environment(gpu_uuid, log_path),
            cwd=str(cell_dir),
        )
    os.close(write_fd)
    return proc, _Channel(read_fd), log_path


def _follow(
    proc: subprocess.Popen[bytes], channel: _Channel, progress: _Progress, started: float, timeout_s: float, startup_timeout_s: float
) -> CellError | None:
    """Read events until the task's outcome, a deadline, or the child's death; the error, if any."""
    while True:
        now = time.monotonic()
        limit = timeout_s if progress.ready else min(startup_timeout_s, timeout_s)
        deadline = started + limit
        if now >= deadline:
            if progress.ready:
                last = progress.phases[-1] if progress.phases else "start-up"
                return CellTimeout(
                    f"the cell ran past its time limit of {timeout_s:g} s (last phase: {last}); its process group was killed"
                )
            return CellStartupFailed(
                f"the child did not finish start-up (imports, device setup) within {limit:g} s;"
                " its process group was killed"
            )
        progress.take(channel.read(min(0.2, deadline - now)))
        if progress.done:
            return None
        if proc.poll() is not None and (channel.closed or not progress.ready):
            progress.take(channel.read(0.05))  # what the child wrote just before it exited
            if progress.done:
                return None
            cls = CellCrashed if progress.ready else CellStartupFailed
            return cls(f"the child process {_describe_exit(proc.returncode)} {progress.stage}")


def run_in_child(
    task: CellTask | IdleTask,
    cell_dir: Path,
    result_type: type[MeasurementT],
    *,
    timeout_s: float,
    startup_timeout_s: float,
    gpu_uuid: str | None = None,
    on_phase: PhaseListener | None = None,
    clock: PhaseClock | None = None,
) -> ChildReport[MeasurementT]:
    """Run one task in a spawned child; return its measurement as ``result_type``, or raise a :class:`CellError`.

    Raised errors carry ``log_tail`` (the end of ``child.log``) and, when the child reported
    an exception, ``child_traceback``. ``on_phase(phase, detail)`` hears the child's progress
    as it comes ("ready", "load", ..., "measure" with detail "4/10 s"), for a progress line.
    ``clock`` hears the phases' starts: "spawn", "imports" (once the interpreter is up), the
    child's phases, "teardown" (once the outcome is in, until the process group is gone).
    """
    started = time.monotonic()
    clock = clock if clock is not None else PhaseClock()
    clock.mark("spawn", at=started)
    proc, channel, log_path = _spawn(task, cell_dir, gpu_uuid)
    progress = _Progress(on_phase=on_phase, clock=clock)
    error: CellError | None = None
    interrupted = True  # until the loop below ends normally: Ctrl-C must not wait for the cell
    try:
        assert proc.stdin is not None
        # One line, and the pipe stays open: it is the child's lifeline (see child._hold_lifeline).
        proc.stdin.write(task.model_dump_json().encode("utf-8") + b"\n")
        proc.stdin.flush()
        error = _follow(proc, channel, progress, started, timeout_s, startup_timeout_s)
        interrupted = False
    finally:
        clock.mark("teardown")  # already marked when the outcome arrived; not when a deadline passed
        if error is None and not interrupted:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc)  # nothing of the cell may outlive it (engine worker processes)
        scrub_file(log_path)  # the child wrote its log itself, secrets and all; nothing writes to it now
        channel.close()
        _close_quietly(proc.stdin)
    if progress.failure is not None:
        error = _child_error(progress.failure)
    if error is not None:
        error.log_tail = log_tail(log_path)
        error.phases = progress.phases
        raise error
    assert progress.result is not None
    try:
        measurement = result_type.model_validate(progress.result)
    except ValidationError as exc:  # parent and child disagree on the envelope: this cell's failure
        invalid = CellCrashed(f"the child's measurement does not match {result_type.__name__}: {exc}")
        invalid.log_tail = log_tail(log_path)
        invalid.phases = progress.phases
        raise invalid from None
    return ChildReport(measurement=measurement, wall_time_s=time.monotonic() - started, phases=progress.phases)


def _child_error(failure: ErrorEvent) -> CellError:
    """The exception the child reported, as the parent's error for the cell."""
    if failure.type == "EngineUnavailable":
        return CellEngineUnavailable(failure.message)  # the message says it all
    error = CellCrashed(f"{failure.type}: {failure.message}".rstrip())
    error.child_traceback = failure.traceback
    return error
