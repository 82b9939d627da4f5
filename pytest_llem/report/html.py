"""One study (or a merged set) as one self-contained HTML page: :func:`render_page`.

The page must open from a file on a machine without a network, years later, and say what the
study found: so it carries everything inline (styles, and the figures as base64 SVG images), no
script, and a Content-Security-Policy that lets the browser fetch nothing at all. The only links
are relative ones to the cells' ``result.json`` next to it, for the reader who wants the record.

Every text that comes from a study (names, config ids, warnings, paths, versions) goes through
:func:`html.escape`, so a config id such as ``<script>`` is shown, not run. Pure rendering: what
to show is gathered by :mod:`pytest_llem.report.study_report`.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_llem.report.pareto import Candidate
from pytest_llem.report.recommend import Recommendation
from pytest_llem.report.warnings import group_warnings
from pytest_llem.results.loader import StudyResult, derived_fields
from pytest_llem.results.validity import record_validity
from pytest_llem.verdicts.statistics import CI_RULE, GroupSummary, MetricSummary, lookup

#: Nothing may be fetched: no script, no remote style, images only from data: URLs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

#: The summary table's figure columns after the energy metric: (metric, heading, format).
FIGURE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("mj_per_tok_total", "mJ/token (raw)", ".2f"),
    ("avg_tokens_per_second", "tokens/s", ",.0f"),
    ("itl_s.median", "ITL median (s)", ".4f"),
    ("ttft_s.median", "TTFT median (s)", ".3f"),
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta { color: #555; font-size: .9rem; }
table { border-collapse: collapse; font-size: .8rem; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.scroll { overflow-x: auto; } .settings { font-size: .75rem; color: #333; }
.flag { display: inline-block; background: #fdecea; color: #8a1c12; border-radius: 3px; padding: 0 .3rem;
        margin: 0 .15rem .15rem 0; font-size: .75rem; }
.ok { color: #1e6b2f; } .bad { color: #8a1c12; font-weight: 600; } .muted { color: #777; }
.recommend { background: #eef6ee; border-left: 4px solid #1e6b2f; padding: .5rem 1rem; }
figure { margin: 1rem 0; } figure img { width: 100%; max-width: 960px; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; } pre { background: #f7f7f7; padding: .5rem; overflow-x: auto; }
"""


@dataclass(frozen=True)
class Plot:
    """A rendered figure: its title, its SVG, and the files written for it (relative to the page)."""

    name: str
    title: str
    svg: str
    files: tuple[str, ...] = ()


@dataclass
class Page:
    """What the page shows; :mod:`pytest_llem.report.study_report` fills it.

    ``result`` is one study or several merged (:func:`pytest_llem.results.loader.load_results`);
    ``groups`` its configurations with their statistics, ``labels`` their names (same order).
    """

    title: str
    result: StudyResult
    groups: list[GroupSummary]
    labels: list[str]
    energy_metric: str
    page_dir: Path  # where the page is written: links are relative to it
    plots: list[Plot] = field(default_factory=list)
    gate_lines: Sequence[str] = ()
    recommendation: str = ""  # already-rendered HTML (its texts escaped by its renderer)
    notes: list[str] = field(default_factory=list)  # what the page could not show, and why


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: Any, spec: str) -> str:
    """A figure in the tables; an en dash where there is none."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return format(value, spec)


def _interval(summary: MetricSummary | None, spec: str) -> str:
    if summary is None or summary.mean is None:
        return "–"
    text = fmt(summary.mean, spec)
    if summary.ci_low is not None and summary.ci_high is not None:
        text += f"<br><span class='muted'>[{fmt(summary.ci_low, spec)}, {fmt(summary.ci_high, spec)}]</span>"
    return text


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] = ()) -> str:
    """A table from already-escaped cells; ``numeric`` right-aligns columns."""
    head = "".join(f"<th>{h}</th>" for h in header) if any(header) else ""
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i < len(numeric) and numeric[i] else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )  # fmt: skip
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<div class="scroll"><table>{thead}<tbody>{body}</tbody></table></div>'


def _flags(flags: Sequence[Mapping[str, Any]]) -> str:
    return "".join(f'<span class="flag" title="{esc(f.get("message"))}">{esc(f.get("code"))}</span>' for f in flags)


def _records(page: Page) -> list[tuple[dict[str, Any], Path]]:
    return list(zip(page.result.experiments, page.result.result_files))


def _members(page: Page, group: GroupSummary) -> list[dict[str, Any]]:
    """The records of one configuration: those whose values at the group's key are the group's."""
    return [r for r, _ in _records(page) if all(str(_at({**r, **derived_fields(r)}, k)) == str(v) for k, v in group.key.items())]


def _at(record: Mapping[str, Any], path: str) -> Any:
    try:
        return lookup(record, path)
    except KeyError:
        return None


def _link(target: Path, page_dir: Path, text: str) -> str:
    """A relative link from the page to ``target`` (a study moved with its page keeps its links)."""
    try:
        relative = os.path.relpath(target, page_dir)
    except ValueError:  # another drive on Windows: no relative path exists
        return esc(text)
    return f'<a href="{esc(quote(Path(relative).as_posix()))}">{esc(text)}</a>'


def _group_flags(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A configuration's validity flags, one per code, the code marked with how many cycles had it."""
    by_code: dict[str, dict[str, Any]] = {}
    for record in records:
        for flag in record_validity(record):
            entry = by_code.setdefault(str(flag.get("code")), {"code": flag.get("code"), "message": flag.get("message"), "n": 0})
            entry["n"] += 1
    return [{**f, "code": f"{f['code']} ×{f['n']}" if f["n"] > 1 else f["code"]} for f in by_code.values()]


