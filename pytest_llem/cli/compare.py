"""``compare A B``: two studies side by side per configuration, judged by the regression gate's own test.

"Did my change make it worse?" is usually asked of two runs already on disk, not of a stored
baseline. Configurations are matched by ``config_id``; for each headline figure the table shows
the median and the 95 % interval of the mean on each side (the statistics of ``show`` and
``summary.json``) and the relative change of the medians. The verdicts are the gate's
(:func:`pytest_llem.verdicts.compare.judge`, A as the baseline, B as the current run) with
Holm's correction over every configuration and rule, as ``--llem-compare-fail`` applies it, so a
``compare`` says REGRESSED exactly where a gated run would have. pytest-benchmark's
``compare`` is the model.

Every completed cell counts, also one that broke a limit: the gate leaves those out because
their test already failed, but here nothing failed, and a breach may be the very change asked
about.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llem.cli.common import Commands, UsageProblem, emit_json, emit_lines, existing_path, fmt, table

if TYPE_CHECKING:
    from pytest_llem.results.loader import StudyResult
    from pytest_llem.verdicts.compare import CompareRule, Verdict
    from pytest_llem.verdicts.statistics import GroupSummary, MetricSummary

#: The figures shown side by side.
HEADLINE = ("mj_per_tok_adjusted", "mj_per_tok_total", "avg_tokens_per_second")
DEFAULT_RULE = "mj_per_tok_adjusted.median:5%"


def add_parser(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare two studies per configuration; exit 1 when one regressed",
        description="Compare two studies per configuration (matched by config_id): median and 95% interval "
        "of mj_per_tok_adjusted, mj_per_tok_total and avg_tokens_per_second on each side, the change of the "
        "medians, and the regression gate's verdict with A as the baseline and B as the current run. "
        "A and B are study directories, manifest.json files, or results directories (their newest study). "
        "Exit status 1 when any configuration regressed.",
    )
    parser.add_argument("a", type=Path, metavar="A", help="the baseline study")
    parser.add_argument("b", type=Path, metavar="B", help="the study judged against it")
    parser.add_argument(
        "--rule",
        action="append",
        metavar="[METRIC.]STAT:N[%]",
        help=f"a regression rule as --llem-compare-fail takes it (repeatable; default {DEFAULT_RULE})".replace("%", "%%"),
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.set_defaults(run=run)


@dataclass
class Comparison:
    """Two studies matched configuration by configuration, with the gate's verdicts."""

    a: StudyResult
    b: StudyResult
    rules: list[tuple[str, CompareRule]]
    config_ids: list[str]  # in both, A's order
    only_in_a: list[str]
    only_in_b: list[str]
    stats_a: dict[str, GroupSummary]
    stats_b: dict[str, GroupSummary]
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)  # (rule text, verdict)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[str]:
        return list(dict.fromkeys(v.config_id for _, v in self.verdicts if v.status == "regressed"))


def _by_config(records: list[dict[str, Any]]) -> dict[str, GroupSummary]:
    from pytest_llem.verdicts.statistics import summarise_groups

    keyed = [r for r in records if r.get("config_id") is not None]
    return {str(g.key["config_id"]): g for g in summarise_groups(keyed, by=("config_id",), metrics=HEADLINE)}


def _hashes(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(r["config_id"]): r.get("measurement_config_hash") for r in records if r.get("config_id") is not None}


def decide_regressions(verdicts: list[Verdict]) -> None:
    """Holm's correction over every tested verdict; the rejected ones regressed.

    The same step as the gate's at the end of a session (``verdicts.gate``), over one comparison.
    """
    from pytest_llem.verdicts.decision import holm, holm_adjusted

    tested = [(v, v.evidence.p_value) for v in verdicts if v.evidence is not None]
    p_values = [p for _, p in tested]
    for (verdict, _), rejected, adjusted in zip(tested, holm(p_values), holm_adjusted(p_values)):
        verdict.p_adjusted = adjusted
        if rejected:
            verdict.status = "regressed"


