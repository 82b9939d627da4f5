"""Writing a study's HTML report: ``report.html`` and its figures in ``plots/`` (SVG and PNG).

Two callers: the session at its end (``--llem-report=html``: one page per study, in the study's
directory, with the regression gate's lines when a comparison ran) and ``python -m pytest_llem
report DIR...`` (one page for one study or for several merged). Both come here, so the page
cannot differ by how it was asked for.

matplotlib is an optional dependency (the ``plot`` extra): :func:`check_matplotlib` tells a
caller before any cell runs, and nothing here imports it until a figure is drawn.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llem.report.html import Page, Plot, recommendation_html, render_page
from pytest_llem.report.pareto import CANDIDATE_FIELDS, pareto_frontiers
from pytest_llem.report.recommend import recommend, study_query
from pytest_llem.results.atomic import write_bytes_atomic
from pytest_llem.results.loader import StudyResult, derived_fields, load_results
from pytest_llem.results.redaction import scrub_text
from pytest_llem.verdicts.statistics import GroupSummary, summarise_groups

if TYPE_CHECKING:
    from pytest_llem.report.plots import Rendered

REPORT_NAME = "report.html"
PLOTS_DIR = "plots"

#: The page and its figures are made to be passed around (and served): readable by all, unlike a private temporary file.
SHARED = 0o644

#: The extra that brings matplotlib, as a user installs it.
INSTALL_HINT = "pip install 'pytest-llem[plot]' (or pip install matplotlib)"

#: At most this many cells get a telemetry figure (the first cycle of each configuration, in order).
MAX_TIMESERIES = 6

#: The axes the Pareto figures put energy per token against, where the records have them.
PARETO_AXES = ("avg_tokens_per_second", "itl_s.median")


class ReportUnavailable(Exception):
    """The report cannot be drawn here (matplotlib is not installed); the message says what to install."""


def check_matplotlib() -> None:
    """Raise :class:`ReportUnavailable` when matplotlib cannot be imported (it is found, not imported)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ReportUnavailable(f"the HTML report draws its figures with matplotlib, which is not installed: {INSTALL_HINT}")


@dataclass(frozen=True)
class WrittenReport:
    """Where the page went, and the figure files beside it."""

    page: Path
    plots: tuple[Path, ...]


def energy_metric(groups: Sequence[GroupSummary]) -> str:
    """Baseline-adjusted mJ/token where any configuration has it; raw mJ/token otherwise (no idle baseline)."""
    for group in groups:
        summary = group.metrics.get("mj_per_tok_adjusted")
        if summary is not None and summary.n:
            return "mj_per_tok_adjusted"
    return "mj_per_tok_total"


def _figures(result: StudyResult, groups: Sequence[GroupSummary], labels: Sequence[str], metric: str) -> tuple[list[Rendered], list[str]]:
    """Every figure the data allow, rendered; and notes on those it does not."""
    from pytest_llem.report import plots

    rendered: list[Rendered] = []
    notes: list[str] = []
    for axis in PARETO_AXES:
        figure = plots.pareto_figure(pareto_frontiers(result, x=axis, y=metric))
        if figure is not None:
            name = "pareto-" + axis.replace(".", "-").replace("_", "-")
            rendered.append(plots.render(name, f"Pareto frontier: {metric} against {axis}", figure))
    figure = plots.energy_figure(groups, labels, metric)
    if figure is not None:
        rendered.append(plots.render("energy-by-configuration", f"{metric} by configuration", figure))
    elif groups:
        notes.append(f"No energy figures: no configuration has a value of {metric} (no energy meter measured its cells).")
    figure = plots.drift_figure(groups, labels, metric)
    if figure is not None:
        rendered.append(plots.render("drift", f"cycle-to-cycle drift of {metric}", figure))
    elif groups:
        notes.append(f"No drift figure: no configuration has a value of {metric} in two cycles or more.")
    shown = 0
    firsts: dict[str, tuple[dict[str, Any], Path]] = {}
    for record, path in zip(result.experiments, result.result_files):
        firsts.setdefault(str(record.get("measurement_config_hash")), (record, path))
    for record, path in firsts.values():
        sidecar = record.get("timeseries")
        columns = plots.read_timeseries(path.parent / sidecar) if isinstance(sidecar, str) else None
        figure = plots.timeseries_figure(record, columns) if columns else None
        if figure is None:
            continue
        if shown == MAX_TIMESERIES:
            notes.append(f"Telemetry figures are shown for the first {MAX_TIMESERIES} configurations only.")
            break
        shown += 1
        rendered.append(plots.render(f"timeseries-{shown}", f"GPU telemetry of {record.get('experiment_id')}", figure))
    if not shown and firsts:
        notes.append("No telemetry figure: no cell's timeseries.parquet was found (output.save_timeseries off, or not copied).")
    return rendered, notes


