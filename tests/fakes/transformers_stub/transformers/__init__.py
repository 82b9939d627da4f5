"""A stand-in for the ``transformers`` package, for tests of the cell's process isolation.

Put its parent directory first on PYTHONPATH and the cell's child imports this instead of
the real library. Behaviour is chosen by the model name, so one study can mix healthy and
broken cells:

* ``stub-ok``: generates ``max_new_tokens`` tokens of id 7 per row, quickly;
* ``stub-segfault``: the process dies of SIGSEGV while loading the model;
* ``stub-exit``: the process calls ``os._exit(7)`` while loading the model;
* ``stub-hang``: loading never finishes;
* ``stub-hang-worker``: loading starts a worker process (as engines do) and never finishes; both
  pids are written to ``stub-pids`` in the working directory (the cell's directory); with
  ``LLEM_STUB_NO_HANG=1`` it loads like ``stub-ok`` (a resumed study whose hang has gone);
* ``stub-fork``: loading forks a process with multiprocessing (as vLLM starts its engine core)
  and waits for it, failing if the forked process cannot run (a lock held across the fork);
* ``stub-raise``: loading raises ``RuntimeError``;
* ``stub-oom``: loading raises ``torch.OutOfMemoryError`` as CUDA would.

``LLEM_STUB_IMPORT=exit`` makes the import itself kill the process (a child dying during
start-up); ``LLEM_STUB_IMPORT=hang`` makes it stall there; ``LLEM_STUB_IMPORT=cuda`` makes torch
say a CUDA context exists (as a library that initialises CUDA on import would).
``LLEM_STUB_SPARE_PROBE=1``: every ``generate`` (warm-up and window) appends to ``spare-states``
in the working directory the state letter of each waiting spare child of the same pytest (``R``/``S`` running or
sleeping, ``T`` stopped), or ``-`` when there is none.
``LLEM_STUB_RELEASE_SLEEP=S``: the model's teardown takes S seconds, then writes ``released`` in
the working directory (an engine's slow graceful shutdown).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch

__version__ = "5.0.0+stub"

_on_import = os.environ.get("LLEM_STUB_IMPORT")
if _on_import == "exit":
    os._exit(3)
if _on_import == "hang":
    time.sleep(3600)
if _on_import == "cuda":
    torch.cuda.is_initialized = lambda: True


class GenerationConfig(SimpleNamespace):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("do_sample", False)
        super().__init__(**kwargs)

    @classmethod
    def from_pretrained(cls, name: str, **kwargs: Any) -> GenerationConfig:
        return cls(eos_token_id=[1, 2])


class _Tokenizer:
    eos_token_id = 1
    pad_token_id = 0
    bos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [3 + (b % 250) for b in text.encode("utf-8")]


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name: str, **kwargs: Any) -> _Tokenizer:
        return _Tokenizer()


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.config = SimpleNamespace(_attn_implementation="stub")
        self.generation_config = GenerationConfig()

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.weight.dtype

    def __del__(self) -> None:
        delay = os.environ.get("LLEM_STUB_RELEASE_SLEEP")
        if delay:
            time.sleep(float(delay))
            with open("released", "w", encoding="utf-8"):
                pass

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generation_config: Any, streamer: Any = None
    ) -> torch.Tensor:
        if os.environ.get("LLEM_STUB_SPARE_PROBE"):
            _probe_spares()
        steps = generation_config.max_new_tokens
        new = torch.full((input_ids.shape[0], steps), 7, dtype=input_ids.dtype)
        if streamer is not None:
            streamer.put(input_ids)
        for step in range(steps):
            time.sleep(float(os.environ.get("LLEM_STUB_STEP_SLEEP", "0.0005")))
            if streamer is not None:
                streamer.put(new[:, step])
        if streamer is not None:
            streamer.end()
        return torch.cat([input_ids, new], dim=1)


def _probe_spares() -> None:
    states = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():  # this cell's own process may have been a spare
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            if b"pytest_llem.runner.child" in argv and b"--prepare" in argv:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    state, ppid = handle.read().rsplit(")", 1)[1].split()[:2]
                if int(ppid) == os.getppid():  # this pytest's spare, not another session's (xdist runs tests side by side)
                    states.append(state)
        except OSError:
            continue
    with open("spare-states", "a", encoding="utf-8") as handle:
        handle.write("".join(states) or "-")
        handle.write("\n")


def _forked() -> None:
    """What multiprocessing's bootstrap does in a forked process touches ``sys.stdin``: enough."""


class AutoModelForCausalLM:
    @staticmethod
    def from_pretrained(name: str, **kwargs: Any) -> _Model:
        if name == "stub-segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if name == "stub-exit":
            os._exit(7)
        if name == "stub-hang":
            time.sleep(3600)
        if name == "stub-hang-worker" and not os.environ.get("LLEM_STUB_NO_HANG"):
            worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            with open("stub-pids.tmp", "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {worker.pid}\n")
            os.replace("stub-pids.tmp", "stub-pids")
            time.sleep(3600)
        if name == "stub-fork":
            import multiprocessing

            forked = multiprocessing.get_context("fork").Process(target=_forked)
            forked.start()
            forked.join(timeout=120)
            if forked.exitcode != 0:
                forked.kill()
                raise RuntimeError(f"the forked process did not finish (exit code {forked.exitcode})")
        if name == "stub-raise":
            raise RuntimeError("stub model refuses to load")
        if name == "stub-oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return _Model()
