"""The spawned child's entry point: ``python -m pytest_llem.runner.child --fd N``.

It reads one task (:data:`~pytest_llem.runner.envelope.ChildTask`) as JSON on stdin and
reports over the pipe ``N`` as JSON lines (:data:`~pytest_llem.runner.envelope.ChildEvent`).
With ``--prepare ENGINE`` it is a spare, started ahead of its cell: it imports the engine's
libraries first (no engine is loaded, no GPU touched), says ``prepared``, and only then waits
for its task (see :mod:`pytest_llem.runner.spare`).
Everything the engine prints goes to stdout/stderr, which the parent sends to the cell's log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # pydantic loads after "alive" is sent: the parent hears from the child at once
    from pydantic import BaseModel

    from pytest_llem.engines.protocol import Engine


class Channel:
    """The child's end of the report pipe."""

    def __init__(self, fd: int) -> None:
        self._out: IO[str] = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, event: BaseModel) -> None:
        self._out.write(event.model_dump_json() + "\n")
        self._out.flush()

    def phase(self, name: str, detail: str | None = None) -> None:
        from pytest_llem.runner.envelope import PhaseEvent

        if detail is None:  # the log keeps phase changes, not every tick of progress within one
            print(f"[pytest-llem] phase: {name}", flush=True)
        self.send(PhaseEvent(phase=name, detail=detail))

    def window_progress(self, elapsed_s: float, target_s: float) -> None:
        self.phase("measure", f"{elapsed_s:.0f}/{target_s:g} s")


class _Prepared:
    """A spare child's engine, imported before its task came (or why importing it failed).

    A failure is kept, not raised: the spare must wait for its task and fail *that* cell with
    the error, as a child started for the cell would have.
    """

    def __init__(self, engine_name: str, spare_log: str | None = None) -> None:
        self.engine_name = engine_name
        self.spare_log = spare_log
        self.engine: Engine | None = None
        self.error: BaseException | None = None
        try:
            from pytest_llem.engines.registry import create_engine

            self.engine = create_engine(engine_name)
        except BaseException as exc:  # noqa: BLE001 - reported with the task, see above
            self.error = exc

    def take(self, engine_name: str) -> Engine:
        if engine_name != self.engine_name:  # the parent matches spares by engine: a bug if not
            raise RuntimeError(f"a spare prepared for {self.engine_name} was handed a {engine_name} cell")
        if self.error is not None:
            raise self.error
        assert self.engine is not None
        return self.engine


def _die_with_parent(enable: bool = True) -> None:
    """A spare may be suspended (SIGSTOP) when its parent dies, so it could never read end-of-file
    on its lifeline: have the kernel SIGKILL it then (``PR_SET_PDEATHSIG``, Linux), which a stopped
    process receives too. A spare has no worker processes of its own that this would miss."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL) if enable else 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the lifeline alone
    if enable and os.getppid() == 1:  # the parent died before we asked
        os._exit(0)


def _cuda_initialized() -> bool:
    """Whether this process holds a CUDA context (as far as torch knows) without having asked for one."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    return bool(cuda is not None and cuda.is_initialized())


