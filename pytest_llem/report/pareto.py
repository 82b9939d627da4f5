"""Trade-offs: which configurations are the best compromise between two metrics, and how sure that is.

A *candidate* is one configuration on one kind of hardware and software: its records share the
measurement configuration hash, the GPU name and the engine version (:data:`CANDIDATE_FIELDS`),
so cycles of one configuration pool, and the same configuration on an H100 and an H200 are two
candidates. Each metric of a candidate is an :class:`Estimate`: the **median across its cycles**
(robust to one odd cycle) with the confidence interval of
:func:`pytest_llem.verdicts.statistics.summarise` (Student t below 100 cycles, BCa bootstrap
above, widened by the idle baseline's uncertainty for adjusted energy), stretched to contain
the median where it does not. A candidate with one cycle has no interval: its interval is its
value.

A Pareto frontier (:func:`pareto_frontiers`) is judged on the medians: a candidate is on the
frontier when no other is at least as good on both metrics and better on one. The others are not
dropped. A candidate is *within uncertainty of the frontier* when no frontier candidate beats
it beyond uncertainty, i.e. when the worst end of every dominating candidate's intervals fails
to dominate the best end of its own: its interval box touches what the frontier can be. Only
the rest are *dominated*.

Which end is better comes from one table, :func:`direction`: tokens/s and FLOP/s higher (the
regression gate's :data:`~pytest_llem.verdicts.compare.HIGHER_IS_BETTER`), everything else lower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_llem.config.metrics import LIMIT_METRICS
from pytest_llem.errors import LimitSyntaxError, LlemError
from pytest_llem.naming import suggest
from pytest_llem.results.loader import StudyResult, derived_fields
from pytest_llem.results.validity import record_validity
from pytest_llem.verdicts.compare import HIGHER_IS_BETTER
from pytest_llem.verdicts.statistics import group_records, summarise_groups

#: What makes records one candidate: the configuration, the GPUs it ran on and the engine's version.
CANDIDATE_FIELDS: tuple[str, ...] = ("measurement_config_hash", "gpu_name", "engine_version")

#: The trade-offs drawn when none is named: energy per token against latency, and against throughput.
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("mj_per_tok_adjusted", "itl_s.median"),
    ("mj_per_tok_adjusted", "avg_tokens_per_second"),
)

#: Default groups of a frontier: configurations compete within one model on one kind of GPU.
DEFAULT_GROUP_BY: tuple[str, ...] = ("model_name", "gpu_name")

#: Spellings accepted for a statistic of a latency summary (``itl_s.p50`` is ``itl_s.median``).
STAT_ALIASES: dict[str, str] = {"p50": "median", "avg": "mean"}

#: Metrics every candidate carries, besides those asked for: what cost and carbon figures need.
BASE_METRICS: tuple[str, ...] = ("mj_per_tok_adjusted", "mj_per_tok_total", "avg_tokens_per_second")

Sense = Literal["min", "max"]
Status = Literal["frontier", "within_uncertainty", "dominated", "missing"]


def known_metrics() -> list[str]:
    """The metrics a frontier or a query may name: those a limit may name (:data:`LIMIT_METRICS`)."""
    return sorted(LIMIT_METRICS)


def canonical_metric(name: str, what: str = "metric") -> str:
    """``name`` as the record spells it (``itl_s.p50`` -> ``itl_s.median``); an unknown name raises.

    :class:`~pytest_llem.errors.LimitSyntaxError` names the metric, the closest known ones
    (difflib) and every known metric.
    """
    head, _, stat = name.rpartition(".")
    metric = f"{head}.{STAT_ALIASES.get(stat, stat)}" if head else name
    if metric in LIMIT_METRICS:
        return metric
    choices = known_metrics() + [f"{m.rpartition('.')[0]}.p50" for m in known_metrics() if m.endswith(".median")]
    raise LimitSyntaxError(
        f"unknown {what} {name!r}{suggest(name, choices)}; known metrics: {', '.join(known_metrics())}"
        " (a latency's median may also be written .p50)"
    )


def direction(metric: str) -> Sense:
    """``"max"`` where higher is better (tokens/s, FLOP/s), ``"min"`` for every other metric."""
    return "max" if metric in HIGHER_IS_BETTER else "min"


def unit(metric: str) -> str:
    return LIMIT_METRICS.get(metric, "")


@dataclass(frozen=True)
class Estimate:
    """One metric of a candidate: the median of its cycles, and the interval [low, high] around it.

    ``n`` counts the cycles that had a value; ``ci_method`` names the interval's method
    (``student-t``, ``bca``, ``degenerate``; None with fewer than two values, when low = high =
    the value). All None when no cycle had a value.
    """

    metric: str
    point: float | None
    low: float | None
    high: float | None
    n: int
    ci_method: str | None
    confidence: float

    @property
    def present(self) -> bool:
        return self.point is not None

    def oriented(self) -> tuple[float, float, float]:
        """(best end, point, worst end) on a lower-is-better scale (negated for a "max" metric)."""
        assert self.point is not None and self.low is not None and self.high is not None
        if direction(self.metric) == "max":
            return -self.high, -self.point, -self.low
        return self.low, self.point, self.high

    def describe(self, spec: str = ".4g") -> str:
        if self.point is None:
            return "-"
        text = format(self.point, spec)
        if self.ci_method is not None and self.low is not None and self.high is not None:
            text += f" [{format(self.low, spec)}, {format(self.high, spec)}]"
        return f"{text} {unit(self.metric)}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "median": self.point, "ci_low": self.low, "ci_high": self.high, "n": self.n,
            "ci_method": self.ci_method, "confidence": self.confidence, "unit": unit(self.metric),
            "better": "higher" if direction(self.metric) == "max" else "lower",
        }  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One configuration on one kind of hardware and software, with an :class:`Estimate` per metric.

    ``label`` names it for people (its config id, with the GPU or engine version where two
    candidates would otherwise read alike); ``key`` holds its :data:`CANDIDATE_FIELDS`;
    ``fields`` says what it is (config id, model, engine, every swept configuration field,
    ``gpu_name``, ``gpu_count``, ``host``). ``validity_codes`` is the union of its records' flags.
    """

    label: str
    key: dict[str, Any]
    fields: dict[str, Any]
    n_records: int
    estimates: dict[str, Estimate]
    experiment_ids: tuple[str, ...]
    validity_codes: tuple[str, ...] = ()

    def estimate(self, metric: str) -> Estimate:
        return self.estimates[metric]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "key": dict(self.key), "fields": dict(self.fields), "n_records": self.n_records,
            "experiment_ids": list(self.experiment_ids), "validity_codes": list(self.validity_codes),
            "estimates": {name: e.to_json() for name, e in self.estimates.items()},
        }  # fmt: skip


