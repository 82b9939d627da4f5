"""``recommend DIR... --where "itl_s.p50 <= 0.1 and ttft_s.p95 <= 1"``: the best configuration under constraints.

Every study under the paths is loaded and merged (as ``export`` does), and the query is answered
by :func:`pytest_llem.report.recommend.recommend`: the best configuration, those the study
cannot tell from it, and why each other lost. With a grid intensity (or region), a PUE, or prices,
the best and its runners-up also get energy, carbon and cost per million tokens
(:mod:`pytest_llem.report.cost`), each figure naming its inputs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines, existing_path

_OBJECTIVE_WORDS = ("minimize", "minimise", "maximize", "maximise")


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "recommend",
        help="the best configuration under constraints, its equals within uncertainty, and why the others lost",
        description="Load and merge every study under the paths, then answer a query such as "
        "'minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1 and ttft_s.p95 <= 1', judged on the median across "
        "cycles with its confidence interval. Metrics: those a limit may name (itl_s.p50 is itl_s.median).",
    )
    parser.add_argument("paths", type=Path, nargs="+", metavar="DIR", help="study or results directories")
    parser.add_argument(
        "--where", default="", metavar="QUERY",
        help="conditions joined by 'and' (METRIC <=|<|>=|> NUMBER), optionally after 'minimize|maximize METRIC where'",
    )  # fmt: skip
    objective = parser.add_mutually_exclusive_group()
    objective.add_argument("--minimize", metavar="METRIC", help="the metric to minimise (default mj_per_tok_adjusted)")
    objective.add_argument("--maximize", metavar="METRIC", help="the metric to maximise, e.g. avg_tokens_per_second")
    parser.add_argument("--by", action="append", default=[], metavar="FIELD", help="one answer per value of FIELD (repeatable), e.g. gpu_name, model_name")
    parser.add_argument("--exclude-flagged", action="store_true", help="leave out cells with validity flags")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default 0.95)")
    carbon = parser.add_mutually_exclusive_group()
    carbon.add_argument("--grid-intensity", type=float, metavar="G", help="grid carbon intensity, gCO2e per kWh")
    carbon.add_argument("--region", metavar="CODE", help="a country's yearly grid intensity (ISO alpha-3 code or name; OWID/Ember)")
    parser.add_argument("--pue", type=float, help="the facility's power usage effectiveness (default 1.0: GPU energy only)")
    parser.add_argument("--electricity-price", type=float, metavar="PRICE", help="electricity price per kWh")
    parser.add_argument("--gpu-hour-price", type=float, metavar="PRICE", help="price of one GPU-hour")
    parser.add_argument("--currency", default="USD", help="the prices' currency (default USD)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


def query_text(args: argparse.Namespace) -> str:
    """The query the options make: ``--where`` as given, or ``--minimize``/``--maximize`` and ``where`` it."""
    where = str(args.where or "").strip()
    named = (f"minimize {args.minimize}" if args.minimize else f"maximize {args.maximize}" if args.maximize else None)
    if where.split(" ", 1)[0].lower() in _OBJECTIVE_WORDS:
        if named:
            raise UsageProblem("--where already names an objective; drop --minimize/--maximize, or the objective from --where")
        return where
    from pytest_llem.report.recommend import DEFAULT_OBJECTIVE

    objective = named or DEFAULT_OBJECTIVE
    return f"{objective} where {where}" if where else objective


def cost_inputs(args: argparse.Namespace) -> Any:
    """The cost inputs the options give, or None when none was given."""
    from pytest_llem.report.cost import CostInputs, GridIntensity, grid_intensity

    given = (args.grid_intensity, args.region, args.pue, args.electricity_price, args.gpu_hour_price)
    if all(v is None for v in given):
        return None
    grid = None
    if args.grid_intensity is not None:
        grid = GridIntensity(args.grid_intensity, "given with --grid-intensity")
    elif args.region is not None:
        grid = grid_intensity(args.region)
    return CostInputs(
        grid=grid, pue=1.0 if args.pue is None else args.pue, pue_stated=args.pue is not None,
        electricity_price_per_kwh=args.electricity_price, gpu_hour_price=args.gpu_hour_price, currency=args.currency,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pytest_llem.report.cost import candidate_figures
    from pytest_llem.report.recommend import parse_query, recommend, recommend_groups, render, study_query
    from pytest_llem.results.loader import load_results

    if not 0.0 < args.confidence < 1.0:
        raise UsageProblem(f"--confidence must lie strictly between 0 and 1, got {args.confidence}")
    paths = [existing_path(p, "results path") for p in args.paths]
    query = parse_query(query_text(args))
    inputs = cost_inputs(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_results(*paths, all_studies=True)
    for w in caught:
        sys.stderr.write(f"warning: {w.message}\n")
    if not (args.where or args.minimize or args.maximize) and (stored := study_query(result)) is not None:
        query = parse_query(stored[0])  # the study file's own report.recommend
        args.by = args.by or stored[1]
    options: dict[str, Any] = {"exclude_flagged": args.exclude_flagged, "confidence": args.confidence}
    answers = recommend_groups(result, query, args.by, **options) if args.by else [recommend(result, query, **options)]

    def costs(answer: Any) -> dict[str, list[Any]]:
        if inputs is None:
            return {}
        chosen = ([answer.best] if answer.best else []) + list(answer.runners_up)
        return {c.label: candidate_figures(c, inputs) for c in chosen}

    if args.json:
        emit_json(
            {
                "studies": [str(s.study_dir) for s in result.studies],
                "duplicates": len(result.duplicates),
                "answers": [
                    {**a.to_json(), "cost": {k: [f.to_json() for f in v] for k, v in costs(a).items()}} for a in answers
                ],
            }
        )
        return 0
    lines = [f"{len(result.experiments)} record(s) from {len(result.studies)} study(ies)"]
    for answer in answers:
        lines += ["", *render(answer)]
        for label, figures in costs(answer).items():
            if figures:
                lines.append(f"cost and carbon of {label}:")
                lines += [f"  {f.describe()}" for f in figures]
    emit_lines(lines)
    return 0