def _judge_all(comparison: Comparison) -> None:
    from pytest_llem.verdicts.compare import Verdict, judge, values_by_config

    hash_a, hash_b = _hashes(comparison.a.experiments), _hashes(comparison.b.experiments)
    for text, rule in comparison.rules:
        before = values_by_config(comparison.a.experiments, rule.metric)
        after = values_by_config(comparison.b.experiments, rule.metric)
        for config_id in comparison.config_ids:
            if not before.get(config_id) and not after.get(config_id):
                verdict = Verdict(config_id, rule, "unjudgeable", reason=f"neither side has a value of {rule.metric}")
            else:
                verdict = judge(
                    config_id, rule, before.get(config_id, []), after.get(config_id, []),
                    stored_hash=hash_a.get(config_id), current_hash=hash_b.get(config_id),
                )  # fmt: skip
            comparison.verdicts.append((text, verdict))
    decide_regressions([v for _, v in comparison.verdicts])


def _notes(a: StudyResult, b: StudyResult) -> list[str]:
    """What makes the two sides less comparable than they look: other hardware, other software."""
    from pytest_llem.verdicts import stored

    notes: list[str] = []
    if not a.experiments or not b.experiments:
        empty = " and ".join(side for side, r in (("A", a), ("B", b)) if not r.experiments)
        return [f"{empty} holds no completed cell: nothing to compare"]
    if a.study_name != b.study_name:
        notes.append(f"different studies: {a.study_name} and {b.study_name}")
    hw_a, hw_b = stored.fingerprint(a.experiments), stored.fingerprint(b.experiments)
    if hw_a != hw_b:
        notes.append(f"other hardware: {hw_a} -> {hw_b}; figures of different machines are rarely comparable")
    software = stored.software_differences({"software": a.experiments[0].get("software_versions")}, b.experiments)
    if software:
        notes.append(f"software differs: {'; '.join(software)}")
    return notes


def build(a: StudyResult, b: StudyResult, rules: list[tuple[str, CompareRule]]) -> Comparison:
    """Match the two studies' configurations, summarise each side and judge every rule."""
    stats_a, stats_b = _by_config(a.experiments), _by_config(b.experiments)
    comparison = Comparison(
        a=a, b=b, rules=rules,
        config_ids=[c for c in stats_a if c in stats_b],
        only_in_a=[c for c in stats_a if c not in stats_b],
        only_in_b=[c for c in stats_b if c not in stats_a],
        stats_a=stats_a, stats_b=stats_b, notes=_notes(a, b),
    )  # fmt: skip
    _judge_all(comparison)
    return comparison


def _change(a: MetricSummary | None, b: MetricSummary | None) -> float | None:
    if a is None or b is None or a.median is None or b.median is None or a.median == 0:
        return None
    return (b.median - a.median) / a.median


def _interval(m: MetricSummary | None) -> str:
    if m is None or m.ci_low is None or m.ci_high is None:
        return "-"
    return f"[{m.ci_low:.4g}, {m.ci_high:.4g}]"  # brackets: a bound may be negative


def _side_json(study: StudyResult) -> dict[str, Any]:
    return {"study_name": study.study_name, "study_dir": str(study.study_dir), "start_time": study.manifest.get("start_time")}


def _verdict_json(text: str, v: Verdict) -> dict[str, Any]:
    ev = v.evidence
    return {
        "config_id": v.config_id,
        "rule": text,
        "metric": v.rule.metric,
        "status": v.status,
        "baseline": v.baseline,
        "current": v.current,
        "change": v.change,
        "p_value": None if ev is None else ev.p_value,
        "p_adjusted": v.p_adjusted,
        "upper_bound": None if ev is None else ev.upper_bound,
        "tolerance": None if ev is None else ev.tolerance,
        "cycles_needed": None if ev is None else ev.cycles_needed,
        "reason": v.reason,
        "line": v.line(),
    }


