"""Faults on a GPU machine: kill pytest in a cell's measured window, see what survives, resume.

    python benchmarks/fault_proof.py STUDY --signal TERM --out DIR [--pytest-arg ...]

Runs ``pytest STUDY`` and waits until the running cell's child says it is measuring (its
``child.log`` shows ``phase: measure``), plus a few seconds. It records every process below
pytest and the GPU's compute processes and memory, sends the signal to pytest alone (as
``timeout``, a CI cancellation or Slurm would), then polls every 0.1 s until no process of the
cell is alive and the GPU holds no compute process, and records how long each took. Then it
runs ``pytest --llem-resume STUDY`` and records its outcome and the study's manifest summary.
Prints one JSON object and writes it to DIR/fault-<signal>.json.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark"]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                children.setdefault(found[0], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if (s := _stat(p)) is not None and s[1] != "Z"]


def gpu_apps() -> tuple[list[int], int]:
    """PIDs of the GPU's compute processes and the memory used on all GPUs (MiB)."""
    apps = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader,nounits"], capture_output=True, text=True, check=False
    ).stdout.split()
    used = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True, text=True, check=False
    ).stdout.split()
    return [int(p) for p in apps if p.isdigit()], sum(int(u) for u in used if u.isdigit())


def run(study: Path, sig: signal.Signals, out: Path, extra: list[str], settle_s: float) -> dict[str, Any]:
    results = out / f"results-{sig.name}"
    log = open(out / f"pytest-{sig.name}.log", "w")  # noqa: SIM115 - the child writes to it until killed
    started = time.monotonic()
    proc = subprocess.Popen([*PYTEST, str(study), "--llem-results-dir", str(results), *extra], stdout=log, stderr=log)
    while not any("phase: measure" in p.read_text(errors="replace") for p in results.glob("*/*/child.log")):
        if proc.poll() is not None:
            raise SystemExit(f"pytest ended (code {proc.returncode}) before a cell measured; see {log.name}")
        time.sleep(0.2)
    time.sleep(settle_s)
    cell_procs = descendants(proc.pid)
    apps_before, memory_before = gpu_apps()
    killed_at = time.monotonic()
    proc.send_signal(sig)
    proc.wait()
    gone_s = gpu_free_s = None
    while time.monotonic() - killed_at < 120 and (gone_s is None or gpu_free_s is None):
        now = time.monotonic() - killed_at
        if gone_s is None and not alive(cell_procs):
            gone_s = now
        if gpu_free_s is None and not gpu_apps()[0]:
            gpu_free_s = now
        time.sleep(0.1)
    apps_after, memory_after = gpu_apps()
    resumed = subprocess.run(
        [*PYTEST, str(study), "--llem-resume", "--llem-results-dir", str(results), *extra],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    (out / f"resume-{sig.name}.log").write_text(resumed.stdout + resumed.stderr)
    manifests = sorted(results.glob("*/manifest.json"))
    manifest = json.loads(manifests[-1].read_text()) if manifests else {}
    return {
        "study": str(study),
        "signal": sig.name,
        "seconds_from_start_to_kill": round(killed_at - started, 1),
        "cell_processes_before_kill": len(cell_procs),
        "gpu_compute_processes_before_kill": len(apps_before),
        "gpu_memory_used_mib_before_kill": memory_before,
        "seconds_until_no_cell_process": None if gone_s is None else round(gone_s, 2),
        "seconds_until_no_gpu_process": None if gpu_free_s is None else round(gpu_free_s, 2),
        "gpu_memory_used_mib_after": memory_after,
        "gpu_compute_processes_after": apps_after,
        "resume_exit_code": resumed.returncode,
        "resume_outcome": (resumed.stdout.strip().splitlines() or [""])[-1],
        "study_directories": len(manifests),
        "manifest_summary": manifest.get("summary"),
        "resumed": manifest.get("resumed"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path)
    parser.add_argument("--signal", default="TERM", choices=("TERM", "KILL", "HUP", "INT"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds into the window before the signal")
    parser.add_argument("--pytest-arg", action="append", default=[], help="passed to both pytest runs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sig = signal.Signals[f"SIG{args.signal}"]
    figures = run(args.study, sig, args.out, args.pytest_arg, args.settle)
    (args.out / f"fault-{sig.name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