def _limit_verdict(page: Page, records: Sequence[Mapping[str, Any]]) -> str:
    """The limits' verdict on a configuration's cells, from the manifest: failed if any cell failed."""
    ids = {r.get("experiment_id") for r in records}
    verdicts = [e.get("verdict") for e in page.result.records(status=None) if e.get("experiment_id") in ids and e.get("verdict")]
    if not verdicts:
        return "–"
    return '<span class="bad">failed</span>' if "failed" in verdicts else '<span class="ok">passed</span>'


def summary_section(page: Page) -> str:
    """One row per configuration, lowest energy per token first: its figures with their intervals."""
    if not page.groups:
        return "<h2>Configurations</h2><p>No cell completed: there is nothing to summarise.</p>"
    swept = [name for name in dict.fromkeys(n for g in page.groups for n in g.fields) if name not in ("config_id", "model", "engine")]
    rows = []
    ordered = sorted(zip(page.groups, page.labels),
                     key=lambda gl: (m.mean if (m := gl[0].metrics.get(page.energy_metric)) and m.mean is not None else math.inf))  # fmt: skip
    for group, label in ordered:
        members = _members(page, group)
        energy = group.metrics.get(page.energy_metric)
        method = f'<br><span class="muted">{esc(energy.ci_method)}, n={energy.n}</span>' if energy and energy.ci_method else ""
        rows.append([
            f"{esc(label)}<br><span class='muted'>{esc(group.fields.get('engine'))}, {esc(group.fields.get('model'))}</span>",
            "<span class='settings'>" + ", ".join(
                f"<span title='{esc(name)}'>{esc(name.rsplit('.', 1)[-1])}={esc(_plain(group.fields[name]))}</span>"
                for name in swept if group.fields.get(name) is not None) + "</span>",
            str(group.n_records), _interval(energy, ".2f") + method,
            *(_interval(group.metrics.get(metric), spec) for metric, _, spec in FIGURE_COLUMNS),
            _flags(_group_flags(members)) or '<span class="ok">none</span>', _limit_verdict(page, members),
        ])  # fmt: skip
    header = ["configuration<br><span class='muted'>engine, model</span>", "settings that differ", "cycles",
              f"{esc(page.energy_metric)} (mJ/token): mean [95 % interval]", *(h for _, h, _ in FIGURE_COLUMNS),
              "validity flags", "limits"]  # fmt: skip
    numeric = [False] * 2 + [True] * (2 + len(FIGURE_COLUMNS))
    return (
        "<h2>Configurations</h2>"
        f"<p>Mean over cycles with its 95 % confidence interval in brackets, best {esc(page.energy_metric)} first."
        " A validity flag says a figure should not be compared as it stands (hover it for why).</p>"
        + _table(header, rows, numeric)
    )


