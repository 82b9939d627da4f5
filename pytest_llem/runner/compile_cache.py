"""Where engines keep what they compile, across cells and runs: ``execution.compile_cache``.

An engine's first start on a machine compiles: vLLM traces and compiles the model with
torch.compile (Inductor writes Triton kernels), JIT-compiles its own Triton kernels on a first
step, and FlashInfer and CUDA JIT-compile theirs. On an H200 that was 153 s of a 195 s cell; with
the caches warm the same start takes a fraction of it. Each of those libraries keys its entries
by the code, shapes and GPU it compiled for, so a warm cache changes how long a start takes,
not what runs in the measured window.

Modes:

* ``auto`` (default): one directory per set of library versions under pytest-llem's cache
  (``$LLEM_CACHE_DIR/compile/<key>``), so a cache written by one vLLM or torch is never read
  by another; every cell and every later run on the machine shares it.
* ``cold``: a new, empty directory for each cell, removed after it: every cell pays a first
  start (to study that cost itself).
* ``engine``: nothing is set; each library uses its own default (``~/.cache/vllm``,
  ``~/.triton``, ...).
* any other value: a directory (``~`` expanded, relative to the study file) under which the versioned directory is made,
  e.g. shared storage on a cluster, so a fresh node starts warm.

A variable the user set in the environment (``TRITON_CACHE_DIR``, ...) is left as it is.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_llem.models.tiny import cache_root

#: The libraries whose versions key a cache directory: what compiles, and what it compiles for.
KEYED_DISTRIBUTIONS = ("torch", "triton", "vllm", "flashinfer-python", "transformers", "tensorrt-llm")

#: Each library's cache variable, and the sub-directory it gets.
CACHE_VARIABLES: dict[str, str] = {
    "VLLM_CACHE_ROOT": "vllm",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "FLASHINFER_WORKSPACE_BASE": "flashinfer",
    "CUDA_CACHE_PATH": "cuda",
}

SPECIAL_MODES = ("auto", "cold", "engine")


@functools.cache
def versions_key() -> str:
    """16 hex characters naming this interpreter and its compiling libraries' versions."""
    parts = [f"python={platform.python_version()}", f"machine={platform.machine()}"]
    for name in KEYED_DISTRIBUTIONS:
        try:
            parts.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name}=-")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class CompileCache:
    """The cache a cell's process is given: its mode, directory and whether it held anything before."""

    mode: str
    directory: Path | None
    warm: bool | None
    #: Why no directory could be given (it could not be made): the libraries' defaults apply.
    problem: str | None = None

    def environment(self, current: dict[str, str]) -> dict[str, str]:
        """The variables to add to the child's environment (never overriding one already set)."""
        if self.directory is None:
            return {}
        return {
            variable: str(self.directory / sub)
            for variable, sub in CACHE_VARIABLES.items()
            if not current.get(variable)
        }

    def describe(self) -> dict[str, Any]:
        """For the record: how the cell's start could have been helped by earlier compiles."""
        described: dict[str, Any] = {
            "mode": self.mode,
            "directory": str(self.directory) if self.directory else None,
            "warm": self.warm,
        }
        if self.problem:
            described["problem"] = self.problem
        return described

    def cleanup(self) -> None:
        """A cold cache goes with its cell."""
        if self.mode == "cold" and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _has_entries(directory: Path) -> bool:
    try:
        return any(child.is_dir() and any(child.iterdir()) for child in directory.iterdir())
    except OSError:
        return False


def compile_cache_for(mode: str, base_dir: Path) -> CompileCache:
    """The cache of ``execution.compile_cache`` = ``mode`` for one cell (made if missing).

    A relative directory is taken relative to ``base_dir``, the study file's directory.
    """
    if mode == "engine":
        return CompileCache(mode, None, None)
    try:
        if mode == "cold":
            return CompileCache(mode, Path(tempfile.mkdtemp(prefix="llem-compile-cold-")), False)
        root = cache_root() / "compile" if mode == "auto" else base_dir / Path(mode).expanduser()
        directory = root / versions_key()
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a cache is a speed-up: without one the cell runs as the engine would anyway
        return CompileCache(mode, None, None, problem=f"no compile cache ({exc.strerror or exc}): the libraries' defaults apply")
    return CompileCache(mode, directory, _has_entries(directory))
