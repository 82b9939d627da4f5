"""Where a record was measured: the machine, the job that ran it, the code it measured.

Once shards of a study ran on several machines and were merged, a record must still say which
host, GPU driver, CPU and scheduler job produced it: two configurations measured on two hosts
differ by the hosts too, and a suspicious cell must be traceable to its job's log. Everything
here is gathered in the parent (the cell's child is gone when the record is built) and never
fails a run: what cannot be read is null.

The static parts (host, CPU, driver, git commit) are read once per process and study directory;
the job ids come from the environment the scheduler sets.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Environment variables that name the job a record came from, by scheduler or CI. Only these
#: are copied (never the whole environment: it may hold secrets).
JOB_VARIABLES: dict[str, tuple[str, ...]] = {
    "slurm": (
        "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NAME", "SLURM_CLUSTER_NAME",
        "SLURM_JOB_PARTITION", "SLURMD_NODENAME",
    ),
    "kubernetes": ("JOB_COMPLETION_INDEX", "POD_NAME", "POD_NAMESPACE", "JOB_NAME"),
    "github_actions": ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "GITHUB_REPOSITORY", "GITHUB_SHA", "RUNNER_NAME"),
    "gitlab_ci": ("CI_JOB_ID", "CI_PIPELINE_ID", "CI_PROJECT_PATH", "CI_COMMIT_SHA"),
}  # fmt: skip
GIT_TIMEOUT_S = 2.0


def job_ids(env: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Per scheduler or CI, the ids it set; a Kubernetes pod's name is its hostname (when in a cluster)."""
    env = os.environ if env is None else env
    found: dict[str, dict[str, str]] = {}
    for kind, names in JOB_VARIABLES.items():
        values = {name: env[name] for name in names if env.get(name)}
        if kind == "kubernetes" and values and "POD_NAME" not in values and env.get("KUBERNETES_SERVICE_HOST"):
            values["POD_NAME"] = socket.gethostname()
        if values:
            found[kind] = values
    return found


@functools.lru_cache(maxsize=1)
def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip() or None
    except OSError:
        pass
    return platform.processor() or None


@functools.lru_cache(maxsize=1)
def nvidia_driver() -> dict[str, str | None]:
    """The NVIDIA driver's version and the CUDA version it supports, from NVML (null without one)."""
    out: dict[str, str | None] = {"driver_version": None, "cuda_driver_version": None}
    try:
        import pynvml
    except ImportError:
        return out
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):  # no driver, no GPU: nothing to say
        return out
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        out["driver_version"] = version.decode() if isinstance(version, bytes) else str(version)
        cuda = int(pynvml.nvmlSystemGetCudaDriverVersion())
        out["cuda_driver_version"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
    except Exception:  # noqa: BLE001, S110 - a description only: older bindings lack calls; never fail a cell
        pass  # what was read so far stands
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return out


@functools.lru_cache(maxsize=1)
def torch_cuda_runtime() -> str | None:
    """The CUDA runtime torch was built with, read from torch's version file without importing torch.

    The cell ran torch in its own process; the parent shares its environment, so the installed
    torch is the one that ran. Importing it here would cost seconds in a process that needs none.
    """
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        try:
            text = (Path(location) / "version.py").read_text(encoding="utf-8")
        except OSError:
            continue
        found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        return found.group(1) if found else None
    return None


@functools.lru_cache(maxsize=32)
def git_commit(directory: str) -> dict[str, Any] | None:
    """The commit checked out where the study file lives, and whether the tree had changes; None outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", directory, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _study_directory(nodeid: str | None) -> str:
    """The study file's directory from the cell's node id (relative to where pytest runs), else here."""
    if nodeid:
        path = Path(nodeid.split("::", 1)[0])
        if path.is_file():
            return str(path.resolve().parent)
    return str(Path.cwd())


def provenance(nodeid: str | None = None, versions: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record's ``provenance``: host, CPU, GPU driver and CUDA, scheduler or CI job, git commit.

    ``versions``: the child's software versions; a CUDA runtime version the child reported
    (``cuda_runtime``) is preferred to the installed torch's.
    """
    reported = (versions or {}).get("cuda_runtime")
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        **nvidia_driver(),
        "cuda_runtime_version": reported if isinstance(reported, str) else torch_cuda_runtime(),
        "jobs": job_ids(),
        "git": git_commit(_study_directory(nodeid)),
    }