def _plain(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def cells_section(page: Page) -> str:
    """Every cell in run order, with a link to its record; failed and skipped cells with their reason."""
    records = {(r.get("experiment_id"), r.get("measurement_config_hash")): (r, p) for r, p in _records(page)}
    merged = len(page.result.studies) > 1
    rows = []
    for entry in page.result.records(status=None):
        record, path = records.get((entry.get("experiment_id"), entry.get("measurement_config_hash")), ({}, None))
        cell = _link(path, page.page_dir, str(entry.get("experiment_id"))) if path is not None else esc(entry.get("experiment_id"))
        why = entry.get("error") or entry.get("skip_reason") or ""
        status = esc(entry.get("status")) + (f'<br><span class="muted">{esc(str(why).splitlines()[0])}</span>' if why else "")
        rows.append([
            *([esc(record.get("study_name", ""))] if merged else []), cell, status, esc(entry.get("verdict") or "–"),
            fmt(record.get("total_tokens"), "d"), fmt(record.get("total_inference_time_sec"), ".2f"),
            fmt(record.get("avg_tokens_per_second"), ",.0f"), fmt(record.get("total_energy_j"), ".1f"),
            fmt(record.get("mj_per_tok_total"), ".2f"), fmt(record.get("mj_per_tok_adjusted"), ".2f"),
            _flags(record_validity(record)) if record else "",
        ])  # fmt: skip
    header = [*(["study"] if merged else []), "cell (record)", "status", "limits", "tokens", "window (s)", "tokens/s",
              "energy (J)", "mJ/token", "mJ/token adjusted", "validity"]  # fmt: skip
    numeric = [*([False] if merged else []), False, False, False, True, True, True, True, True, True]
    return "<h2>Cells</h2>" + _table(header, rows, numeric)


def warnings_section(page: Page) -> str:
    groups = group_warnings(r for r, _ in _records(page))
    cells = tuple(f"{e.get('experiment_id')}: " for e in page.result.records(status=None))
    study_warnings = [str(w) for w in page.result.summary.get("warnings") or [] if not str(w).startswith(cells)]
    if not groups and not study_warnings:
        return ""
    items = [f"<li>{esc(g.text)} <span class='muted'>({len(g.cells)} cell{'s' if len(g.cells) != 1 else ''}:"
             f" {esc(', '.join(g.cells[:8]))}{', …' if len(g.cells) > 8 else ''})</span></li>" for g in groups]  # fmt: skip
    items += [f"<li>{esc(w)}</li>" for w in study_warnings]
    return f"<h2>Warnings</h2><ul>{''.join(items)}</ul>"


def _distinct(values: Iterable[Any]) -> str:
    seen = [str(v) for v in dict.fromkeys(v for v in values if v not in (None, "", [], {}))]
    return ", ".join(seen) if seen else "–"


def environment_section(page: Page) -> str:
    """What the figures were measured on: GPUs, driver, engines and libraries, idle baseline, protocol."""
    records = [r for r, _ in _records(page)]
    states = [s for r in records for s in r.get("gpu_state_start") or [] if isinstance(s, Mapping)]
    versions: dict[str, list[Any]] = {}
    for record in records:
        for name, version in (record.get("software_versions") or {}).items():
            versions.setdefault(str(name), []).append(version)
    baseline = [float(w) for r in records if isinstance(w := r.get("baseline_power_w"), (int, float))]
    rows = [
        ("GPU", _distinct(s.get("name") for s in states)),
        ("driver", _distinct(s.get("driver_version") for s in states)),
        ("power limit (W)", _distinct(s.get("power_limit_w") for s in states)),
        ("device", _distinct(r.get("device") for r in records)),
        ("engines", _distinct(f"{r.get('engine')} {r.get('engine_version') or ''}".strip() for r in records)),
        *((f"{name} version", _distinct(v)) for name, v in versions.items() if _distinct(v) != "–"),
        ("energy meter", _distinct(r.get("energy_meter") for r in records)),
        ("idle baseline (W)", f"{min(baseline):.1f} – {max(baseline):.1f} over {len(baseline)} cells" if baseline else "not measured"),
        ("idle baseline method", _distinct(r.get("baseline_method") for r in records)),
        ("idle baseline source", _distinct(r.get("baseline_source") for r in records)),
    ]  # fmt: skip
    protocol = ", ".join(f"{k}={v}" for k, v in page.result.measurement_protocol.items() if v is not None)
    rows.append(("measurement protocol", protocol or "differs between the studies"))
    return "<h2>Environment</h2>" + _table(["", ""], [[esc(k), esc(v)] for k, v in rows])


def plots_section(page: Page) -> str:
    if not page.plots:
        return ""
    parts = ["<h2>Figures</h2>"]
    for plot in page.plots:
        data = base64.b64encode(plot.svg.encode("utf-8")).decode("ascii")
        files = " ".join(_link(page.page_dir / f, page.page_dir, Path(f).suffix.lstrip(".").upper()) for f in plot.files)
        parts.append(
            f'<figure id="{esc(plot.name)}"><img alt="{esc(plot.title)}" src="data:image/svg+xml;base64,{data}">'
            f"<figcaption>{esc(plot.title)}{' (' + files + ')' if files else ''}</figcaption></figure>"
        )
    return "".join(parts)


def _studies_line(page: Page) -> str:
    """Each study of the page: its directory (linked to its manifest), when it ran, what it gave."""
    parts = []
    for source in page.result.studies:
        link = _link(source.study_dir / "manifest.json", page.page_dir, str(source.study_dir))
        parts.append(f"<li><b>{esc(source.study_name)}</b>: {link} <span class='muted'>(started {esc(source.start_time)};"
                     f" {source.n_records} records)</span></li>")  # fmt: skip
    summary = page.result.summary
    counts = ", ".join(f"{summary[k]} {k}" for k in ("completed", "failed", "skipped") if isinstance(summary.get(k), int))
    duplicates = len(page.result.duplicates)
    left_out = f"; {duplicates} duplicate record(s) left out (the newer study's kept)" if duplicates else ""
    return f"<ul class='meta'>{''.join(parts)}</ul><p class='meta'>{esc(counts)}{esc(left_out)}</p>"


def render_page(page: Page) -> str:
    """The whole page as one HTML document."""
    from pytest_llem.version import __version__

    recommendation = f"<h2>Recommendation</h2><div class='recommend'>{page.recommendation}</div>" if page.recommendation else ""
    gate = ""
    if page.gate_lines:
        gate = "<h2>Regression gate</h2><pre>" + esc("\n".join(page.gate_lines)) + "</pre>"
    notes = "".join(f"<p class='muted'>{esc(n)}</p>" for n in page.notes)
    body = "".join([
        f"<h1>{esc(page.title)}</h1>", _studies_line(page), recommendation, summary_section(page), gate,
        plots_section(page), notes, cells_section(page), warnings_section(page), environment_section(page),
        f"<h2>How the intervals are made</h2><p class='muted'>{esc(CI_RULE)}.</p>",
        f"<p class='muted'>Written by pytest-llem {esc(__version__)}.</p>",
    ])  # fmt: skip
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page.title)}</title><style>{STYLE}</style></head>\n<body>{body}</body></html>\n"
    )


