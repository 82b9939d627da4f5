"""A spare child: the next cell's process, started ahead with its engine's libraries imported.

A cell's process spends seconds to tens of seconds importing torch and its engine (vLLM: about
19 s on an H200 host) before it can load anything. None of that touches a GPU, so it can happen
while the previous cell finishes (its report, teardown and record) or while idle power is
measured. The pool holds at most one spare per engine for each pytest process: one for the cell
that comes next and, where the cell after it uses another engine, one for that cell too (a study
that alternates engines gets both started while the current cell's engine loads, which is
longer than one import only when both are counted). A cell takes the spare of its engine if it
matches, else that spare is discarded and the cell starts its own process as before.

What keeps this honest:

* The spare is a fresh interpreter that has only imported libraries: no engine was loaded, no
  model built, no CUDA context made (it says so: ``prepared`` carries ``cuda_initialized``, and
  one that says yes ends spares for the session). Nothing of another configuration can be in it.
* It runs only while nothing is measured: it is started as the previous cell's engine begins to
  load (or before the first cell), suspended (SIGSTOP) from that cell's idle spot check through
  its warm-up and measured window, and let go on (SIGCONT) once the window has ended. A stopped
  process uses no CPU; its parent's death kills it even while stopped (``PR_SET_PDEATHSIG``).
* It matches only a cell of the same engine whose process environment would be identical
  (GPU, compile cache, every variable): a changed environment discards it.
* It holds the same lifeline as any child (its stdin), so it dies with pytest.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_llem.runner.envelope import AliveEvent, AnyEvent, PreparedEvent
from pytest_llem.runner.process import EventChannel, close_quietly, kill_group, spawn_child


@dataclass
class SpareChild:
    """One child started with ``--prepare ENGINE``, waiting for its task."""

    engine: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    channel: EventChannel
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    prepared_at: float | None = None
    cuda_initialized: bool = False
    pending: list[AnyEvent] = field(default_factory=list)

    def poll(self) -> None:
        """Take in what the spare said so far, without waiting."""
        for event in self.channel.read(0.0):
            if isinstance(event, PreparedEvent):
                self.prepared_at = time.monotonic()
                self.cuda_initialized = event.cuda_initialized
            elif not isinstance(event, AliveEvent):
                self.pending.append(event)  # nothing else comes before the task; kept for the cell if it does

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and not self.channel.closed

    def hand_over(self, cell_log: Path) -> dict[str, float]:
        """Make the spare the cell's process: its log so far becomes the start of the cell's log.

        The spare moves its own output into ``cell_log`` once it reads its task, so the caller
        writes the task right after this. Returns what the timeline says of the start it saved.
        """
        self.poll()
        cell_log.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.log_path, cell_log)  # the spare writes it again, whole, as it takes the task
        return {"prestarted_s_before": time.monotonic() - self.started}

    def signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # gone already: take() finds it dead and discards it

    def discard(self) -> None:
        close_quietly(self.proc.stdin)  # end-of-file: a spare that never got a task exits by itself
        kill_group(self.proc, grace_s=0)
        self.channel.close()
        self.forget_log()

    def forget_log(self) -> None:
        """The spare's own log, once its cell has ended (its content is in the cell's log)."""
        self.log_path.unlink(missing_ok=True)


class SparePool:
    """At most one spare per engine for this process; :meth:`take` gives one to a matching cell."""

    def __init__(self) -> None:
        self._spares: dict[str, SpareChild] = {}
        #: Why spares stopped for this session (None while they are in use).
        self.disabled_reason: str | None = None

    def start(self, engine: str, env: dict[str, str]) -> None:
        """Have a spare for ``engine`` with ``env`` ready (unless one is, or spares are off)."""
        if self.disabled_reason is not None:
            return
        current = self._spares.get(engine)
        if current is not None:
            if self._matches(current, engine, env):
                return
            self._drop(engine)
        fd, name = tempfile.mkstemp(prefix="llem-spare-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
        try:
            args = ["--prepare", engine, "--spare-log", str(log_path)]
            proc, channel = spawn_child(args, log_path, log_path.parent, env)
        except OSError:
            log_path.unlink(missing_ok=True)
            return  # no spare: the cell starts its own process, as without one
        self._spares[engine] = SpareChild(engine=engine, env=env, proc=proc, channel=channel, log_path=log_path)

    def retain(self, engines: Sequence[str]) -> None:
        """End the spares of any engine not in ``engines`` (no coming cell would take them)."""
        for engine in [e for e in self._spares if e not in engines]:
            self._drop(engine)

    def pause(self) -> None:
        """Suspend every spare (SIGSTOP) while another cell checks idle power, warms up and measures."""
        for spare in self._spares.values():
            spare.signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """Let suspended spares go on (SIGCONT); harmless for one that runs."""
        for spare in self._spares.values():
            spare.signal_group(signal.SIGCONT)

    def take(self, engine: str, env: dict[str, str]) -> SpareChild | None:
        """The spare for ``engine``, if it matches the cell and is alive; the pool no longer holds it.

        Every spare is let go on first (a cell that failed mid-window may have left them
        suspended); the other engines' spares stay for the cells they were started for.
        """
        self.resume()
        spare = self._spares.pop(engine, None)
        if spare is None:
            return None
        spare.poll()
        if spare.cuda_initialized:
            self.disable_for_cuda(spare.engine)
        if not self._matches(spare, engine, env) or not spare.alive or self.disabled_reason is not None:
            spare.discard()
            return None
        return spare

    def disable_for_cuda(self, engine: str) -> None:
        """No more spares this session: importing ``engine`` made a CUDA context."""
        self.disabled_reason = (
            f"importing the {engine} engine created a CUDA context, which a waiting spare must not hold;"
            " cells start their own processes for the rest of the session"
        )
        self.close()

    @staticmethod
    def _matches(spare: SpareChild, engine: str, env: dict[str, str]) -> bool:
        return spare.engine == engine and spare.env == env

    def _drop(self, engine: str) -> None:
        spare = self._spares.pop(engine, None)
        if spare is not None:
            spare.discard()

    def close(self) -> None:
        """End every spare (the session's end, or spares switched off)."""
        for engine in list(self._spares):
            self._drop(engine)


#: This process's pool: one pytest process runs one cell at a time.
POOL = SparePool()
