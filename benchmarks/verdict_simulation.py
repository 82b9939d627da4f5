"""Simulations of the verdicts' statistics: do they mean what their labels say?

Not a timed benchmark: each subcommand simulates many studies with a known truth, runs the
project's own code on them and prints a Markdown section (paste it into BENCHMARKS.md).

``coverage``: how often the "95 %" interval of ``pytest_llem.verdicts.statistics.summarise``
contains the true mean, per number of cycles n, on normal data and on a right-skewed
distribution (lognormal, sigma 0.5). The interval is only honest if this is close to 95 %; the
statistics module picks its method (Student t or BCa bootstrap) from these figures.
``--with-bca`` adds what the BCa bootstrap alone (``scipy.stats.bootstrap`` called directly,
same resamples and seeds) would cover at the same n, which is what justifies the switch-over n.

    python benchmarks/verdict_simulation.py coverage                  # n = 2, 3, 5, 10, 20 and BCA_MIN_N
    python benchmarks/verdict_simulation.py coverage --with-bca --sizes 10 20 50 100

Everything is seeded (``--seed``): the same command prints the same table.

New sections go in as further subcommands: write ``add_<name>_command(subparsers)`` that adds
the subcommand's arguments and sets ``run=`` to a function taking the parsed arguments and
returning an exit status, and call it from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from pytest_llem.verdicts.statistics import BCA_MIN_N, summarise

#: Coverage at these n must reach TARGET_COVERAGE on every distribution (the audit's bar).
TARGET_SIZES: tuple[int, ...] = (3, 5, 10)
TARGET_COVERAGE = 0.93
CONFIDENCE = 0.95
DEFAULT_SIZES: tuple[int, ...] = tuple(sorted({2, 3, 5, 10, 20, BCA_MIN_N}))
DEFAULT_SEED = 20261124

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray[Any, Any]]


@dataclass(frozen=True)
class Distribution:
    """A distribution of cycle values whose true mean is known, so coverage can be counted."""

    name: str
    draw: Draw
    mean: float
    sd: float
    skewness: float


def _normal(mu: float, sigma: float) -> Distribution:
    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
        return rng.normal(mu, sigma, size=shape)

    return Distribution("normal", draw, mean=mu, sd=sigma, skewness=0.0)


def _lognormal(sigma: float) -> Distribution:
    """exp(N(0, sigma^2)): right-skewed like a metric with occasional slow, costly cycles."""

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray[Any, Any]:
        return rng.lognormal(0.0, sigma, size=shape)

    var_factor = math.expm1(sigma**2)  # exp(sigma^2) - 1
    mean = math.exp(sigma**2 / 2)
    return Distribution(
        f"lognormal-{sigma:g}", draw, mean=mean, sd=mean * math.sqrt(var_factor),
        skewness=(var_factor + 3) * math.sqrt(var_factor),
    )  # fmt: skip


DISTRIBUTIONS: dict[str, Distribution] = {d.name: d for d in (_normal(10.0, 1.0), _lognormal(0.5), _lognormal(0.25))}
DEFAULT_DISTRIBUTIONS: tuple[str, ...] = ("normal", "lognormal-0.25", "lognormal-0.5")


@dataclass(frozen=True)
class CoverageRow:
    """The outcome of ``samples`` simulated studies of ``n`` cycles each from one distribution."""

    distribution: Distribution
    n: int
    samples: int
    methods: tuple[str, ...]  # the ci_method labels summarise used, sorted
    covered: int
    below: int  # misses with the true mean below the interval
    above: int  # misses with the true mean above it: for a two-sided 95 % interval, ideally 2.5 % each
    mean_half_width: float  # in units of the distribution's true standard deviation
    bca_covered: int | None = None  # --with-bca: the BCa bootstrap alone, scipy called directly

    @property
    def coverage(self) -> float:
        return self.covered / self.samples

    @property
    def standard_error(self) -> float:
        """Monte Carlo standard error of the coverage: the table's figures are this noisy."""
        p = self.coverage
        return math.sqrt(p * (1 - p) / self.samples)


