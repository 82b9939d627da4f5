"""The report's figures, drawn with matplotlib on its Agg and SVG canvases (no pyplot, no display).

Four questions, one figure each:

* :func:`pareto_figure`: which configurations are worth having? Energy per token against a
  throughput or latency metric, each configuration at its mean with its confidence interval as
  error bars on both axes, the non-dominated ones joined.
* :func:`energy_figure`: how do the configurations rank on energy per token, and how sure is
  that? One row per configuration, best first: every cycle's value, the mean and its interval.
* :func:`timeseries_figure`: what did the GPU do during one cell? Power, temperature and SM
  clock from its ``timeseries.parquet``, the warm-up and the measured window shaded.
* :func:`drift_figure`: do later cycles differ from earlier ones (heat, run order)? Each
  configuration's cycles as a deviation from its own mean, so that all share one scale.

Readable with 50 configurations: rows rather than crowded ticks, the figure's height grows with
the number of rows, long labels are cut (:func:`short_label`), and only the frontier is
labelled on the Pareto plot. An engine keeps its colour in every figure (:func:`engine_colour`).

pyplot is never imported: it would pick a backend for the whole process (a user's notebook, a
pytest session). Each :class:`~matplotlib.figure.Figure` is given its own Agg canvas.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from pytest_llem.config.metrics import LIMIT_METRICS
from pytest_llem.report.pareto import Frontier
from pytest_llem.verdicts.compare import HIGHER_IS_BETTER
from pytest_llem.verdicts.statistics import GroupSummary, MetricSummary

#: Each engine's colour in every figure (colour-blind-safe Okabe-Ito hues); others take the rest in turn.
ENGINE_COLOURS: dict[str, str] = {"transformers": "#0072B2", "vllm": "#D55E00", "tensorrt": "#009E73"}
_SPARE_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

#: Labels longer than this are cut with an ellipsis; the table of the report holds the full text.
LABEL_CHARS = 36

#: Row height (inches) of the per-configuration figures, and their height without rows.
ROW_INCHES = 0.28
BASE_INCHES = 1.6
WIDTH_INCHES = 8.0

#: Timeseries columns drawn, with their axis labels.
TIMESERIES_PANELS: tuple[tuple[str, str], ...] = (
    ("power_w", "power (W)"),
    ("temperature_c", "temperature (°C)"),
    ("sm_clock_mhz", "SM clock (MHz)"),
)

#: Line markers of the drift figure's labelled configurations, one each.
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")

#: Legends sit right of the plot: inside it they hid the points they explain.
_OUTSIDE: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}

_RC: Any = {  # Any: matplotlib types rc_context's keys as a Literal of every rcParam
    "svg.fonttype": "path",  # text as outlines: the SVG looks the same without the font installed
    "svg.hashsalt": "pytest-llem",  # stable element ids: the same data gives the same file
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@dataclass(frozen=True)
class Rendered:
    """One figure in both formats: SVG text for the page and the ``plots/`` folder, PNG for slides."""

    name: str
    title: str
    svg: str
    png: bytes


def metric_label(metric: str) -> str:
    """``mj_per_tok_adjusted (mJ/token)``: the axis label of a metric, its unit in brackets."""
    unit = LIMIT_METRICS.get(metric)
    return f"{metric} ({unit})" if unit else metric


def short_label(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis, as literal text.

    A ``$`` is escaped: matplotlib would read a user's ``$x$`` in a config id as mathtext.
    """
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return cut.replace("$", r"\$")


def engine_colour(engine: str, engines: Sequence[str] = ()) -> str:
    """The engine's colour; an unknown engine gets a spare colour by its place in ``engines``."""
    if engine in ENGINE_COLOURS:
        return ENGINE_COLOURS[engine]
    unknown = [e for e in dict.fromkeys(engines) if e not in ENGINE_COLOURS]
    index = unknown.index(engine) if engine in unknown else len(unknown)
    return _SPARE_COLOURS[index % len(_SPARE_COLOURS)]


