"""The multi-GPU proof on a machine with two GPUs (issue 15), and a GPU sanity run (issue 11).

    python benchmarks/multi_gpu_proof.py run     --out DIR   # every step below, in this order
    python benchmarks/multi_gpu_proof.py summary --out DIR   # the figures, as Markdown (DIR/summary.md)

Steps of ``run`` (each a plain ``pytest`` command, printed before it runs, its output in DIR/logs):

1. ``quickstart``: the README's quickstart study, on the GPU.
2. ``tp``: ``benchmarks/studies/tensor-parallel.llem.yaml`` (vLLM, TP 1 and TP 2, two cycles).
3. ``tp-under-xdist``: the TP-2 cell under ``-n 2`` (each worker holds one GPU): refused or not.
4. ``pool-n2``: ``benchmarks/studies/multi-gpu-pool.llem.yaml -n 2 --dist loadscope``.
5. ``pool-serial``: the same study on one GPU alone (``CUDA_VISIBLE_DEVICES`` = ``$PROOF_SERIAL_GPU``, 0 by default).
6. ``adaptive`` (issue 12): ``benchmarks/studies/adaptive.llem.yaml`` on ``$PROOF_ADAPTIVE_GPU`` (1 by default):
   adaptive cycles and the idle baseline's uncertainty on hardware. It can run beside
   ``pool-serial`` (another GPU) in a second ``run`` with its own ``--out``.

Run from the repository root with the plugin importable (PYTHONPATH and ``-p pytest_llem.plugin``,
as ``shared/gpu/README.md`` shows). Wall times per step go to DIR/steps.json. On the device
machine, start a long run in the background from a copy outside the checkout (``cp -r . /root/snap``
and ``setsid`` there): every device call re-syncs the checkout, and files of a run started inside
it vanish under the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

PYTEST = [sys.executable, "-m", "pytest", "-p", "pytest_llem.plugin", "-p", "no:cacheprovider", "-p", "no:benchmark", "-q", "-rA"]
STEPS: dict[str, tuple[list[str], dict[str, str]]] = {
    "quickstart": (["examples/quickstart.llem.yaml"], {}),
    "tp": (["benchmarks/studies/tensor-parallel.llem.yaml"], {}),
    "tp-under-xdist": (["benchmarks/studies/tensor-parallel.llem.yaml", "-n", "2", "-k", "tp2 and c0"], {}),
    "pool-n2": (["benchmarks/studies/multi-gpu-pool.llem.yaml", "-n", "2", "--dist", "loadscope"], {}),
    "pool-serial": (["benchmarks/studies/multi-gpu-pool.llem.yaml"], {"CUDA_VISIBLE_DEVICES": os.environ.get("PROOF_SERIAL_GPU", "0")}),
    "adaptive": (["benchmarks/studies/adaptive.llem.yaml"], {"CUDA_VISIBLE_DEVICES": os.environ.get("PROOF_ADAPTIVE_GPU", "1")}),
}


def run(out: Path, only: Iterable[str]) -> None:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.json"
    done: dict[str, Any] = json.loads(steps_file.read_text()) if steps_file.is_file() else {}
    for name in only:
        args, env = STEPS[name]
        command = [*PYTEST, *args, "--llem-results-dir", str(out / name)]
        print(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(command)}", flush=True)
        started = time.monotonic()
        with open(out / "logs" / f"{name}.log", "w") as log:
            proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, check=False)
        done[name] = {"exit_code": proc.returncode, "wall_s": round(time.monotonic() - started, 1)}
        steps_file.write_text(json.dumps(done, indent=1))
        print(f"  -> exit {proc.returncode} in {done[name]['wall_s']} s", flush=True)


def _records(study_root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(study_root.glob("*/*/result.json"))]


def _manifest(study_root: Path) -> dict[str, Any]:
    found = sorted(study_root.glob("*/manifest.json"))
    return json.loads(found[-1].read_text()) if found else {}


def _median_range(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def _window_power(record: dict[str, Any], study_root: Path) -> list[str]:
    """Mean sampled power per GPU inside the window, from the cell's timeseries."""
    import pyarrow.parquet as pq

    cells = [p for p in study_root.glob("*/*/result.json") if json.loads(p.read_text())["experiment_id"] == record["experiment_id"]]
    series = cells[0].parent / str(record.get("timeseries")) if cells else None
    if series is None or not series.is_file() or record.get("window_t_start_s") is None:
        return []
    table = pq.read_table(series).to_pydict()
    t0, t1 = record["window_t_start_s"], record["window_t_start_s"] + record["total_inference_time_sec"]
    out = []
    for gpu in sorted(set(table["gpu_idx"])):
        powers = [p for t, g, p in zip(table["t"], table["gpu_idx"], table["power_w"]) if g == gpu and t0 <= t <= t1 and p is not None]
        if powers:
            out.append(f"GPU{gpu} {statistics.fmean(powers):.0f} W")
    return out


