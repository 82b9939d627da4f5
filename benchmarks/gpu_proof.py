"""The measurement proof on a GPU machine: repeatability, plugin overhead, edge error, idle power.

    python benchmarks/gpu_proof.py pairs   --out DIR   # gpu-bound study, cycle by cycle, each
                                                       # followed by the bare script; edge error last
    python benchmarks/gpu_proof.py cycles  --out DIR   # gpu-bound study, 5 cycles in one session
    python benchmarks/gpu_proof.py edge    --out DIR   # edge error: batch 128 (below the power cap),
                                                       # 30 s soak, 60 s reference
    python benchmarks/gpu_proof.py host    --out DIR   # the host-bound study, 5 cycles
    python benchmarks/gpu_proof.py summary --out DIR   # the figures, as a Markdown table

Run from the repository root with the plugin importable (``pip install -e .`` or PYTHONPATH and
``-p pytest_llem.plugin``). Everything lands under DIR.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
from pathlib import Path

CYCLES = 5
PYTEST = [
    sys.executable,
    "-m",
    "pytest",
    "-p",
    "pytest_llem.plugin",
    "-p",
    "no:cacheprovider",
    "-q",
]


def pairs(out: Path) -> None:
    for k in range(CYCLES):
        subprocess.run(
            PYTEST
            + [
                "benchmarks/studies/gpu-bound.llem.yaml",
                "-k",
                f"c{k}",
                "--llem-results-dir",
                str(out / "plugin"),
            ],
            check=False,
        )
        bare = [
            sys.executable,
            "benchmarks/bare_loop.py",
            "--json",
            str(out / f"bare_{k}.json"),
        ]
        if k == CYCLES - 1:
            bare += ["--reference-seconds", "60"]
        subprocess.run(bare, check=False)


def cycles(out: Path) -> None:
    subprocess.run(
        PYTEST
        + [
            "benchmarks/studies/gpu-bound.llem.yaml",
            "--llem-results-dir",
            str(out / "plugin"),
        ],
        check=False,
    )


def edge(out: Path) -> None:
    subprocess.run(
        [sys.executable, "benchmarks/bare_loop.py", "--batch-size", "128", "--n-prompts", "128", "--soak-seconds", "30",
         "--reference-seconds", "60", "--json", str(out / "edge.json")],
        check=False,
    )  # fmt: skip


def host(out: Path) -> None:
    subprocess.run(
        PYTEST
        + [
            "benchmarks/studies/host-bound.llem.yaml",
            "--llem-results-dir",
            str(out / "host"),
        ],
        check=False,
    )


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    cv = statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0
    return f"mean {statistics.fmean(values):.3f}, CV {100 * cv:.2f} % (n={len(values)})"


def _records(pattern: str) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in sorted(glob.glob(pattern))]


def summary(out: Path) -> None:
    lines = []
    for name, pattern in (
        ("gpu-bound (plugin)", "plugin/*/*/result.json"),
        ("host-bound (plugin)", "host/*/*/result.json"),
    ):
        records = _records(str(out / pattern))
        if not records:
            continue
        lines.append(f"## {name}")
        for field in (
            "mj_per_tok_total",
            "mj_per_tok_adjusted",
            "avg_tokens_per_second",
            "total_inference_time_sec",
        ):
            lines.append(
                f"- {field}: {_stats([r[field] for r in records if r[field] is not None])}"
            )
        util = [
            r["telemetry"]["mean_utilization_gpu_pct"]
            for r in records
            if r.get("telemetry")
        ]
        lines.append(
            f"- mean GPU utilisation in window: {_stats([u for u in util if u is not None])}"
        )
        lines.append(
            f"- mean power W: {_stats([r['total_energy_j'] / r['total_inference_time_sec'] for r in records])}"
        )
        lines.append(
            f"- baseline W: {sorted({round(r['baseline_power_w'], 2) for r in records if r['baseline_power_w']})}"
            f" sources: {sorted({r['baseline_source'] for r in records if r['baseline_source']})}"
        )
        lines.append(
            f"- warnings: {sorted({w for r in records for w in r['warnings']})}"
        )
    bare = [json.loads(p.read_text()) for p in sorted(out.glob("bare_*.json"))]
    plugin = _records(str(out / "plugin/*/*/result.json"))
    if bare and plugin:
        b_mj, p_mj = (
            [b["mj_per_tok"] for b in bare],
            [r["mj_per_tok_total"] for r in plugin],
        )
        b_tps, p_tps = (
            [b["tokens_per_s"] for b in bare],
            [r["avg_tokens_per_second"] for r in plugin],
        )
        lines.append("## plugin vs bare script (interleaved)")
        lines.append(f"- bare mJ/tok: {_stats(b_mj)}; bare tok/s: {_stats(b_tps)}")
        lines.append(
            f"- ratio plugin/bare mJ/tok: {statistics.fmean(p_mj) / statistics.fmean(b_mj):.4f}"
        )
        lines.append(
            f"- ratio plugin/bare tok/s: {statistics.fmean(p_tps) / statistics.fmean(b_tps):.4f}"
        )
    edges = [b["edge_error"] for b in bare if "edge_error" in b]
    if (out / "edge.json").is_file():
        edges.append(json.loads((out / "edge.json").read_text())["edge_error"])
    for found in edges:
        lines.append(
            f"## edge error at {found['window_s']} s windows vs a {found['reference_s']:.0f} s reference"
        )
        lines.append(f"- {json.dumps(found)}")
    caches = sorted(out.glob("*/*/_study-artefacts/baseline_cache_*.json"))
    if caches:
        lines.append("## idle baselines")
        for path in caches:
            b = json.loads(path.read_text())
            lines.append(
                f"- {path.parent.parent.name}: {b['power_w']:.2f} W (samples mean {b['mean_sampled_w']:.2f},"
                f" std {b['std_w']:.2f}, min {b['min_w']:.1f}, max {b['max_w']:.1f}, n {b['n_samples']},"
                f" {b['duration_s']:.1f} s, {b['temperature_c']} C)"
            )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("pairs", "cycles", "edge", "host", "summary"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"pairs": pairs, "cycles": cycles, "edge": edge, "host": host, "summary": summary}[
        args.part
    ](args.out)


if __name__ == "__main__":
    main()