def recommendation_html(answer: Recommendation) -> str:
    """The answer to a ``--where`` query: the best configuration, those the study cannot tell from it, why the rest lost."""
    names = answer.query.metrics

    def figures(candidate: Candidate) -> str:
        return "; ".join(f"{esc(name)} {esc(candidate.estimates[name].describe())}" for name in names)

    def notes(label: str) -> str:
        return "".join(f"<br><span class='muted'>note: {esc(n)}</span>" for n in answer.notes.get(label, []))

    parts = [f"<p>Query: <code>{esc(answer.query.describe())}</code></p>"]
    if answer.best is None:
        parts.append("<p class='bad'>No configuration meets every condition.</p>")
    else:
        best = answer.best
        parts.append(f"<p><b>Best: {esc(best.label)}</b> ({best.n_records} cycle(s)): {figures(best)}{notes(best.label)}</p>")
    if answer.runners_up:
        items = "".join(f"<li>{esc(c.label)}: {figures(c)}{notes(c.label)}</li>" for c in answer.runners_up)
        parts.append(f"<p>Not distinguishable from the best at {100 * answer.confidence:g} % confidence:</p><ul>{items}</ul>")
    if answer.others:
        items = "".join(f"<li>{esc(o.candidate.label)}: {esc('; '.join(r.message for r in o.reasons))}</li>" for o in answer.others)
        parts.append(f"<details><summary>Why the other {len(answer.others)} lost</summary><ul>{items}</ul></details>")
    parts.append("<p class='muted'>Figures: median across cycles [95 % confidence interval].</p>")
    return "".join(parts)