def _move_into_cell(cell_dir: str, spare_log: str | None) -> None:
    """A spare's output goes on into the cell's log, which begins with all the spare wrote before.

    The parent copied the spare's log as it handed the cell over (what a spare that died
    meanwhile leaves); what the spare wrote after that copy (the end of its imports) would be
    lost, so the whole of it is written again here, and this process's output follows it.
    """
    from pytest_llem.runner.process import LOG_NAME

    os.chdir(cell_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    earlier = b""
    if spare_log:
        try:
            with open(spare_log, "rb") as handle:
                earlier = handle.read()
        except OSError:
            pass  # the parent's copy stands
    log = os.open(os.path.abspath(LOG_NAME), os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if earlier else os.O_APPEND), 0o644)
    os.write(log, earlier)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def _run(task_json: str, channel: Channel, prepared: _Prepared | None) -> tuple[BaseModel, Engine | None]:
    """Carry out the task; its measurement, and the engine to release once that is sent."""
    from pytest_llem.runner.envelope import TASKS, CellTask, ReadyEvent

    task = TASKS.validate_json(task_json)
    if not isinstance(task, CellTask):
        from pytest_llem.runner.idle import measure_idle

        channel.send(ReadyEvent())
        channel.phase("idle")
        return measure_idle(task.duration_s, task.interval_s), None
    from pytest_llem.engines.protocol import CELL_LOG_VARIABLE
    from pytest_llem.engines.registry import create_engine
    from pytest_llem.runner.measure import measure_cell
    from pytest_llem.runner.process import LOG_NAME

    # Engines read their own log (vLLM's workers say there which attention backend they chose).
    os.environ[CELL_LOG_VARIABLE] = os.path.join(os.path.abspath(task.cell_dir), LOG_NAME)
    if prepared is not None:
        _move_into_cell(task.cell_dir, prepared.spare_log)
        engine = prepared.take(task.config.engine)
    else:
        engine = create_engine(task.config.engine)  # imports the engine's libraries (torch, ...)
    channel.send(ReadyEvent())
    measurement = measure_cell(
        task.config,
        engine=engine,
        base_dir=Path(task.base_dir),
        cell_dir=Path(task.cell_dir),
        phase=channel.phase,
        idle_reference_w=task.idle_reference_w,
        window_progress=channel.window_progress,
        skip_unused_kernels=task.skip_unused_kernels,
    )
    return measurement, engine


def _hold_lifeline() -> None:
    """Die with the parent, whatever kills it.

    The parent keeps the write end of our stdin open for as long as it lives and never writes
    after the task, so end-of-file on stdin means the parent is gone: SIGKILL, SIGTERM from
    ``timeout``, a CI cancellation or Slurm, a crash. A cell left running would measure on
    after nobody listens and burn the GPU under the next job's measurement, so the whole
    process group (this child leads it; engine workers belong to it) is killed at once.
    ``PR_SET_PDEATHSIG`` would not do: it fires when the parent *thread* that spawned us
    exits, and it does not reach the engine's worker processes.

    The watch reads a private copy of the pipe with ``os.read``, never ``sys.stdin``, and
    stdin itself becomes ``/dev/null``: a thread blocked in ``sys.stdin.read()`` holds the
    stream's lock, and a process forked meanwhile (vLLM starts its engine core that way;
    multiprocessing's bootstrap closes ``sys.stdin``) would wait for that lock forever.
    """
    pipe = os.dup(0)  # not inherited by the engine's processes (os.dup makes it non-inheritable)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    def watch() -> None:
        while os.read(pipe, 4096):
            pass  # the parent writes nothing more; end-of-file is all that can come
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="llem-lifeline", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest_llem.runner.child")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--prepare", metavar="ENGINE", help="a spare: import ENGINE's libraries, then wait for the task")
    parser.add_argument("--spare-log", metavar="FILE", help="a spare: where its output went before its task came")
    args = parser.parse_args(argv)
    channel = Channel(args.fd)
    from pytest_llem.runner.envelope import AliveEvent, ErrorEvent, PreparedEvent, ResultEvent

    channel.send(AliveEvent(pid=os.getpid()))
    try:
        prepared = None
        if args.prepare:
            _die_with_parent()
            prepared = _Prepared(args.prepare, args.spare_log)
            channel.send(PreparedEvent(cuda_initialized=_cuda_initialized()))
        task_json = sys.stdin.buffer.readline().decode("utf-8")
        if not task_json:  # a spare whose parent went away (or never needed it)
            return 0
        if prepared is not None:
            # From here the lifeline ends the whole group when the parent dies; a death signal
            # to this process alone would kill it first, leaving the engine's workers behind.
            _die_with_parent(enable=False)
        _hold_lifeline()
        measurement, engine = _run(task_json, channel, prepared)
        # The result first: once the parent has it, the engine's shutdown is nobody's wait
        # (execution.teardown "kill" ends this process group without waiting for it).
        channel.send(ResultEvent(measurement=measurement.model_dump(mode="json")))
        if engine is not None:
            engine.release()
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as a report
        traceback.print_exc()
        channel.send(ErrorEvent(type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc()))
        return 1


if __name__ == "__main__":
    sys.exit(main())