def _bca_alone(data: np.ndarray[Any, Any], n_resamples: int, seed: int) -> tuple[float, float]:
    """scipy's BCa bootstrap of the mean, as the statistics module calls it (NaN where it cannot)."""
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    kwargs: dict[str, Any] = {key: np.random.default_rng(seed)}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap((data,), np.mean, confidence_level=CONFIDENCE, n_resamples=n_resamples, method="BCa", **kwargs)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def simulate_coverage(
    distribution: Distribution, n: int, samples: int, seed: int, n_resamples: int, with_bca: bool = False
) -> CoverageRow:
    """Draw ``samples`` studies of ``n`` values, summarise each, count intervals holding the true mean.

    The generator is seeded from (seed, distribution, n), so adding a size or a distribution
    does not change the other rows. Each study's bootstrap gets its own seed (its index).
    """
    index = list(DISTRIBUTIONS).index(distribution.name)
    rng = np.random.default_rng([seed, index, n])
    draws = distribution.draw(rng, (samples, n))
    covered = below = above = 0
    bca_covered = 0
    half_widths: list[float] = []
    methods: set[str] = set()
    for i, row in enumerate(draws):
        s = summarise(row.tolist(), "simulated", confidence=CONFIDENCE, n_resamples=n_resamples, seed=i)
        methods.add(str(s.ci_method))
        if s.ci_low is not None and s.ci_high is not None:
            covered += s.ci_low <= distribution.mean <= s.ci_high
            below += distribution.mean < s.ci_low
            above += distribution.mean > s.ci_high
            half_widths.append((s.ci_high - s.ci_low) / 2)
        if with_bca and s.ci_method == "bca":  # summarise made the very same call
            bca_covered += s.ci_low is not None and s.ci_high is not None and s.ci_low <= distribution.mean <= s.ci_high
        elif with_bca:
            low, high = _bca_alone(row, n_resamples, i)
            bca_covered += low <= distribution.mean <= high  # NaN bounds count as a miss
    return CoverageRow(
        distribution=distribution, n=n, samples=samples, methods=tuple(sorted(methods)), covered=covered,
        below=below, above=above,
        mean_half_width=float(np.mean(half_widths)) / distribution.sd if half_widths else math.nan,
        bca_covered=bca_covered if with_bca else None,
    )  # fmt: skip


def _target_cell(row: CoverageRow) -> str:
    if row.n not in TARGET_SIZES:
        return ""
    return "yes" if row.coverage >= TARGET_COVERAGE else "**no**"


def coverage_header(with_bca: bool) -> list[str]:
    columns = ["distribution", "n", "method (summarise)", "coverage", "MC s.e.", "misses: mean below : above", "mean half-width / sd",
               f">= {TARGET_COVERAGE:.0%} at n in {', '.join(map(str, TARGET_SIZES))}"]  # fmt: skip
    if with_bca:
        columns.append("BCa alone (scipy)")
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def coverage_line(row: CoverageRow) -> str:
    cells = [
        row.distribution.name, str(row.n), ", ".join(row.methods), f"{row.coverage:.3f}",
        f"{row.standard_error:.3f}", f"{row.below} : {row.above}", f"{row.mean_half_width:.2f}", _target_cell(row),
    ]  # fmt: skip
    if row.bca_covered is not None:
        cells.append(f"{row.bca_covered / row.samples:.3f}")
    return "| " + " | ".join(cells) + " |"


def run_coverage(args: argparse.Namespace) -> int:
    """Print the coverage table row by row (the BCa rows are slow), then the targets it misses, if any."""
    distributions = [DISTRIBUTIONS[name] for name in args.distributions]
    print(f"### Coverage of the {CONFIDENCE:.0%} interval of the mean (`summarise`)")
    print()
    print(
        f"{args.samples} simulated studies per row, seed {args.seed}, {args.n_resamples} bootstrap resamples"
        f" (BCa from n = {BCA_MIN_N}). True mean inside the interval: coverage; ideal {CONFIDENCE:.2f}."
    )
    for d in distributions:
        print(f"`{d.name}`: mean {d.mean:.4g}, sd {d.sd:.4g}, skewness {d.skewness:.2f}.")
    print()
    for line in coverage_header(args.with_bca):
        print(line)
    missed: list[str] = []
    for d in distributions:
        for n in args.sizes:
            row = simulate_coverage(d, n, args.samples, args.seed, args.n_resamples, with_bca=args.with_bca)
            if _target_cell(row) == "**no**":
                missed.append(f"{d.name} at n = {n} ({row.coverage:.3f})")
            print(coverage_line(row), flush=True)
    print()
    print(f"Below {TARGET_COVERAGE:.0%}: {'; '.join(missed)}." if missed else f"Every target ({TARGET_COVERAGE:.0%}) met.")
    return 0