def _overlaps(records: list[dict[str, Any]]) -> list[str]:
    """Pairs of cells that ran on one GPU at the same time (should be none)."""
    spans = []
    for r in records:
        if r.get("cell_started_at") and r.get("cell_ended_at"):
            start = datetime.fromisoformat(r["cell_started_at"])
            end = datetime.fromisoformat(r["cell_ended_at"])
            spans.append((tuple(g["uuid"] for g in r["gpus"]), start, end, r["experiment_id"]))
    clashes = []
    for i, (gpus_a, start_a, end_a, id_a) in enumerate(spans):
        for gpus_b, start_b, end_b, id_b in spans[i + 1 :]:
            if set(gpus_a) & set(gpus_b) and start_a < end_b and start_b < end_a:
                clashes.append(f"{id_a} and {id_b}")
    return clashes


def summary(out: Path) -> None:
    lines: list[str] = ["# multi-GPU proof", ""]
    if (out / "steps.json").is_file():
        lines += ["| step | exit | wall s |", "|---|---|---|"]
        for name, step in json.loads((out / "steps.json").read_text()).items():
            lines.append(f"| {name} | {step['exit_code']} | {step['wall_s']} |")
        lines.append("")
    for name in ("quickstart", "tp", "pool-n2", "pool-serial"):
        records = _records(out / name)
        if not records:
            continue
        manifest = _manifest(out / name)
        lines += [f"## {name}", "", f"manifest summary: {json.dumps({k: manifest.get('summary', {}).get(k) for k in ('total_experiments', 'completed', 'failed', 'total_wall_time_s')})}", ""]
        lines += ["| cell | GPU(s) | mJ/tok | adj. mJ/tok | tok/s | energy per GPU J | idle W per GPU | window power | wall s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in records:
            gpus = ", ".join(g["uuid"][-8:] for g in r["gpus"])
            per_device = ", ".join(f"{e:.0f}" for e in (r.get("energy_per_device_j") or []))
            idle = ", ".join(f"{w:.1f}" for w in (r.get("baseline_per_device_w") or []))
            lines.append(
                f"| {r['experiment_id']} | {gpus} | {r['mj_per_tok_total'] or float('nan'):.2f} |"
                f" {r['mj_per_tok_adjusted'] or float('nan'):.2f} | {r['avg_tokens_per_second']:.0f} | {per_device} | {idle} |"
                f" {'; '.join(_window_power(r, out / name))} | {r['cell_wall_time_s']:.0f} |"
            )
        warnings = sorted({w for r in records for w in r["warnings"]})
        lines += ["", f"warnings: {warnings or 'none'}", f"cells sharing a GPU at the same time: {_overlaps(records) or 'none'}"]
        caches = sorted((out / name).glob("*/_study-artefacts/baseline_cache_*.json"))
        for path in caches:
            b = json.loads(path.read_text())
            lines.append(f"- idle baseline {b['gpu_uuid']}: {b['power_w']:.1f} W (std {b['std_w']:.1f}, {b['duration_s']:.0f} s)")
        lines.append("")
    pools = {name: _records(out / name) for name in ("pool-n2", "pool-serial")}
    if all(pools.values()):
        lines += ["## pool: -n 2 against one GPU", "", "| config | metric | -n 2 median (range) | serial median (range) |", "|---|---|---|---|"]
        for config_id in sorted({r["config_id"] for r in pools["pool-n2"]}):
            for metric in ("mj_per_tok_total", "mj_per_tok_adjusted", "avg_tokens_per_second"):
                cells = [
                    _median_range([r[metric] for r in pools[k] if r["config_id"] == config_id and r[metric] is not None])
                    for k in ("pool-n2", "pool-serial")
                ]
                lines.append(f"| {config_id} | {metric} | {cells[0]} | {cells[1]} |")
        walls = {k: _manifest(out / k).get("summary", {}).get("total_wall_time_s") for k in pools}
        if all(walls.values()):
            lines.append(f"\nstudy wall time: -n 2 {walls['pool-n2']:.0f} s, serial {walls['pool-serial']:.0f} s, speed-up {walls['pool-serial'] / walls['pool-n2']:.2f}x")
    log = out / "logs" / "tp-under-xdist.log"
    if log.is_file():
        lines += ["", "## TP 2 under -n 2", "", "```", *[line for line in log.read_text().splitlines() if "tp2" in line or "GPU" in line][-6:], "```"]
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("run", "summary"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", nargs="*", default=list(STEPS), choices=list(STEPS))
    args = parser.parse_args()
    if args.what == "run":
        run(args.out, args.steps)
    summary(args.out)


if __name__ == "__main__":
    main()
