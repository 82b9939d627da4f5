"""The table printed after a run: one row per cell, and where the results are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_llem.execution import StudyRun

COLUMNS = ("cell", "status", "tokens", "time s", "tok/s", "energy J", "mJ/tok")


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec)


def render_study_table(run: StudyRun) -> list[str]:
    rows: list[tuple[str, ...]] = []
    for outcome in sorted(run.outcomes, key=lambda o: o.cell.position):
        record = outcome.record or {}
        rows.append(
            (
                outcome.cell.experiment_id(run.study),
                outcome.status,
                _fmt(record.get("total_tokens"), "d"),
                _fmt(record.get("total_inference_time_sec"), ".2f"),
                _fmt(record.get("avg_tokens_per_second"), ",.0f"),
                _fmt(record.get("total_energy_j"), ".1f"),
                _fmt(record.get("mj_per_tok_total"), ".2f"),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(COLUMNS)]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, cells[1].ljust(widths[1]), *(c.rjust(w) for c, w in zip(cells[2:], widths[2:]))])

    out = [line(COLUMNS), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    meters = {(o.record or {}).get("energy_meter") for o in run.outcomes if o.record}
    reasons = {(o.record or {}).get("energy_unavailable_reason") for o in run.outcomes if o.record} - {None}
    if meters == {"none"} and reasons:
        out.append(f"energy: not measured ({'; '.join(sorted(str(r) for r in reasons))})")
    stats = render_statistics_table(run)
    if stats:
        out += ["", "across cycles (summary.json, summary.csv):", *stats]
    out.append(f"results: {run.study_dir}")
    return out


STAT_COLUMNS = ("configuration", "n", "mJ/tok median", "95% CI of mean", "CV", "adj. mJ/tok", "tok/s median")


def render_statistics_table(run: StudyRun) -> list[str]:
    """One row per configuration: median, confidence interval and CV across its cycles."""
    if not run.groups:
        return []
    names = {c.config_hash: c.config_id for c in run.study.configurations}
    rows: list[tuple[str, ...]] = []
    for group in run.groups:
        total = group.metrics.get("mj_per_tok_total")
        adjusted = group.metrics.get("mj_per_tok_adjusted")
        tps = group.metrics.get("avg_tokens_per_second")
        ci = "-"
        if total is not None and total.ci_low is not None and total.ci_high is not None:
            ci = f"{total.ci_low:.2f}-{total.ci_high:.2f}"
        rows.append(
            (
                names.get(group.key.get("measurement_config_hash"), ", ".join(group.config_ids)),
                str(group.n_records),
                _fmt(total.median if total else None, ".2f"),
                ci,
                "-" if total is None or total.cv is None else f"{100 * total.cv:.1f}%",
                _fmt(adjusted.median if adjusted else None, ".2f"),
                _fmt(tps.median if tps else None, ",.0f"),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(STAT_COLUMNS)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    return [line(STAT_COLUMNS), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)]
