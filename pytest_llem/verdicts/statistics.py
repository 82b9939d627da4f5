"""Repetition statistics: per-configuration summaries of the headline metrics across cycles.

Each experiment configuration is run for several cycles; this module groups the per-cycle
records (``result.json`` figures, with the resolved experiment config under ``"config"``) and
summarises each metric with mean, median, sample standard deviation, coefficient of variation
and a confidence interval of the mean. Pure computation plus two writers; no pytest, no torch.

Each group also says what it is (``GroupSummary.fields``): its config id(s), model, engine and
its value of every field swept across the records (:func:`swept_fields`: the flattened config
paths whose values differ between configurations, such as ``transformers.batch_size``). They are
columns of ``summary.csv`` after the grouping key's, and join the ``key`` of each group in
``summary.json``, so the tables can be grouped again without the hash.

Which interval, and why. A study has few cycles (2 to 10 is usual), and a bootstrap of a handful
of values cannot have honest coverage: resampling 3 values only ever sees those 3, so its
interval is about as wide as their spread, not as wide as the uncertainty of their mean. An
audit found the BCa bootstrap labelled "95 %" covering the true mean 73 % of the time at n = 3
and 91 % at n = 10 on normal data (the percentile bootstrap at n = 2, the range: 47 %).
``benchmarks/verdict_simulation.py coverage --with-bca`` (figures in BENCHMARKS.md, "Interval
coverage") found the same: BCa alone covers 75 %, 86 %, 90 % at n = 3, 5, 10 on normal data and
72 %, 80 %, 88 % on a right-skewed lognormal (sigma 0.5), and is still below 95 % at n = 50 on
both (93-94 %); it reaches 95 % within Monte Carlo error from about 75 values. The Student t
interval is exact on normal data at every n, and on the lognormal covers more than BCa at every
n tried below 100. So the rule is:

- ``"student-t"``: ``2 <= n < BCA_MIN_N`` (100), values not all equal:
  mean +- t(1 - alpha/2, n - 1) * s / sqrt(n) (``scipy.stats.t``). It assumes roughly normal
  cycle-to-cycle variation. On strongly right-skewed data (the lognormal: skewness 1.75) it
  covers about 91-92 % at n = 3-10, short of 95 % but well above any bootstrap there, and its
  misses fall almost all on one side (true mean above the interval). It is wide at small n on
  purpose: at n = 3 the half-width is 2.48 sample standard deviations, at n = 2 nine.
- ``"bca"``: ``n >= BCA_MIN_N``: bias-corrected and accelerated bootstrap of the mean
  (``scipy.stats.bootstrap``, seeded). At 100 values it covers about as well as t (96 % normal,
  94 % lognormal) but follows the skew: its misses split evenly between the two sides (58 : 68
  in 2,000 lognormal samples, where t at n = 75 gave 26 : 82), so each bound alone is roughly a
  one-sided 97.5 % bound (2.9 % and 3.4 % misses) where t's upper bound is not (4.1 %). Where scipy cannot compute it (it warns that the data are degenerate,
  or returns NaN bounds) the Student t interval is given instead, and labelled so.
- ``"degenerate"``: all values equal (n >= 2); the interval is the single value, width zero.
- ``None``: fewer than two values; no interval (bounds are None).

``n`` is always the number of values the summary used: a record whose figure is null (or NaN)
is not a value, so ``n`` can be smaller than the group's ``n_records``.

The idle baseline's share. The adjusted figures (``mj_per_tok_adjusted``, ``energy_adjusted_j``)
subtract an idle baseline, and the cycles of a configuration are measured against one baseline
(or a few): its error is systematic, shared by the cycles, and does not shrink as n grows, so the
interval above, which sees only their scatter, would claim a precision the figure does not have.
Each record carries the baseline's 1-sigma uncertainty of each adjusted figure
(``mj_per_tok_adjusted_uncertainty``, ``energy_adjusted_uncertainty_j``); their mean over the
values summarised, u, widens the half-width hw (each side, for BCa's asymmetric interval) to
sqrt(hw^2 + (z(1 - alpha/2) u)^2), scatter and baseline error being independent. A degenerate
interval becomes mean +- z u. ``ci_method`` still names how the scatter part was computed, and
``baseline_uncertainty`` records u (null for other metrics, and for records older than the field)
so a reader can see the interval includes it.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from pytest_llem.results.atomic import write_text_atomic
from pytest_llem.results.loader import cell_config
from pytest_llem.results.redaction import scrub_text
from pytest_llem.results.writer import write_json_atomic

#: Metrics summarised by default, as dotted paths into a record.
METRICS: tuple[str, ...] = (
    "mj_per_tok_total",
    "mj_per_tok_adjusted",
    "avg_tokens_per_second",
    "total_energy_j",
    "energy_adjusted_j",
    "total_inference_time_sec",
    "ttft_s.median",
    "itl_s.median",
    "request_latency_s.median",
    "request_latency_s.p95",
)

#: Metrics whose interval includes the idle baseline's uncertainty: the record field holding each
#: cell's 1-sigma uncertainty of that metric, in its unit.
BASELINE_UNCERTAINTY_FIELDS: dict[str, str] = {
    "mj_per_tok_adjusted": "mj_per_tok_adjusted_uncertainty",
    "energy_adjusted_j": "energy_adjusted_uncertainty_j",
}

SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"

#: From this many values up the interval is the BCa bootstrap; below it, Student's t. BCa holds
#: 95 % from about 75 values (``benchmarks/verdict_simulation.py coverage --with-bca``); 100 leaves
#: a margin, and studies with that many cycles are rare, so in practice the interval is t.
BCA_MIN_N = 100

CI_RULE = (
    f"student-t for 2 <= n < {BCA_MIN_N}, bca from n >= {BCA_MIN_N} (student-t where scipy cannot compute BCa),"
    " degenerate when all values are equal, null for n < 2; n counts the values used, not the records;"
    " for baseline-adjusted metrics the half-width is widened to sqrt(hw^2 + (z u)^2), u = baseline_uncertainty"
    " (the idle baseline's mean 1-sigma uncertainty, systematic across cycles)"
)

CI_METHOD_NOTES: dict[str, str] = {
    "student-t": f"Student t interval of the mean, mean +- t(1 - alpha/2, n - 1) * s / sqrt(n) (scipy.stats.t);"
    f" used for 2 <= n < {BCA_MIN_N} and where BCa cannot be computed. Assumes roughly normal cycle-to-cycle"
    " variation; wide at small n (half-width 2.48 s at n = 3)",
    "bca": "bias-corrected and accelerated bootstrap of the mean (scipy.stats.bootstrap, method='BCa', seeded);"
    f" used for n >= {BCA_MIN_N}",
    "degenerate": "all values equal: the interval is the value itself, width zero (for a baseline-adjusted metric,"
    " +- z u of its baseline_uncertainty)",
    "null": "fewer than two values: no interval",
}

CSV_STAT_COLUMNS: tuple[str, ...] = (
    "metric", "n", "mean", "median", "std", "cv", "ci_low", "ci_high", "ci_method", "baseline_uncertainty",
)  # fmt: skip

#: Joins the config ids of a group that holds several in its ``config_id`` column (ids never contain it).
CONFIG_ID_SEPARATOR = ";"

#: The columns every group carries, whatever was swept: its config id(s), model and engine.
LABEL_FIELDS: tuple[str, ...] = ("config_id", "model", "engine")

_MISSING = object()

# scipy >= 1.15 takes the generator as ``rng`` (SPEC 7) and may one day deprecate
# ``random_state``; with a Generator both draw identically.
_RNG_KWARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


@dataclass(frozen=True)
class MetricSummary:
    """One metric over the cycles of one configuration.

    ``n`` is the number of values summarised (records with a null figure are not counted), so a
    reader can tell an interval from 3 cycles from one from 30. ``ci_method`` names how
    ``ci_low``/``ci_high`` were computed ("student-t", "bca", "degenerate", or None: no interval);
    ``n_resamples`` and ``seed`` are the bootstrap's settings and only bear on "bca".
    ``baseline_uncertainty`` is the idle baseline's 1-sigma uncertainty u the interval includes
    (adjusted metrics only; None elsewhere, and where no record carried one).
    """

    metric: str
    n: int
    mean: float | None
    median: float | None
    std: float | None
    cv: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None
    values: tuple[float, ...]
    confidence: float = 0.95
    n_resamples: int = 9999
    seed: int = 0
    baseline_uncertainty: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "n": self.n,
            "mean": self.mean,
            "median": self.median,
            "std": self.std,
            "cv": self.cv,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "ci_method": self.ci_method,
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "baseline_uncertainty": self.baseline_uncertainty,
            "values": list(self.values),
        }


@dataclass
class GroupSummary:
    """All metrics of one group of records (by default: one measurement configuration).

    ``key`` holds the values the group was formed by (``by``). ``fields`` says what the group is,
    so that a table of groups can be grouped again: ``config_id`` (its config ids joined by
    :data:`CONFIG_ID_SEPARATOR`), ``model``, ``engine`` and every swept field (see
    :func:`swept_fields`) by its dotted config path, e.g. ``transformers.batch_size``. A field on
    which the group's records disagree (a group coarser than one configuration) holds the list of
    their values, in cycle order; one none of them has is None. In ``to_json()`` the fields join
    the ``key`` object (the grouping values first, and ``group_by`` names those).

    ``n_records`` counts the group's records; each metric's own ``n`` counts the values it used,
    which is smaller where some records have no figure for it (no energy meter, no latency).
    """

    key: dict[str, Any]
    config_ids: list[str]
    n_records: int
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": {**self.key, **{name: v for name, v in self.fields.items() if name not in self.key}},
            "group_by": list(self.key),
            "config_ids": list(self.config_ids),
            "n_records": self.n_records,
            "metrics": {name: summary.to_json() for name, summary in self.metrics.items()},
        }


def _student_t(mean: float, std: float, n: int, confidence: float) -> tuple[float, float]:
    """mean +- t(1 - alpha/2, n - 1) * s / sqrt(n): the interval that is exact for normal data at any n >= 2."""
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def _with_baseline(
    mean: float, bounds: tuple[float, float], baseline_uncertainty: float | None, confidence: float
) -> tuple[float, float]:
    """Each side's half-width hw widened to sqrt(hw^2 + (z(1 - alpha/2) u)^2) by the baseline's uncertainty u.

    The baseline error is shared by the cycles, so it enters at full size whatever n is; it is
    independent of their scatter, so the two add in quadrature. z is the normal quantile: u is a
    1-sigma figure of its own, not estimated from these n values.
    """
    if not baseline_uncertainty:
        return bounds
    extra = (float(stats.norm.ppf(0.5 + confidence / 2.0)) * baseline_uncertainty) ** 2
    return mean - math.sqrt((mean - bounds[0]) ** 2 + extra), mean + math.sqrt((bounds[1] - mean) ** 2 + extra)


def _bca(data: np.ndarray[Any, Any], confidence: float, n_resamples: int, seed: int) -> tuple[float, float] | None:
    """The seeded BCa bootstrap of the mean, or None where scipy cannot compute it.

    scipy signals that case with a DegenerateDataWarning and/or NaN bounds (e.g. every resample
    mean on one side of the sample mean); that warning is swallowed, since the caller falls back
    and says so in ``ci_method``. Any other warning is passed on.
    """
    kwargs: dict[str, Any] = {_RNG_KWARG: np.random.default_rng(seed)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            result = stats.bootstrap(
                (data,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="BCa", **kwargs
            )
    degenerate = False
    for w in caught:
        if issubclass(w.category, stats.DegenerateDataWarning):
            degenerate = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if degenerate or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return low, high


def summarise(
    values: Sequence[float | None],
    metric: str,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
    baseline_uncertainty: float | None = None,
) -> MetricSummary:
    """Mean, median, sample std, CV and a confidence interval of the mean of ``values``.

    None (and NaN) values are left out; ``n`` counts the values present, and the interval is
    computed from those. The method follows the module's rule (Student t below ``BCA_MIN_N``
    values, BCa bootstrap from there) and is named in ``ci_method``. ``n_resamples`` and ``seed``
    only matter to the bootstrap, which is seeded: the same input and seed give the same interval.
    ``baseline_uncertainty`` (u, in the metric's unit) widens the interval of two values or more
    to include the idle baseline's systematic error (see the module's docstring).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples!r}")
    if baseline_uncertainty is not None and not (math.isfinite(baseline_uncertainty) and baseline_uncertainty >= 0):
        raise ValueError(f"baseline_uncertainty must be finite and at least 0, got {baseline_uncertainty!r}")
    present = tuple(float(v) for v in values if v is not None and not math.isnan(v))
    n = len(present)
    common: dict[str, Any] = {
        "metric": metric, "n": n, "values": present,
        "confidence": confidence, "n_resamples": n_resamples, "seed": seed,
        "baseline_uncertainty": baseline_uncertainty,
    }  # fmt: skip
    if n == 0:
        return MetricSummary(
            mean=None, median=None, std=None, cv=None, ci_low=None, ci_high=None, ci_method=None, **common
        )
    data = np.asarray(present, dtype=float)
    mean = float(np.mean(data))
    median = float(np.median(data))
    if n == 1:
        return MetricSummary(
            mean=mean, median=median, std=None, cv=None, ci_low=None, ci_high=None, ci_method=None, **common
        )
    std = float(np.std(data, ddof=1))
    cv = std / mean if mean != 0 else None
    if all(v == present[0] for v in present):
        low, high = _with_baseline(mean, (mean, mean), baseline_uncertainty, confidence)
        return MetricSummary(
            mean=mean, median=median, std=std, cv=cv, ci_low=low, ci_high=high, ci_method="degenerate", **common
        )

    bounds = _bca(data, confidence, n_resamples, seed) if n >= BCA_MIN_N else None
    method = "bca"
    if bounds is None:
        bounds, method = _student_t(mean, std, n, confidence), "student-t"
    bounds = _with_baseline(mean, bounds, baseline_uncertainty, confidence)
    return MetricSummary(
        mean=mean, median=median, std=std, cv=cv, ci_low=bounds[0], ci_high=bounds[1], ci_method=method, **common
    )


