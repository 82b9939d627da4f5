"""The spawned child's entry point: ``python -m pytest_llem.runner.child --fd N``.

It reads one task (:data:`~pytest_llem.runner.envelope.ChildTask`) as JSON on stdin and
reports over the pipe ``N`` as JSON lines (:data:`~pytest_llem.runner.envelope.ChildEvent`).
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


def _run(task_json: str, channel: Channel) -> BaseModel:
    """Carry out the task and return its measurement; engines are imported only here."""
    from pytest_llem.runner.envelope import TASKS, CellTask, ReadyEvent

    task = TASKS.validate_json(task_json)
    if not isinstance(task, CellTask):
        from pytest_llem.runner.idle import measure_idle

        channel.send(ReadyEvent())
        channel.phase("idle")
        return measure_idle(task.duration_s, task.interval_s)
    from pytest_llem.engines.registry import create_engine
    from pytest_llem.runner.measure import measure_cell

    engine = create_engine(task.config.engine)  # imports the engine's libraries (torch, ...)
    channel.send(ReadyEvent())
    return measure_cell(
        task.config,
        engine=engine,
        base_dir=Path(task.base_dir),
        cell_dir=Path(task.cell_dir),
        phase=channel.phase,
        idle_reference_w=task.idle_reference_w,
        window_progress=channel.window_progress,
    )


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
    args = parser.parse_args(argv)
    channel = Channel(args.fd)
    from pytest_llem.runner.envelope import AliveEvent, ErrorEvent, ResultEvent

    channel.send(AliveEvent(pid=os.getpid()))
    try:
        task_json = sys.stdin.buffer.readline().decode("utf-8")
        _hold_lifeline()
        measurement = _run(task_json, channel)
        channel.send(ResultEvent(measurement=measurement.model_dump(mode="json")))
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent as a report
        traceback.print_exc()
        channel.send(ErrorEvent(type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc()))
        return 1


if __name__ == "__main__":
    sys.exit(main())
