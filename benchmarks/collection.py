"""Collection time of a large sweep, against a plain ``@pytest.mark.parametrize`` test of the same size.

Not a measurement of energy: how long ``pytest --collect-only`` takes on a study of N cells, so
that a big sweep is not a wait before anything runs. For each size, a study file (the quickstart's
tiny model, a sweep of ``transformers.batch_size`` x ``max_input_tokens`` x ``max_output_tokens``,
``--cycles`` cycles) and a test file with the same axes as stacked ``parametrize`` decorators are
written to a temporary directory, and each is collected in a fresh pytest process, so the figure
includes start-up, as a user waits for it. Prints a Markdown table (paste it into BENCHMARKS.md).

    python benchmarks/collection.py                       # 1k, 10k and 100k cells
    python benchmarks/collection.py --sizes 1000 10000 --repeat 3

Each figure is the fastest of ``--repeat`` runs: the machine's other load only ever adds time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SIZES: tuple[int, ...] = (1_000, 10_000, 100_000)
DEFAULT_CYCLES = 2
BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8)
INPUT_TOKENS: tuple[int, ...] = (16, 32, 64, 128, 256)
#: The checkout this script belongs to: the one measured, whatever is installed.
REPO_ROOT = Path(__file__).resolve().parents[1]
COLLECT = ("--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark")


@dataclass(frozen=True)
class Axes:
    """The swept values of one size: ``len(batch) * len(inputs) * len(outputs) * cycles`` cells."""

    batch: tuple[int, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    cycles: int

    @property
    def cells(self) -> int:
        return len(self.batch) * len(self.inputs) * len(self.outputs) * self.cycles


def axes_for(cells: int, cycles: int) -> Axes:
    """Axes giving exactly ``cells`` cells; the output-length axis takes whatever the others leave."""
    per_output = len(BATCH_SIZES) * len(INPUT_TOKENS) * cycles
    if cells % per_output:
        raise SystemExit(f"--sizes: {cells} is not a multiple of {per_output} (4 batch sizes x 5 input lengths x {cycles} cycles)")
    return Axes(BATCH_SIZES, INPUT_TOKENS, tuple(range(1, cells // per_output + 1)), cycles)


def study_text(axes: Axes) -> str:
    return textwrap.dedent(
        f"""\
        name: collection-benchmark
        model: llem-tiny
        engine: transformers
        dataset:
          source: llem-prompts
          n_prompts: 8
        ignore_eos: true
        sweep:
          transformers.batch_size: {list(axes.batch)}
          max_input_tokens: {list(axes.inputs)}
          max_output_tokens: {list(axes.outputs)}
        execution:
          n_cycles: {axes.cycles}
        """
    )


def parametrize_text(axes: Axes) -> str:
    """The same grid as plain pytest: one item per (configuration, cycle)."""
    return textwrap.dedent(
        f"""\
        import pytest


        @pytest.mark.parametrize("cycle", range({axes.cycles}))
        @pytest.mark.parametrize("max_output_tokens", {list(axes.outputs)})
        @pytest.mark.parametrize("max_input_tokens", {list(axes.inputs)})
        @pytest.mark.parametrize("batch_size", {list(axes.batch)})
        def test_cell(batch_size: int, max_input_tokens: int, max_output_tokens: int, cycle: int) -> None:
            pass
        """
    )


def collect_seconds(directory: Path, target: str, expected: int, repeat: int) -> float:
    """Fastest wall time of ``pytest --collect-only`` on ``target``; checks it collected ``expected`` items."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *COLLECT, target],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"collecting {target} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        if f"{expected} test" not in done.stdout.splitlines()[-1]:
            raise SystemExit(f"collecting {target}: expected {expected} items, pytest said {done.stdout.splitlines()[-1]!r}")
        best = min(best, elapsed)
    return best


def measure(cells: int, cycles: int, repeat: int) -> tuple[float, float]:
    """(llem seconds, parametrize seconds) for one size, in a fresh temporary directory."""
    axes = axes_for(cells, cycles)
    with tempfile.TemporaryDirectory(prefix="llem-collection-") as tmp:
        directory = Path(tmp)
        (directory / "study.llem.yaml").write_text(study_text(axes), encoding="utf-8")
        (directory / "test_parametrize.py").write_text(parametrize_text(axes), encoding="utf-8")
        llem = collect_seconds(directory, "study.llem.yaml", axes.cells, repeat)
        plain = collect_seconds(directory, "test_parametrize.py", axes.cells, repeat)
    return llem, plain


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="numbers of cells (default: %(default)s)")
    parser.add_argument("--cycles", type=int, default=DEFAULT_CYCLES, help="execution.n_cycles of the study (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the fastest is kept (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for cells in args.sizes:
        axes_for(cells, args.cycles)  # refuse a bad size before spending minutes on the others
    print("| cells | llem s | parametrize s | ratio |")
    print("|---:|---:|---:|---:|")
    for cells in args.sizes:
        llem, plain = measure(cells, args.cycles, args.repeat)
        print(f"| {cells:,} | {llem:.2f} | {plain:.2f} | {llem / plain:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