def _walk(data: Any, path: str) -> Any:
    node = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def lookup(record: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path``: in the record first, then in ``record["config"]``.

    Raises KeyError naming the path (and some available keys) when neither has it.
    """
    value = _walk(record, path)
    if value is _MISSING:
        config = record.get("config")
        if isinstance(config, Mapping):
            value = _walk(config, path)
    if value is _MISSING:
        top = sorted(str(k) for k in record)[:12]
        config = record.get("config")
        cfg = sorted(str(k) for k in config)[:12] if isinstance(config, Mapping) else []
        raise KeyError(
            f"no field {path!r} in the record or its config; record keys include {top}"
            + (f", config keys include {cfg}" if cfg else "")
        )
    return value


def _metric_value(record: Mapping[str, Any], path: str) -> float | None:
    """A metric is an optional figure: absent or null gives None rather than an error."""
    value = _walk(record, path)
    if value is _MISSING or value is None:
        return None
    return float(value)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)
    return value


def group_records(
    records: Sequence[Mapping[str, Any]], by: Sequence[str] = ("measurement_config_hash",)
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Records grouped by the values at the dotted paths ``by``, groups in first-seen order."""
    if isinstance(by, str):
        by = (by,)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for record in records:
        key = tuple(_hashable(lookup(record, path)) for path in by)
        groups.setdefault(key, []).append(dict(record))
    return groups


def _cycle_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def cycle(record: dict[str, Any]) -> float:
        value = record.get("cycle")
        return float(value) if isinstance(value, (int, float)) else math.inf

    return sorted(records, key=cycle)  # stable: records without a cycle keep their order, last


def _same(value: Any) -> str:
    """One text per logical value: 1 and True, or 1 and 1.0, are told apart."""
    return json.dumps([type(value).__name__, value], sort_keys=True, default=str)


def _distinct(values: Sequence[Any]) -> list[Any]:
    """``values`` without repeats, in first-seen order."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(_same(value), value)
    return list(seen.values())


def swept_fields(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The configuration fields on which ``records`` differ, as dotted paths, in config order.

    Each record's resolved ``config`` is flattened (:func:`pytest_llem.results.loader.cell_config`:
    ``transformers.batch_size``, ``decoding.top_p``; the sections of engines a cell does not use
    left out), and a path is swept when the records that have it hold two values or more there:
    for a study's records, the fields its sweep varies (``precision``, ``engine``, ...). A field
    only some cells have (another engine's section) counts as swept only if those cells differ.
    """
    values: dict[str, list[Any]] = {}
    for record in records:
        for path, value in cell_config(record).items():
            values.setdefault(path, []).append(value)
    return [path for path, seen in values.items() if len(_distinct(seen)) > 1]


def _one_or_all(values: Sequence[Any]) -> Any:
    """The value the records agree on; the list of their values where they do not; None where none has one."""
    distinct = _distinct(values)
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else distinct


def group_fields(records: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> dict[str, Any]:
    """What a group of records is: ``config_id`` (joined), ``model``, ``engine``, then each ``swept`` path."""
    configs = [cell_config(record) for record in records]
    config_ids = sorted({str(r["config_id"]) for r in records if r.get("config_id") is not None})
    fallback = {"model": "model_name", "engine": "engine"}  # a record without a config still names both
    fields: dict[str, Any] = {"config_id": CONFIG_ID_SEPARATOR.join(config_ids) or None}
    for path in (*LABEL_FIELDS[1:], *(p for p in swept if p not in LABEL_FIELDS)):
        values = [c[path] for c in configs if path in c]
        if not values and path in fallback:
            values = [r[fallback[path]] for r in records if r.get(fallback[path]) is not None]
        fields[path] = _one_or_all(values)
    return fields


def summarise_groups(
    records: Sequence[Mapping[str, Any]],
    by: Sequence[str] = ("measurement_config_hash",),
    metrics: Sequence[str] = METRICS,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> list[GroupSummary]:
    """One GroupSummary per group (first-seen order), each metric's values in cycle order.

    Each group's ``fields`` name it (config id, model, engine) and give its value of every field
    swept across ``records`` (:func:`swept_fields`), so pass all of a study's records.
    """
    if isinstance(by, str):
        by = (by,)
    swept = swept_fields(records)
    summaries: list[GroupSummary] = []
    for members in group_records(records, by).values():
        ordered = _cycle_order(members)
        key = {path: lookup(ordered[0], path) for path in by}
        config_ids = sorted({str(r["config_id"]) for r in ordered if r.get("config_id") is not None})
        summary = GroupSummary(
            key=key, config_ids=config_ids, n_records=len(ordered), fields=group_fields(ordered, swept)
        )
        for metric in metrics:
            values = [_metric_value(r, metric) for r in ordered]
            u = _baseline_uncertainty(ordered, metric)
            summary.metrics[metric] = summarise(values, metric, confidence, n_resamples, seed, baseline_uncertainty=u)
        summaries.append(summary)
    return summaries


def _baseline_uncertainty(records: list[dict[str, Any]], metric: str) -> float | None:
    """The mean 1-sigma baseline uncertainty of ``metric`` over the records that have a value of it.

    None for a metric that subtracts no baseline, and where no such record carries one (records
    written before the field). A figure that is not finite or is negative is not an uncertainty.
    """
    field_path = BASELINE_UNCERTAINTY_FIELDS.get(metric)
    if field_path is None:
        return None
    found = [
        u
        for r in records
        if _metric_value(r, metric) is not None
        and (u := _metric_value(r, field_path)) is not None
        and math.isfinite(u)
        and u >= 0
    ]
    return sum(found) / len(found) if found else None


def _settings(groups: list[GroupSummary], attribute: str) -> Any:
    seen = sorted({getattr(m, attribute) for g in groups for m in g.metrics.values()})
    if not seen:
        return None
    return seen[0] if len(seen) == 1 else seen


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_summary(study_dir: Path, groups: list[GroupSummary]) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``summary.csv`` into ``study_dir`` atomically; return both paths."""
    study_dir = Path(study_dir)
    json_path = study_dir / SUMMARY_JSON
    csv_path = study_dir / SUMMARY_CSV
    payload = {
        "confidence": _settings(groups, "confidence"),
        "n_resamples": _settings(groups, "n_resamples"),
        "seed": _settings(groups, "seed"),
        "statistic": "mean",
        "std": "sample standard deviation (ddof=1); cv = std / mean",
        "ci_methods": CI_METHOD_NOTES,
        "ci_rule": CI_RULE,
        "groups": [group.to_json() for group in groups],
    }

    # The grouping key's columns first, then what each group is (config_id, model, engine, the
    # swept fields) where the key does not already hold it, then the statistics.
    key_columns: list[str] = []
    for group in groups:
        for name in group.key:
            if name not in key_columns:
                key_columns.append(name)
    field_columns: list[str] = []
    for group in groups:
        for name in group.fields:
            if name not in key_columns and name not in field_columns:
                field_columns.append(name)
    header = [f"group.{name}" if name in CSV_STAT_COLUMNS else name for name in (*key_columns, *field_columns)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*header, *CSV_STAT_COLUMNS])
    for group in groups:
        key_cells = [_cell(group.key.get(name)) for name in key_columns]
        key_cells += [_cell(group.fields.get(name)) for name in field_columns]
        for summary in group.metrics.values():
            stat_cells = [
                summary.metric, summary.n, summary.mean, summary.median, summary.std, summary.cv,
                summary.ci_low, summary.ci_high, summary.ci_method, summary.baseline_uncertainty,
            ]  # fmt: skip
            writer.writerow([*key_cells, *(_cell(v) for v in stat_cells)])

    write_json_atomic(json_path, payload)
    write_text_atomic(csv_path, scrub_text(buffer.getvalue()))  # JSON files are scrubbed by their writer
    return json_path, csv_path
