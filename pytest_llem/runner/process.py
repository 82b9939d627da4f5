"""The cell's process at the lowest level: start it, read its events, end it and its group.

Shared by :mod:`pytest_llem.runner.parent` (one task in one child) and
:mod:`pytest_llem.runner.spare` (a child started ahead of its task). The child is a fresh
interpreter (``python -m pytest_llem.runner.child``), never a fork: a forked CUDA context is
undefined behaviour. It runs in a new session, so it leads its own process group and the whole
group (engine workers included) can be ended at once.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from pytest_llem.energy import _nvml
from pytest_llem.engines.protocol import CELL_LOG_VARIABLE
from pytest_llem.errors import MeterUnavailable
from pytest_llem.runner.envelope import EVENTS, AnyEvent

KILL_GRACE_SECONDS = 5.0
LOG_NAME = "child.log"


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def kill_group(proc: subprocess.Popen[bytes], grace_s: float = KILL_GRACE_SECONDS) -> None:
    """End the child's whole process group: SIGTERM and ``grace_s`` to exit, then SIGKILL.

    ``grace_s`` 0 kills at once (the cell's result is already on our side: see
    ``execution.teardown``). Whatever the leader did, the group is SIGKILLed at the end, so
    none of its engine workers survives.
    """
    if grace_s > 0:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass


def group_members(pgid: int) -> set[int]:
    """The processes of a process group now, from ``/proc`` (empty where there is none)."""
    members: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.add(int(entry))
            except OSError:
                continue  # gone meanwhile, or not ours to see
    return members


def wait_gpu_released(pids: set[int], timeout_s: float = 30.0) -> float:
    """Wait until no GPU lists any of ``pids`` among its compute processes; the seconds waited.

    A killed process's GPU memory is freed by the driver a moment after the process is gone;
    the next cell's idle check must not see it. Without NVML (a CPU machine) there is nothing
    to wait for. In a container whose PID namespace differs from the driver's, NVML's pids never
    match ours and this returns at once: the idle spot check still catches a GPU not yet idle.
    """
    started = time.monotonic()
    if not pids:
        return 0.0
    try:
        nvml = _nvml.load()
    except MeterUnavailable:  # no driver, no bindings: no GPU memory to wait for
        return 0.0
    try:
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        while time.monotonic() - started < timeout_s:
            held: set[int] = set()
            for handle in handles:
                try:
                    held |= {p.pid for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)}
                except nvml.NVMLError:
                    continue
            if not held & pids:
                break
            time.sleep(0.05)
    except nvml.NVMLError:
        pass  # the GPU list itself failed: the idle spot check is the safety net
    finally:
        _nvml.shutdown(nvml)
    return time.monotonic() - started


def close_quietly(stream: IO[bytes] | None) -> None:
    """Close the child's lifeline; a child that already died leaves a broken pipe, which is fine."""
    if stream is None:
        return
    try:
        stream.close()
    except OSError:
        pass


def child_environment(
    gpu_uuid: str | None, log_path: Path | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The child's environment: ours, plus the cell's GPU, its log and ``extra`` (e.g. cache directories)."""
    env = dict(os.environ)
    # pytest's own marker of the running test names the item: it would make every cell's
    # environment differ, and so no spare match the cell after the one that started it.
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
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


class EventChannel:
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


def spawn_child(
    extra_args: list[str], log_path: Path, cwd: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], EventChannel]:
    """Start ``python -m pytest_llem.runner.child`` in its own session; its output goes to ``log_path``.

    Its stdin is a pipe the caller keeps open for the child's whole life: the task is written on
    it, and its end-of-file is the child's signal that the parent is gone (child._hold_lifeline).
    """
    read_fd, write_fd = os.pipe()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_llem.runner.child", "--fd", str(write_fd), *extra_args],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,
            env=env,
            cwd=str(cwd),
        )
    os.close(write_fd)
    return proc, EventChannel(read_fd)