def group_labels(groups: Sequence[GroupSummary]) -> list[str]:
    """What each configuration is called in the figures and tables: its config id(s).

    Where two read alike (one configuration measured on two kinds of GPU, or two engine
    versions), the GPU, then the engine version, is added to tell them apart.
    """
    labels = [", ".join(g.config_ids) or str(g.fields.get("config_id") or "?") for g in groups]
    for extra in ("gpu_name", "engine_version"):
        repeated = {label for label in labels if labels.count(label) > 1}
        if not repeated:
            break
        labels = [f"{label} @ {g.key.get(extra)}" if label in repeated and g.key.get(extra) else label
                  for label, g in zip(labels, groups)]  # fmt: skip
    return labels


def group_engine(group: GroupSummary) -> str:
    engine = group.fields.get("engine")
    return engine if isinstance(engine, str) else "mixed" if isinstance(engine, list) else "unknown"


def render(name: str, title: str, figure: Figure) -> Rendered:
    """The figure as SVG and PNG (Agg), with no date in the SVG, so equal data give equal files."""
    FigureCanvasAgg(figure)
    with matplotlib.rc_context(_RC):
        svg = io.BytesIO()
        figure.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=110, bbox_inches="tight")
    return Rendered(name, title, svg.getvalue().decode("utf-8"), png.getvalue())


def _figure(height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(WIDTH_INCHES, height), layout="constrained")


def _legend_engines(figure_axes: Any, engines: Sequence[str], **extra: Any) -> None:
    handles = [Patch(color=engine_colour(e, engines), label=e) for e in dict.fromkeys(engines)]
    if handles:
        figure_axes.legend(handles=handles, title="engine", fontsize=8, title_fontsize=8, **extra)


def _interval(summary: MetricSummary | None) -> tuple[float, float] | None:
    """(below, above) the mean, for an error bar; None where there is no interval."""
    if summary is None or summary.mean is None or summary.ci_low is None or summary.ci_high is None:
        return None
    return max(summary.mean - summary.ci_low, 0.0), max(summary.ci_high - summary.mean, 0.0)


#: How a candidate's standing on its frontier is drawn: (marker face alpha, label it?).
_STANDING: dict[str, tuple[float, bool]] = {"frontier": (1.0, True), "within_uncertainty": (0.55, False), "dominated": (0.18, False)}


def pareto_figure(frontiers: Sequence[Frontier]) -> Figure | None:
    """Energy per token (``y``) against a throughput or latency metric (``x``), one frontier per group.

    Each candidate sits at its medians with its intervals as error bars; the frontier's points
    are solid, joined and labelled, those within uncertainty of it half-tone, the surely
    dominated faint (:mod:`pytest_llem.report.pareto` decides which is which). None when no
    candidate has both figures.
    """
    placed = [(f, p) for f in frontiers for p in f.points if p.status != "missing"]
    if not placed:
        return None
    x_metric, y_metric = frontiers[0].x, frontiers[0].y
    engines = [str(p.candidate.fields.get("engine")) for _, p in placed]
    figure = _figure(4.8)
    axes = figure.add_subplot()
    for (_, point), engine in zip(placed, engines):
        ex, ey = point.candidate.estimate(x_metric), point.candidate.estimate(y_metric)
        assert ex.point is not None and ey.point is not None and ex.low is not None and ey.low is not None
        assert ex.high is not None and ey.high is not None
        alpha, _ = _STANDING[point.status]
        colour = engine_colour(engine, engines)
        axes.errorbar(
            [ex.point], [ey.point], xerr=[[ex.point - ex.low], [ex.high - ex.point]],
            yerr=[[ey.point - ey.low], [ey.high - ey.point]], fmt="o", color=colour, ecolor=colour,
            elinewidth=1.0, capsize=3, markersize=5, alpha=max(alpha, 0.3), markerfacecolor=colour if alpha == 1.0 else "white",
        )  # fmt: skip
    for frontier in frontiers:
        best = sorted(((c.estimate(x_metric).point, c.estimate(y_metric).point, c.label) for c in frontier.frontier),
                      key=lambda p: p[0] or 0.0)  # fmt: skip
        xs, ys = [float(x or 0.0) for x, _, _ in best], [float(y or 0.0) for _, y, _ in best]
        if len(best) > 1:
            axes.plot(xs, ys, "--", color="#555555", linewidth=1.0, zorder=0)
        for rank, (x, y, label) in enumerate(zip(xs, ys, (b[2] for b in best))):
            offset = (6, 6 if rank % 2 == 0 else -12)  # alternate above and below: neighbours do not collide
            axes.annotate(short_label(label, 24), (x, y), xytext=offset, textcoords="offset points", fontsize=7)
    better = "higher is better" if x_metric in HIGHER_IS_BETTER else "lower is better"
    axes.set_xlabel(f"{metric_label(x_metric)}, {better}")
    axes.set_ylabel(f"{metric_label(y_metric)}, lower is better")
    groups = f", {len(frontiers)} groups (model x GPU)" if len(frontiers) > 1 else ""
    axes.set_title(f"Pareto frontier: median and 95 % interval per configuration{groups}", fontsize=9)
    axes.grid(True, alpha=0.3)
    handles: list[Artist] = [Patch(color=engine_colour(e, engines), label=e) for e in dict.fromkeys(engines)]
    handles += [Line2D([], [], linestyle="--", color="#555555", label="frontier (solid points)"),
                Line2D([], [], marker="o", linestyle="", color="#777777", markerfacecolor="white",
                       label="off the frontier (faint:\nsurely dominated)")]  # fmt: skip
    axes.legend(handles=handles, fontsize=7, **_OUTSIDE)
    return figure


