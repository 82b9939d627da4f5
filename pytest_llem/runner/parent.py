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

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.engines.protocol import CELL_LOG_VARIABLE
from pytest_llem.errors import (
    CellCrashed,
    CellEngineUnavailable,
    CellError,
    CellStartupFailed,
    CellTimeout,
)

LOG_NAME = "child.log"
KILL_GRACE_SECONDS = 5.0


@dataclass
class ChildReport:
    """What the parent learnt from a child that finished its cell."""

    measurement: dict[str, Any]
    wall_time_s: float
    phases: list[str] = field(default_factory=list)


def log_tail(log_path: Path, max_lines: int = 40) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-max_lines:])


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

    def read(self, timeout: float) -> list[dict[str, Any]]:
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
                events.append(json.loads(line))
        return events

    def close(self) -> None:
        self._selector.close()
        os.close(self._fd)


def run_in_child(
    spec: dict[str, Any],
    cell_dir: Path,
    *,
    timeout_s: float,
    startup_timeout_s: float,
    gpu_uuid: str | None = None,
) -> ChildReport:
    """Run one cell in a spawned child; return its measurement or raise a :class:`CellError`.

    Raised errors carry ``log_tail`` (the end of ``child.log``) and, when the child reported
    an exception, ``child_traceback``.
    """
    cell_dir.mkdir(parents=True, exist_ok=True)
    log_path = cell_dir / LOG_NAME
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
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
    channel = _Channel(read_fd)
    phases: list[str] = []
    measurement: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    ready = False
    error: CellError | None = None
    interrupted = True  # until the loop below ends normally: Ctrl-C must not wait for the cell
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(spec).encode("utf-8"))
        proc.stdin.close()
        while True:
            now = time.monotonic()
            deadline = started + (timeout_s if ready else min(startup_timeout_s, timeout_s))
            if now >= deadline:
                if ready:
                    error = CellTimeout(
                        f"the cell ran past its time limit of {timeout_s:g} s"
                        f" (last phase: {phases[-1] if phases else 'start-up'}); its process group was killed"
                    )
                else:
                    error = CellStartupFailed(
                        f"the child did not finish start-up (imports, device setup) within {min(startup_timeout_s, timeout_s):g} s;"
                        " its process group was killed"
                    )
                break
            for event in channel.read(min(0.2, deadline - now)):
                kind = event.get("event")
                if kind == "ready":
                    ready = True
                elif kind == "phase":
                    phases.append(str(event.get("phase")))
                elif kind == "result":
                    measurement = event["measurement"]
                elif kind == "error":
                    failure = event
            if measurement is not None or failure is not None:
                break
            if proc.poll() is not None and (channel.closed or not ready):
                # Drain what the child wrote just before it exited.
                for event in channel.read(0.05):
                    if event.get("event") == "result":
                        measurement = event["measurement"]
                    elif event.get("event") == "error":
                        failure = event
                    elif event.get("event") == "ready":
                        ready = True
                if measurement is None and failure is None:
                    stage = f"during {phases[-1]}" if ready and phases else "during start-up (imports, device setup)"
                    cls = CellCrashed if ready else CellStartupFailed
                    error = cls(f"the child process {_describe_exit(proc.returncode)} {stage}")
                break
        interrupted = False
    finally:
        if error is not None or interrupted:
            _kill_group(proc)
        else:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            _kill_group(proc)  # nothing of the cell may outlive it (engine worker processes)
        channel.close()
    if failure is not None and failure.get("type") == "EngineUnavailable":
        error = CellEngineUnavailable(str(failure.get("message", "")))  # the message says it all
    elif failure is not None:
        error = CellCrashed(f"{failure.get('type', 'Error')}: {failure.get('message', '')}".rstrip())
        error.child_traceback = str(failure.get("traceback", ""))
    if error is not None:
        error.log_tail = log_tail(log_path)
        error.phases = phases
        raise error
    assert measurement is not None
    return ChildReport(measurement=measurement, wall_time_s=time.monotonic() - started, phases=phases)