def _size(text: str) -> int:
    n = int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"an interval needs at least 2 values, got {n}")
    return n


def add_coverage_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "coverage", help="coverage of summarise's 95 %% interval by n and distribution",
        description="Coverage of summarise's 95 % interval of the mean, by n and distribution.",
    )  # fmt: skip
    parser.add_argument("--samples", type=int, default=1000, help="simulated studies per row (default 1000)")
    parser.add_argument("--sizes", type=_size, nargs="+", default=list(DEFAULT_SIZES), help="numbers of cycles n")
    parser.add_argument(
        "--distributions", nargs="+", choices=list(DISTRIBUTIONS), default=list(DEFAULT_DISTRIBUTIONS),
        help="distributions of the cycle values",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n-resamples", type=int, default=9999, help="bootstrap resamples (summarise's default)")
    parser.add_argument("--with-bca", action="store_true", help="add the BCa bootstrap's own coverage (slow)")
    parser.set_defaults(run=run_coverage)


def run_gate(args: argparse.Namespace) -> int:
    """False-positive rate per session and power of the regression gate, with the project's own functions.

    Each simulated session stores ``n`` cycles per configuration and measures ``n`` again: normal
    values around 100 with the given CV, the current ones multiplied by 1 + the true change. Every
    configuration is judged under ``mj_per_tok_adjusted.median:5%`` by
    :func:`pytest_llem.verdicts.compare.judge`, and Holm's correction runs over the session, as
    :func:`pytest_llem.verdicts.gate.run_gate` does. A session fails when any configuration regressed.
    """
    from pytest_llem.verdicts.compare import judge, parse_rule
    from pytest_llem.verdicts.decision import holm

    rule = parse_rule("mj_per_tok_adjusted.median:5%")
    rng = np.random.default_rng(args.seed)
    print(f"{args.sessions} sessions per row, rule median:5%, seed {args.seed}\n")
    print("| CV | n | configurations | true change | sessions failed | configurations decided (pass or regressed) |")
    print("|---|---|---|---|---|---|")
    for cv in args.cvs:
        for n in args.sizes:
            for configs, change in ((1, 0.0), (4, 0.0), (8, 0.0), (1, 0.05), (1, 0.10)):
                failed = decided = 0
                for _ in range(args.sessions):
                    verdicts = [
                        judge(
                            "c", rule, list(100.0 * (1 + cv * rng.standard_normal(n))),
                            list(100.0 * (1 + change) * (1 + cv * rng.standard_normal(n))),
                        )
                        for _ in range(configs)
                    ]
                    rejected = holm([v.evidence.p_value for v in verdicts if v.evidence is not None])
                    failed += any(rejected)
                    decided += sum(r or v.status == "pass" for v, r in zip(verdicts, rejected))
                label = "none" if change == 0 else f"+{100 * change:.0f} %"
                print(
                    f"| {100 * cv:g} % | {n} | {configs} | {label} | {100 * failed / args.sessions:.1f} % |"
                    f" {100 * decided / (args.sessions * configs):.0f} % |"
                )
    return 0


def add_gate_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gate", help="false positives per session and power of the regression gate",
        description="False-positive rate per session and power of the regression gate, by CV, n and configurations.",
    )  # fmt: skip
    parser.add_argument("--sessions", type=int, default=1000, help="simulated sessions per row (default 1000)")
    parser.add_argument("--sizes", type=_size, nargs="+", default=[3, 5, 10], help="cycles per side")
    parser.add_argument("--cvs", type=float, nargs="+", default=[0.01, 0.08], help="cycle-to-cycle CVs")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.set_defaults(run=run_gate)


def _adaptive_session(
    rng: np.random.Generator, configs: int, change: float, cv: float, stored_n: int, start: int, cap: int
) -> tuple[bool, int, list[int]]:
    """One session with adaptive cycles: ``(failed, configurations decided, cycles each used)``.

    As the session does it: judge every configuration, Holm over the session, and give each
    configuration still inconclusive one more cycle (``pytest_llem.verdicts.adaptive.needs``
    decides, with the gate's inconclusive set), round after round, until none is or the cap.
    """
    from pytest_llem.verdicts.adaptive import needs
    from pytest_llem.verdicts.compare import judge, parse_rule
    from pytest_llem.verdicts.decision import holm

    rule = parse_rule("mj_per_tok_adjusted.median:5%")
    stored = [list(100.0 * (1 + cv * rng.standard_normal(stored_n))) for _ in range(configs)]
    current = [list(100.0 * (1 + change) * (1 + cv * rng.standard_normal(start))) for _ in range(configs)]
    while True:
        verdicts = [judge(f"c{i}", rule, stored[i], current[i]) for i in range(configs)]
        tested = [i for i, v in enumerate(verdicts) if v.evidence is not None]
        rejected = dict(zip(tested, holm([v.evidence.p_value for v in verdicts if v.evidence is not None])))
        undecided = {f"c{i}": "median:5%" for i, v in enumerate(verdicts) if v.status == "inconclusive" and not rejected.get(i)}
        more = [n for n in needs([], {f"c{i}": len(current[i]) for i in range(configs)}, target_ci_pct=None, cap=cap,
                                  inconclusive=undecided) if n.more]  # fmt: skip
        if not more:
            break
        for need in more:
            index = int(need.config_id[1:])
            current[index].append(100.0 * (1 + change) * (1 + cv * rng.standard_normal()))
    decided = sum(bool(rejected.get(i)) or v.status == "pass" for i, v in enumerate(verdicts))
    return any(rejected.values()), decided, [len(c) for c in current]


def run_adaptive(args: argparse.Namespace) -> int:
    """The gate with adaptive cycles: can the default study (3 cycles) reach a decision, and at what cost?"""
    rng = np.random.default_rng(args.seed)
    print(
        f"{args.sessions} sessions per row, rule median:5%, seed {args.seed}; stored baseline {args.stored} cycles,"
        f" current run starts at {args.start} and an inconclusive configuration gets one more cycle per round up to"
        f" {args.cap}\n"
    )
    print("| CV | configurations | true change | sessions failed | configurations decided | mean cycles used | at the cap |")
    print("|---|---|---|---|---|---|---|")
    for cv in args.cvs:
        for configs, change in ((1, 0.0), (4, 0.0), (8, 0.0), (1, 0.05), (1, 0.10)):
            failed = decided = capped = 0
            used: list[int] = []
            for _ in range(args.sessions):
                session_failed, session_decided, cycles = _adaptive_session(
                    rng, configs, change, cv, args.stored, args.start, args.cap
                )
                failed += session_failed
                decided += session_decided
                used += cycles
                capped += sum(c >= args.cap for c in cycles)
            label = "none" if change == 0 else f"+{100 * change:.0f} %"
            total = args.sessions * configs
            print(
                f"| {100 * cv:g} % | {configs} | {label} | {100 * failed / args.sessions:.1f} % |"
                f" {100 * decided / total:.0f} % | {np.mean(used):.1f} | {100 * capped / total:.0f} % |"
            )
    return 0


def add_adaptive_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "adaptive", help="the regression gate with adaptive cycles from the default 3",
        description="Decisions, false positives and cycles used when inconclusive configurations get more cycles.",
    )  # fmt: skip
    parser.add_argument("--sessions", type=int, default=1000, help="simulated sessions per row (default 1000)")
    parser.add_argument("--stored", type=_size, default=10, help="cycles in the stored baseline (default 10)")
    parser.add_argument("--start", type=_size, default=3, help="planned cycles of the current run (default 3)")
    parser.add_argument("--cap", type=_size, default=10, help="max_cycles (default 10)")
    parser.add_argument("--cvs", type=float, nargs="+", default=[0.01, 0.08], help="cycle-to-cycle CVs")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.set_defaults(run=run_adaptive)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_coverage_command(subparsers)
    add_gate_command(subparsers)
    add_adaptive_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
