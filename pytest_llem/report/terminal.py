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
    out.append(f"results: {run.study_dir}")
    return out