def to_json(c: Comparison) -> dict[str, Any]:
    configurations = []
    for config_id in c.config_ids:
        metrics: dict[str, Any] = {}
        for metric in HEADLINE:
            ma, mb = c.stats_a[config_id].metrics.get(metric), c.stats_b[config_id].metrics.get(metric)
            metrics[metric] = {
                "a": None if ma is None else ma.to_json(),
                "b": None if mb is None else mb.to_json(),
                "change": _change(ma, mb),
            }
        verdicts = [_verdict_json(text, v) for text, v in c.verdicts if v.config_id == config_id]
        configurations.append({"config_id": config_id, "metrics": metrics, "verdicts": verdicts})
    return {
        "a": _side_json(c.a),
        "b": _side_json(c.b),
        "rules": [text for text, _ in c.rules],
        "configurations": configurations,
        "only_in_a": c.only_in_a,
        "only_in_b": c.only_in_b,
        "regressed": c.regressed,
        "notes": c.notes,
    }


def render(c: Comparison) -> list[str]:
    """The side-by-side table, the configurations of one side only, the verdicts and the outcome."""
    lines = [
        f"A (baseline): {c.a.study_name}, started {c.a.manifest.get('start_time') or '?'}: {c.a.study_dir}",
        f"B (current):  {c.b.study_name}, started {c.b.manifest.get('start_time') or '?'}: {c.b.study_dir}",
        *(f"note: {note}" for note in c.notes),
    ]
    rows: list[tuple[str, ...]] = []
    for config_id in c.config_ids:
        for index, metric in enumerate(HEADLINE):
            ma, mb = c.stats_a[config_id].metrics.get(metric), c.stats_b[config_id].metrics.get(metric)
            change = _change(ma, mb)
            rows.append(
                (
                    config_id if index == 0 else "",
                    metric,
                    fmt(None if ma is None else ma.median, ".4g"),
                    _interval(ma),
                    fmt(None if mb is None else mb.median, ".4g"),
                    _interval(mb),
                    "-" if change is None else f"{100 * change:+.1f}%",
                )
            )
    if rows:
        header = ("configuration", "metric", "A median", "A 95% CI", "B median", "B 95% CI", "change")
        lines += ["", *table(header, rows, align="ll")]
        lines.append("(95% CI: of the mean across cycles, as in summary.json; change: of the medians)")
    if c.only_in_a:
        lines.append(f"only in A: {', '.join(c.only_in_a)}")
    if c.only_in_b:
        lines.append(f"only in B: {', '.join(c.only_in_b)}")
    if c.verdicts:
        tested = sum(v.evidence is not None for _, v in c.verdicts)
        lines += ["", f"verdicts ({'; '.join(t for t, _ in c.rules)}; Holm over {tested} test{'s' if tested != 1 else ''}):"]
        lines += [f"  {v.line()}" for _, v in c.verdicts]
    regressed = c.regressed
    lines += ["", f"{len(regressed)} regression(s): {'; '.join(regressed)}" if regressed else "no regression"]
    return lines


def parse_rules(texts: list[str] | None) -> list[tuple[str, CompareRule]]:
    """Each ``--rule`` parsed as the gate parses ``--llem-compare-fail``; one it cannot read is a usage error."""
    from pytest_llem.errors import LimitSyntaxError
    from pytest_llem.verdicts.compare import parse_rule

    rules: list[tuple[str, CompareRule]] = []
    for text in texts or [DEFAULT_RULE]:
        try:
            rules.append((text, parse_rule(text)))
        except LimitSyntaxError as exc:
            raise UsageProblem(f"--rule {text!r}: {exc}") from None
    return rules


def run(args: argparse.Namespace) -> int:
    from pytest_llem.results.loader import load_results

    rules = parse_rules(args.rule)
    a = load_results(existing_path(args.a, "study directory"))
    b = load_results(existing_path(args.b, "study directory"))
    comparison = build(a, b, rules)
    if args.json:
        emit_json(to_json(comparison))
    else:
        emit_lines(render(comparison))
    return 1 if comparison.regressed else 0
