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

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

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
    AliveEvent,
    AnyEvent,
    CellTask,
    ErrorEvent,
    IdleTask,
    PhaseEvent,
    PreparedEvent,
    ReadyEvent,
    ResultEvent,
)
from pytest_llem.runner.process import (
    LOG_NAME,
    EventChannel,
    child_environment,
    close_quietly,
    describe_exit,
    group_members,
    kill_group,
    spawn_child,
    wait_gpu_released,
)
from pytest_llem.runner.spare import POOL, SpareChild

#: How a cell's processes end once its result is in: "kill" at once, or "graceful" (the
#: engine shuts itself down, up to :data:`GRACEFUL_EXIT_SECONDS`). See ``execution.teardown``.
Teardown = Literal["kill", "graceful"]
GRACEFUL_EXIT_SECONDS = 60.0

MeasurementT = TypeVar("MeasurementT", bound=BaseModel)


@dataclass
class ChildReport(Generic[MeasurementT]):
    """What the parent learnt from a child that finished its task."""

    measurement: MeasurementT
    wall_time_s: float
    phases: list[str] = field(default_factory=list)
    #: What was timed within the parent's own phases ("spawn": a spare's head start; "teardown":
    #: the wait for the GPU to let go of the killed processes), for the timeline.
    parts: dict[str, dict[str, float]] = field(default_factory=dict)


def log_tail(log_path: Path, max_lines: int = 40) -> str:
    """The end of the child's log, secrets redacted: it is shown in the failure report."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return scrub_text("\n".join(lines[-max_lines:]))


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
    #: A spare handed over before it said "prepared" says it here: did its imports make a CUDA context?
    spare_cuda_initialized: bool = False

    def take(self, events: list[AnyEvent]) -> None:
        for event in events:
            if isinstance(event, PreparedEvent):
                self.spare_cuda_initialized = event.cuda_initialized
            elif isinstance(event, AliveEvent):
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


def _follow(
    proc: subprocess.Popen[bytes], channel: EventChannel, progress: _Progress, started: float, timeout_s: float, startup_timeout_s: float
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
            return cls(f"the child process {describe_exit(proc.returncode)} {progress.stage}")


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
    env: dict[str, str] | None = None,
    spare: SpareChild | None = None,
    teardown: Teardown = "graceful",
) -> ChildReport[MeasurementT]:
    """Run one task in a spawned child; return its measurement as ``result_type``, or raise a :class:`CellError`.

    Raised errors carry ``log_tail`` (the end of ``child.log``) and, when the child reported
    an exception, ``child_traceback``. ``on_phase(phase, detail)`` hears the child's progress
    as it comes ("ready", "load", ..., "measure" with detail "4/10 s"), for a progress line.
    ``clock`` hears the phases' starts: "spawn", "imports" (once the interpreter is up), the
    child's phases, "teardown" (once the outcome is in, until the process group is gone).

    ``env``: the child's environment (default :func:`child_environment` of ``gpu_uuid``); a
    ``spare`` started with that same environment becomes the child instead of a new process.
    ``teardown``: once the result is in, "kill" ends the process group at once and waits for
    the GPU to let go of it; "graceful" lets the engine shut down first.
    """
    started = time.monotonic()
    clock = clock if clock is not None else PhaseClock()
    clock.mark("spawn", at=started)
    cell_dir.mkdir(parents=True, exist_ok=True)
    log_path = cell_dir / LOG_NAME
    progress = _Progress(on_phase=on_phase, clock=clock)
    parts: dict[str, dict[str, float]] = {}
    if spare is not None:
        proc, channel = spare.proc, spare.channel
        parts["spawn"] = spare.hand_over(log_path)
        # > 0: the spare began before this cell did (after the previous cell's window); else the
        # cell started it itself, as it began, and gained only what its idle checks took.
        parts["spawn"]["ahead_of_cell_s"] = parts["spawn"]["prestarted_s_before"] - (time.monotonic() - clock.origin)
        if spare.prepared_at is None:
            clock.mark("imports")  # the spare is still importing: the rest of it is this cell's wait
        progress.take(spare.pending)
    else:
        proc, channel = spawn_child([], log_path, cell_dir, env if env is not None else child_environment(gpu_uuid))
    error: CellError | None = None
    interrupted = True  # until the loop below ends normally: Ctrl-C must not wait for the cell
    try:
        assert proc.stdin is not None
        # One line, and the pipe stays open: it is the child's lifeline (see child._hold_lifeline).
        try:
            proc.stdin.write(task.model_dump_json().encode("utf-8") + b"\n")
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the child is gone already: _follow finds out how, from its exit
        error = _follow(proc, channel, progress, time.monotonic(), timeout_s, startup_timeout_s)
        interrupted = False
    finally:
        clock.mark("teardown")  # already marked when the outcome arrived; not when a deadline passed
        finished = error is None and not interrupted
        if finished and teardown == "graceful":
            try:
                proc.wait(timeout=GRACEFUL_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        members = group_members(proc.pid) if finished and teardown == "kill" else set()
        kill_group(proc, grace_s=0 if teardown == "kill" and finished else 5.0)  # nothing of the cell may outlive it
        if members:
            parts["teardown"] = {"gpu_release_wait_s": wait_gpu_released(members)}
        scrub_file(log_path)  # the child wrote its log itself, secrets and all; nothing writes to it now
        channel.close()
        close_quietly(proc.stdin)
        if spare is not None:
            spare.forget_log()
        if spare is not None and progress.spare_cuda_initialized:
            POOL.disable_for_cuda(spare.engine)  # harmless here (the cell's own process), not in a waiting spare
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
    return ChildReport(
        measurement=measurement, wall_time_s=time.monotonic() - started, phases=progress.phases, parts=parts
    )


def _child_error(failure: ErrorEvent) -> CellError:
    """The exception the child reported, as the parent's error for the cell."""
    if failure.type == "EngineUnavailable":
        return CellEngineUnavailable(failure.message)  # the message says it all
    error = CellCrashed(f"{failure.type}: {failure.message}".rstrip())
    error.child_traceback = failure.traceback
    return error