def energy_figure(groups: Sequence[GroupSummary], labels: Sequence[str], metric: str) -> Figure | None:
    """One row per configuration, best (lowest mean) at the top: cycles as dots, mean and interval."""
    named = {id(g): label for g, label in zip(groups, labels)}
    rows = [g for g in groups if (s := g.metrics.get(metric)) is not None and s.mean is not None]
    if not rows:
        return None
    rows.sort(key=lambda g: g.metrics[metric].mean or 0.0)
    engines = [group_engine(g) for g in rows]
    figure = _figure(BASE_INCHES + ROW_INCHES * len(rows))
    axes = figure.add_subplot()
    for y, (group, engine) in enumerate(zip(rows, engines)):
        summary = group.metrics[metric]
        assert summary.mean is not None  # rows hold only configurations with a mean
        colour = engine_colour(engine, engines)
        spread = [0.0] if len(summary.values) < 2 else [(k / (len(summary.values) - 1) - 0.5) * 0.3 for k in range(len(summary.values))]
        axes.scatter(summary.values, [y + d for d in spread], s=10, color=colour, alpha=0.55, linewidths=0)
        err = _interval(summary)
        axes.errorbar(
            [summary.mean], [y], xerr=[[err[0]], [err[1]]] if err else None, fmt="D", color=colour,
            markersize=4, capsize=3, elinewidth=1.2,
        )  # fmt: skip
    axes.set_yticks(range(len(rows)), [short_label(named[id(g)]) for g in rows], fontsize=8)
    axes.set_ylim(len(rows) - 0.5, -0.5)  # the best row on top
    axes.set_xlabel(metric_label(metric))
    axes.set_title(f"{metric} per configuration: cycles (dots), mean (diamond), 95 % interval", fontsize=9)
    axes.grid(True, axis="x", alpha=0.3)
    _legend_engines(axes, engines, **_OUTSIDE)
    return figure