def configurations(result: StudyResult) -> list[GroupSummary]:
    """The study's configurations with their statistics across cycles, one per configuration x GPU x engine version.

    The grouping of :mod:`pytest_llem.report.pareto`'s candidates, so the table and the Pareto
    figures name the same things: a configuration measured on an H100 and an H200 is two rows.
    """
    records = [{**r, **derived_fields(r)} for r in result.experiments]
    return summarise_groups(records, CANDIDATE_FIELDS) if records else []


def write_page(
    result: StudyResult, groups: Sequence[GroupSummary], out: Path, *,
    title: str | None = None, gate_lines: Sequence[str] = (), where: str | None = None,
) -> WrittenReport:  # fmt: skip
    """Draw the figures, write them under ``plots/`` next to ``out``, then the page at ``out``.

    ``where`` is a recommendation query (:func:`pytest_llem.report.recommend.parse_query`); a bad
    one raises :class:`~pytest_llem.errors.LimitSyntaxError` before anything is drawn.
    """
    check_matplotlib()
    answer = recommend(result, where) if where else None
    out = Path(out).absolute()
    metric = energy_metric(groups)
    from pytest_llem.report.plots import group_labels

    labels = group_labels(groups)
    rendered, notes = _figures(result, groups, labels, metric)
    plots_dir = out.parent / PLOTS_DIR
    written: list[Path] = []
    plots: list[Plot] = []
    # Several pages may share a folder (report.html and a merged page): each names its figures after itself.
    prefix = "" if out.name == REPORT_NAME else f"{out.stem}-"
    for figure in rendered:
        svg, png = plots_dir / f"{prefix}{figure.name}.svg", plots_dir / f"{prefix}{figure.name}.png"
        write_bytes_atomic(svg, figure.svg.encode("utf-8"), mode=SHARED)
        write_bytes_atomic(png, figure.png, mode=SHARED)
        written += [svg, png]
        plots.append(Plot(figure.name, figure.title, figure.svg, (os.path.relpath(svg, out.parent), os.path.relpath(png, out.parent))))
    page = Page(
        title=title or f"pytest-llem report: {result.study_name}", result=result, groups=list(groups), labels=labels,
        energy_metric=metric, page_dir=out.parent, plots=plots, gate_lines=gate_lines,
        recommendation=recommendation_html(answer) if answer else "", notes=notes,
    )  # fmt: skip
    write_bytes_atomic(out, scrub_text(render_page(page)).encode("utf-8"), mode=SHARED)
    return WrittenReport(out, tuple(written))


def write_study_report(result: StudyResult, gate_lines: Sequence[str] = ()) -> WrittenReport:
    """The session's report of one study: ``report.html`` in its directory, with the gate's lines
    and the recommendation its study file asks for (``report.recommend``)."""
    stored = study_query(result)
    where = stored[0] if stored else None
    return write_page(result, configurations(result), result.study_dir / REPORT_NAME, gate_lines=gate_lines, where=where)


def write_report(paths: Sequence[Path], out: Path | None = None, where: str | None = None) -> WrittenReport:
    """One page for the studies at ``paths`` (merged by :func:`load_results` when several).

    Without ``out``: ``report.html`` in the study's directory for one study, in the current
    directory for several.
    """
    result = load_results(*paths)
    if where is None and (stored := study_query(result)) is not None:
        where = stored[0]  # the study file's report.recommend, unless the caller asks otherwise
    if out is None:
        out = result.study_dir / REPORT_NAME if len(result.studies) <= 1 else Path.cwd() / REPORT_NAME
    return write_page(result, configurations(result), out, where=where)