def _records(data: StudyResult | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records, each with its :func:`~pytest_llem.results.loader.derived_fields` (for grouping)."""
    records = data.experiments if isinstance(data, StudyResult) else data
    return [{**record, **derived_fields(record)} for record in records]


def _estimate(summary: Any, confidence: float) -> Estimate:
    point = summary.median
    if point is None:
        return Estimate(summary.metric, None, None, None, 0, None, confidence)
    low = summary.ci_low if summary.ci_low is not None else point
    high = summary.ci_high if summary.ci_high is not None else point
    return Estimate(summary.metric, point, min(low, point), max(high, point), summary.n, summary.ci_method, confidence)


def _labels(summaries: list[Any]) -> list[str]:
    """Config ids, told apart by GPU, then engine version, then hash where they would read alike."""
    labels = [str(s.fields.get("config_id") or s.key.get("measurement_config_hash")) for s in summaries]
    for extra in ("gpu_name", "engine_version", "measurement_config_hash"):
        if len(set(labels)) == len(labels):
            break
        telling = {
            label for label in labels
            if len({str(s.key.get(extra)) for other, s in zip(labels, summaries) if other == label}) > 1
        }  # fmt: skip
        labels = [f"{label} @ {s.key.get(extra)}" if label in telling else label for label, s in zip(labels, summaries)]
    return labels


def build_candidates(
    data: StudyResult | Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = (),
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> list[Candidate]:
    """One :class:`Candidate` per configuration x GPU x engine version, in first-seen order.

    Each carries an :class:`Estimate` of every metric of ``metrics`` (checked and spelled as the
    record does, :func:`canonical_metric`) and of :data:`BASE_METRICS`.
    """
    chosen = list(dict.fromkeys([*(canonical_metric(m) for m in metrics), *BASE_METRICS]))
    records = _records(data)
    if not records:
        return []
    summaries = summarise_groups(records, CANDIDATE_FIELDS, chosen, confidence=confidence, n_resamples=n_resamples, seed=seed)
    members = list(group_records(records, CANDIDATE_FIELDS).values())
    candidates = []
    for label, summary, group in zip(_labels(summaries), summaries, members):
        derived = {name: summary_value([r.get(name) for r in group]) for name in ("gpu_name", "gpu_count", "host")}
        codes = tuple(dict.fromkeys(str(f.get("code")) for r in group for f in record_validity(r)))
        candidates.append(
            Candidate(
                label=label,
                key=dict(summary.key),
                fields={**summary.fields, **derived},
                n_records=summary.n_records,
                estimates={name: _estimate(summary.metrics[name], confidence) for name in chosen},
                experiment_ids=tuple(str(r.get("experiment_id")) for r in group),
                validity_codes=codes,
            )
        )
    return candidates


def summary_value(values: Sequence[Any]) -> Any:
    """The value the records agree on; a sorted list of their values where they differ; None where none has one."""
    distinct = sorted({str(v) for v in values if v is not None})
    present = [v for v in values if v is not None]
    if not present:
        return None
    return present[0] if len(distinct) == 1 else distinct


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` at least as good as ``b`` everywhere and better somewhere, lower being better."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


@dataclass(frozen=True)
class FrontierPoint:
    """Where one candidate stands against a frontier; ``dominated_by`` names who beats it (labels)."""

    candidate: Candidate
    status: Status
    dominated_by: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"label": self.candidate.label, "status": self.status, "dominated_by": list(self.dominated_by)}


@dataclass
class Frontier:
    """The trade-off between metrics ``x`` and ``y`` within one group of candidates (``group``)."""

    x: str
    y: str
    group: dict[str, Any]
    points: list[FrontierPoint] = field(default_factory=list)
    confidence: float = 0.95

    def with_status(self, *statuses: Status) -> list[Candidate]:
        return [p.candidate for p in self.points if p.status in statuses]

    @property
    def frontier(self) -> list[Candidate]:
        """The non-dominated candidates, best first on ``x``."""
        return self.with_status("frontier")

    def to_json(self) -> dict[str, Any]:
        return {
            "x": self.x, "y": self.y, "group": dict(self.group), "confidence": self.confidence,
            "directions": {self.x: direction(self.x), self.y: direction(self.y)},
            "points": [{**p.to_json(), "candidate": p.candidate.to_json()} for p in self.points],
        }  # fmt: skip


def classify(candidates: Sequence[Candidate], x: str, y: str) -> list[FrontierPoint]:
    """Each candidate's standing on the ``x``-``y`` frontier (see the module's docstring), ordered by ``x``."""
    usable = [c for c in candidates if c.estimates[x].present and c.estimates[y].present]
    oriented = {id(c): (c.estimates[x].oriented(), c.estimates[y].oriented()) for c in usable}

    def point(c: Candidate) -> tuple[float, float]:
        ox, oy = oriented[id(c)]
        return ox[1], oy[1]

    def best_end(c: Candidate) -> tuple[float, float]:
        ox, oy = oriented[id(c)]
        return ox[0], oy[0]

    def worst_end(c: Candidate) -> tuple[float, float]:
        ox, oy = oriented[id(c)]
        return ox[2], oy[2]

    on_frontier = [c for c in usable if not any(dominates(point(o), point(c)) for o in usable if o is not c)]
    points: list[FrontierPoint] = []
    for c in sorted(usable, key=lambda c: (point(c)[0], point(c)[1])):
        if any(c is f for f in on_frontier):
            points.append(FrontierPoint(c, "frontier"))
            continue
        sure = tuple(f.label for f in on_frontier if dominates(worst_end(f), best_end(c)))
        if sure:
            points.append(FrontierPoint(c, "dominated", sure))
        else:
            beaten_by = tuple(f.label for f in on_frontier if dominates(point(f), point(c)))
            points.append(FrontierPoint(c, "within_uncertainty", beaten_by))
    points += [FrontierPoint(c, "missing") for c in candidates if not any(c is u for u in usable)]
    return points


def pareto_frontiers(
    data: StudyResult | Sequence[Mapping[str, Any]],
    x: str = DEFAULT_PAIRS[0][0],
    y: str = DEFAULT_PAIRS[0][1],
    *,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> list[Frontier]:
    """The ``x``-``y`` frontier of each group of records (``group_by``: dotted record or config paths,
    or ``gpu_name``/``host``), groups in first-seen order.

    Metrics are checked (:func:`canonical_metric`; ``itl_s.p50`` is ``itl_s.median``); a
    candidate without a value of either metric has status ``"missing"``.
    """
    x, y = canonical_metric(x), canonical_metric(y)
    records = _records(data)
    if isinstance(group_by, str):
        group_by = (group_by,)
    try:
        groups = group_records(records, group_by) if group_by and records else {(): records}
    except KeyError as exc:
        raise LlemError(f"cannot group the frontier by {list(group_by)}: {exc.args[0]}") from None
    frontiers = []
    for key, members in groups.items():
        candidates = build_candidates(members, (x, y), confidence=confidence, n_resamples=n_resamples, seed=seed)
        frontiers.append(
            Frontier(x=x, y=y, group=dict(zip(group_by, key)), points=classify(candidates, x, y), confidence=confidence)
        )
    return frontiers