def drift_figure(groups: Sequence[GroupSummary], labels: Sequence[str], metric: str) -> Figure | None:
    """Each configuration's cycles as % deviation from its mean, by cycle index; None without repeats."""
    series = [
        (g, label, s.values) for g, label in zip(groups, labels)
        if (s := g.metrics.get(metric)) is not None and len(s.values) >= 2 and s.mean
    ]  # fmt: skip
    if not series:
        return None
    engines = [group_engine(g) for g, _, _ in series]
    figure = _figure(3.8)
    axes = figure.add_subplot()
    labelled = len(series) <= len(_MARKERS)  # more lines than that: a legend of names would hide the plot
    deviations: dict[int, list[float]] = {}
    for k, ((_, label, values), engine) in enumerate(zip(series, engines)):
        mean = sum(values) / len(values)
        relative = [100.0 * (v - mean) / mean for v in values]
        for cycle, d in enumerate(relative):
            deviations.setdefault(cycle, []).append(d)
        # The colour stays the engine's; a labelled line is told from its engine's others by its marker.
        axes.plot(range(len(values)), relative, f"{_MARKERS[k % len(_MARKERS)] if labelled else 'o'}-",
                  color=engine_colour(engine, engines), alpha=0.85 if labelled else 0.35, markersize=5 if labelled else 3,
                  linewidth=1.0, label=short_label(label, 24) if labelled else None)  # fmt: skip
    if not labelled:
        cycles = sorted(deviations)
        medians = [sorted(deviations[c])[len(deviations[c]) // 2] for c in cycles]
        axes.plot(cycles, medians, "-", color="black", linewidth=2.0, label="median over configurations")
    axes.axhline(0.0, color="#888888", linewidth=0.8)
    axes.set_xlabel("cycle index (run order within a configuration)")
    axes.set_ylabel(f"{metric}: deviation from\nthe configuration's mean (%)")
    axes.set_xticks(sorted(deviations))
    axes.set_title(f"cycle-to-cycle drift of {metric} ({len(series)} configurations with 2 or more cycles)", fontsize=9)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


@dataclass(frozen=True)
class CellSpans:
    """Where a cell's warm-up and measured window lie on its timeseries' clock ``t`` (seconds)."""

    warmup: tuple[float, float] | None
    window: tuple[float, float] | None


def cell_spans(record: Mapping[str, Any]) -> CellSpans:
    """The warm-up and the window on the timeseries' clock, from the record.

    ``window_t_start_s`` is the window's start on that clock and ``total_inference_time_sec`` its
    length. The record's ``timeline`` (the parent's clock, which starts earlier) gives the
    warm-up's length, which ends where the window begins; the sampler starts just before it.
    """
    start = record.get("window_t_start_s")
    length = record.get("total_inference_time_sec")
    if not isinstance(start, (int, float)):
        return CellSpans(None, None)
    window = (float(start), float(start) + float(length)) if isinstance(length, (int, float)) else None
    warmup_s = next(
        (float(p["seconds"]) for p in record.get("timeline") or []
         if isinstance(p, Mapping) and p.get("phase") == "warmup" and isinstance(p.get("seconds"), (int, float))),
        None,
    )  # fmt: skip
    warmup = (max(0.0, float(start) - warmup_s), float(start)) if warmup_s else None
    return CellSpans(warmup, window)


def read_timeseries(path: Path) -> dict[str, list[Any]] | None:
    """The columns of a ``timeseries.parquet``; None where the file is missing or unreadable."""
    import pyarrow.parquet as pq

    try:
        return dict(pq.read_table(path).to_pydict())
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None


def timeseries_figure(record: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]) -> Figure | None:
    """Power, temperature and SM clock of one cell over time, one line per GPU, phases shaded."""
    t = list(columns.get("t") or [])
    if not t:
        return None
    gpus = list(columns.get("gpu_idx") or [0] * len(t))
    panels = [(name, label) for name, label in TIMESERIES_PANELS if any(v is not None for v in columns.get(name) or [])]
    if not panels:
        return None
    spans = cell_spans(record)
    figure = _figure(1.2 + 1.5 * len(panels))
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (name, label) in zip(axes_list, panels):
        values = list(columns[name])
        for gpu in sorted(set(gpus)):
            pairs = [(x, v) for x, g, v in zip(t, gpus, values) if g == gpu and v is not None]
            axes.plot([p[0] for p in pairs], [p[1] for p in pairs], linewidth=0.9, label=f"GPU {gpu}")
        if spans.warmup:
            axes.axvspan(*spans.warmup, color="#E69F00", alpha=0.15, linewidth=0)
        if spans.window:
            axes.axvspan(*spans.window, color="#009E73", alpha=0.18, linewidth=0)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    axes_list[-1].set_xlabel("time since the sampler started (s)")
    shading = [Patch(color="#E69F00", alpha=0.3, label="warm-up"), Patch(color="#009E73", alpha=0.35, label="measured window")]
    lines = list(axes_list[0].get_legend_handles_labels()[0]) if len(set(gpus)) > 1 else []
    axes_list[0].legend(handles=[*shading, *lines], fontsize=7, loc="lower right")
    title = short_label(f"{record.get('experiment_id')}: GPU telemetry ({record.get('engine')})", 90)
    axes_list[0].set_title(title, fontsize=9)
    return figure
