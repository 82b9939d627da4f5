"""What the session prints after a run: per study a table of its cells, statistics and where the results are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_llem.report.recommend import study_recommendation_lines
from pytest_llem.report.warnings import group_warnings, render_warnings, unreliable_cells

if TYPE_CHECKING:
    from pytest_llem.results.loader import StudyResult
    from pytest_llem.verdicts.finalize import FinalizedStudy

COLUMNS = ("cell", "status", "tokens", "window s", "tok/s", "energy J", "mJ/tok")


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec)


def summary_sections(
    studies: list[FinalizedStudy], gate_lines: list[str], adaptive_lines: list[str] | None = None,
    compared_with: str = "stored baselines",
) -> list[tuple[str, list[str]]]:
    """``(title, lines)`` of each section the session adds to pytest's terminal summary.

    Per study its table, where its time went and its recommendation (``report.recommend``), then what adaptive cycles did, then the regression gate's lines.
    """
    sections: list[tuple[str, list[str]]] = []
    for study in studies:
        sections.append((f"llem: {study.result.study_name}", render_study_table(study.result, study.groups)))
        spent = render_time_breakdown(study.result)
        if spent:
            sections.append((f"llem: {study.result.study_name}: where the time went", spent))
        answer = study_recommendation_lines(study.result)
        if answer:
            sections.append((f"llem: {study.result.study_name}: recommendation (report.recommend)", answer))
    if adaptive_lines:
        sections.append(("llem: adaptive cycles", list(adaptive_lines)))
    if gate_lines:
        sections.append((f"llem: comparison with {compared_with}", list(gate_lines)))
    return sections


def render_study_table(result: StudyResult, groups: list[Any]) -> list[str]:
    """The per-cell table, the statistics across cycles, and where the results are."""
    records = {r["experiment_id"]: r for r in result.experiments}
    doubtful = unreliable_cells(result.experiments)
    rows: list[tuple[str, ...]] = []
    for entry in result.records(status=None):
        record = records.get(entry["experiment_id"], {})
        rows.append(
            (
                entry["experiment_id"],
                entry["status"]
                + ("/limit" if entry.get("verdict") == "failed" else "")
                + ("!" if entry["experiment_id"] in doubtful else ""),
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
    meters = {r.get("energy_meter") for r in result.experiments}
    reasons = {r.get("energy_unavailable_reason") for r in result.experiments} - {None}
    if meters == {"none"} and reasons:
        out.append(f"energy: not measured ({'; '.join(sorted(str(r) for r in reasons))})")
    warned = group_warnings(result.experiments)
    if warned:
        out += ["", f"warnings ({len(warned)} distinct; ! = the cell's figures are less reliable, its status ends in !):"]
        out += ["  " + line for line in render_warnings(warned)]
    stats = render_statistics_table(groups)
    if stats:
        out += ["", "across cycles (summary.json, summary.csv):", *stats]
    out.append(f"results: {result.study_dir}")
    return out


STAT_COLUMNS = ("configuration", "cycles", "mJ/tok median", "95% CI of mean (method, n)", "CV", "adj. mJ/tok", "tok/s median")


def render_statistics_table(groups: list[Any]) -> list[str]:
    """One row per configuration: median, confidence interval and CV across its cycles.

    "cycles" counts the configuration's records; the interval names its method and the number
    of values it used (a cycle without an energy figure is a record but not a value).
    """
    if not groups:
        return []
    rows: list[tuple[str, ...]] = []
    for group in groups:
        total = group.metrics.get("mj_per_tok_total")
        adjusted = group.metrics.get("mj_per_tok_adjusted")
        tps = group.metrics.get("avg_tokens_per_second")
        ci = "-"
        if total is not None and total.ci_low is not None and total.ci_high is not None:
            ci = f"{total.ci_low:.2f}-{total.ci_high:.2f} ({total.ci_method}, n={total.n})"
        rows.append(
            (
                ", ".join(group.config_ids),
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


#: A phase below this many seconds over the whole study is folded into "other phases".
NEGLIGIBLE_S = 0.005


def render_time_breakdown(result: StudyResult) -> list[str]:
    """Each phase's seconds summed over the study's cells and its share of the study's wall time.

    From the manifest: every cell's ``timeline`` (failed cells' too: their time was spent) and the
    summary's wall time and efficiency. What no cell's timeline holds (the session's own work
    between cells) is "outside cells". Empty for a study whose manifest has no timelines.
    """
    totals: dict[str, float] = {}
    cells = 0
    for entry in result.records(status=None):
        timeline = entry.get("timeline")
        if not isinstance(timeline, list) or not timeline:
            continue
        cells += 1
        for phase in timeline:
            if isinstance(phase, dict) and isinstance(phase.get("seconds"), (int, float)):
                name = str(phase.get("phase"))
                totals[name] = totals.get(name, 0.0) + float(phase["seconds"])
    if not cells:
        return []
    summary = result.summary
    wall = summary.get("total_wall_time_s")
    wall = float(wall) if isinstance(wall, (int, float)) and wall > 0 else None
    shown = {name: s for name, s in totals.items() if s >= NEGLIGIBLE_S}
    other = sum(totals.values()) - sum(shown.values())
    if other >= NEGLIGIBLE_S:
        shown["other phases"] = other
    if wall is not None and wall - sum(totals.values()) >= NEGLIGIBLE_S:
        shown["outside cells"] = wall - sum(totals.values())
    width = max(len(name) for name in shown) if shown else 5

    def share(seconds: float) -> str:
        return f"{100 * seconds / wall:5.1f}%" if wall is not None else ""

    out = [f"{'phase'.ljust(width)}  {'seconds':>9}  {'of wall' if wall is not None else ''}".rstrip()]
    out += [f"{name.ljust(width)}  {seconds:9.2f}  {share(seconds)}".rstrip() for name, seconds in shown.items()]
    windows = summary.get("measured_window_s")
    efficiency = summary.get("study_efficiency")
    if wall is None:
        out.append(f"({cells} cells; the study's wall time is not recorded: the run did not finish)")
    elif isinstance(windows, (int, float)) and isinstance(efficiency, (int, float)):
        out.append(
            f"study efficiency {100 * efficiency:.1f}%: measured windows {windows:.2f} s of {wall:.2f} s wall time"
            f" ({cells} cells)"
        )
    return out
