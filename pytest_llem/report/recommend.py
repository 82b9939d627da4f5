"""Recommendations under constraints: "minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1 and ttft_s.p95 <= 1".

The query's grammar (keywords in any case; ``minimise``/``maximise`` too)::

    query      := objective [ "where" conditions ] | conditions
    objective  := ("minimize" | "maximize") METRIC
    conditions := condition { "and" condition }
    condition  := METRIC ("<=" | "<" | ">=" | ">") NUMBER

A query of conditions only takes the default objective (:data:`DEFAULT_OBJECTIVE`). METRIC is a
figure a limit may name (``itl_s.p50`` is ``itl_s.median``); an unknown one is an error naming it,
its closest known names and every known name.

The answer (:func:`recommend`) is judged on candidates (:mod:`pytest_llem.report.pareto`: one per
configuration x GPU x engine version; medians across cycles, with their confidence intervals):

* a candidate whose median breaks a condition, or that has no value of a metric the query names,
  is out, with the reason (the value against the bound);
* of the rest, the best median of the objective is ``best``;
* ``runners_up``: the others whose objective interval overlaps the best's, so that the study
  cannot tell them from it at its confidence;
* every other candidate says why it lost: dominated by another that meets the conditions (at
  least as good on the objective and every constrained metric, better on one), or worse than the
  best beyond uncertainty.

A condition met by the median but not by the whole interval is met, with a note
(``marginal``): another run could fall on the other side of the bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_llem.errors import LimitSyntaxError, LlemError
from pytest_llem.report.pareto import (
    Candidate,
    Estimate,
    Sense,
    build_candidates,
    canonical_metric,
    direction,
    dominates,
    unit,
)
from pytest_llem.results.loader import StudyResult, derived_fields
from pytest_llem.results.validity import record_validity
from pytest_llem.verdicts.statistics import group_records

DEFAULT_OBJECTIVE = "minimize mj_per_tok_adjusted"

Operator = Literal["<=", "<", ">=", ">"]
ReasonCode = Literal["violates", "missing", "dominated", "worse"]

_TOKEN = re.compile(
    r"\s*(?:(?P<op><=|>=|<|>|==|=|!=)|(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<other>\S))"
)
_SENSES: dict[str, Sense] = {"minimize": "min", "minimise": "min", "maximize": "max", "maximise": "max"}


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: Operator
    bound: float

    def holds(self, value: float) -> bool:
        return {"<=": value <= self.bound, "<": value < self.bound, ">=": value >= self.bound, ">": value > self.bound}[self.op]

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g} {unit(self.metric)}".rstrip()


@dataclass(frozen=True)
class Query:
    """A parsed query: what to optimise (``metric``, ``sense``) and the conditions to meet."""

    metric: str
    sense: Sense
    constraints: tuple[Constraint, ...]
    text: str

    def describe(self) -> str:
        where = " and ".join(c.describe() for c in self.constraints)
        return f"{'minimize' if self.sense == 'min' else 'maximize'} {self.metric}" + (f" where {where}" if where else "")

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.metric, *(c.metric for c in self.constraints)]))


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:  # only blanks left
            break
        kind = match.lastgroup or "other"
        tokens.append((kind, match.group(kind), match.start(kind)))
        position = match.end()
    return tokens


def parse_query(text: str, default_objective: str = DEFAULT_OBJECTIVE) -> Query:
    """``text`` as a :class:`Query`; :class:`~pytest_llem.errors.LimitSyntaxError` names what is wrong and where."""
    tokens = _tokens(text)
    index = 0

    def fail(problem: str, at: int | None = None) -> LimitSyntaxError:
        where = at if at is not None else (tokens[index][2] if index < len(tokens) else len(text))
        return LimitSyntaxError(f"query {text!r}, at character {where + 1}: {problem}")

    def take(kind: str, what: str) -> tuple[str, int]:
        nonlocal index
        if index >= len(tokens):
            raise fail(f"expected {what}, found the end of the query")
        found_kind, value, at = tokens[index]
        if found_kind != kind:
            raise fail(f"expected {what}, found {value!r}")
        index += 1
        return value, at

    def metric(what: str) -> str:
        name, at = take("word", what)
        try:
            return canonical_metric(name)
        except LimitSyntaxError as exc:
            raise fail(str(exc), at) from None

    def keyword(*words: str) -> str | None:
        if index < len(tokens) and tokens[index][0] == "word" and tokens[index][1].lower() in words:
            return tokens[index][1].lower()
        return None

    if not tokens:
        raise fail("the query is empty; e.g. 'minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1'", 0)
    sense_word = keyword(*_SENSES)
    if sense_word is not None:
        index += 1
        objective_metric = metric(f"a metric to {sense_word}")
        sense = _SENSES[sense_word]
        if index >= len(tokens):
            return Query(metric=objective_metric, sense=sense, constraints=(), text=text)
        if keyword("where") is None:
            raise fail(f"expected 'where' after the objective, found {tokens[index][1]!r}")
        index += 1
    else:
        default = parse_query(default_objective, default_objective)
        objective_metric, sense = default.metric, default.sense
        if keyword("where") is not None:
            index += 1
    constraints: list[Constraint] = []
    while True:
        name = metric("a metric")
        op, at = take("op", "a comparison (<=, <, >=, >)")
        if op not in ("<=", "<", ">=", ">"):
            raise fail(f"{op!r} cannot bound a measured figure; use <=, <, >= or >", at)
        number, _ = take("number", f"a number after {op!r}")
        constraints.append(Constraint(name, op, float(number)))  # type: ignore[arg-type]
        if index >= len(tokens):
            break
        if keyword("and") is None:
            raise fail(f"expected 'and' between conditions, found {tokens[index][1]!r}")
        index += 1
    return Query(metric=objective_metric, sense=sense, constraints=tuple(constraints), text=text)


@dataclass(frozen=True)
class Reason:
    """Why a candidate lost: ``violates`` a condition, ``missing`` a value, ``dominated`` by another, or ``worse``."""

    code: ReasonCode
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Outcome:
    """A candidate that did not win, with its reasons; ``notes`` hold what is worth knowing but did not decide."""

    candidate: Candidate
    reasons: tuple[Reason, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.candidate.label, "reasons": [r.to_json() for r in self.reasons], "notes": list(self.notes),
            "candidate": self.candidate.to_json(),
        }  # fmt: skip


@dataclass
class Recommendation:
    """The answer to a :class:`Query` over one group of candidates (``group``; empty: all of them).

    ``best`` is None when no candidate meets the conditions. ``notes`` maps a candidate's label to
    remarks that did not decide (a marginal condition, validity flags of its records).
    """

    query: Query
    group: dict[str, Any]
    best: Candidate | None
    runners_up: list[Candidate]
    others: list[Outcome]
    confidence: float
    notes: dict[str, list[str]] = field(default_factory=dict)
    excluded_flagged: int = 0

    @property
    def candidates(self) -> list[Candidate]:
        return ([self.best] if self.best else []) + self.runners_up + [o.candidate for o in self.others]

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query.describe(), "objective": {"metric": self.query.metric, "sense": self.query.sense},
            "constraints": [{"metric": c.metric, "op": c.op, "bound": c.bound} for c in self.query.constraints],
            "group": dict(self.group), "confidence": self.confidence,
            "best": self.best.to_json() if self.best else None,
            "runners_up": [c.to_json() for c in self.runners_up],
            "others": [o.to_json() for o in self.others],
            "notes": {k: list(v) for k, v in self.notes.items()}, "excluded_flagged": self.excluded_flagged,
        }  # fmt: skip


def _violations(candidate: Candidate, query: Query) -> list[Reason]:
    reasons: list[Reason] = []
    for name in query.metrics:
        if not candidate.estimates[name].present:
            reasons.append(Reason("missing", f"no value of {name} in its {candidate.n_records} record(s)"))
    for c in query.constraints:
        e = candidate.estimates[c.metric]
        if e.point is not None and not c.holds(e.point):
            reasons.append(Reason("violates", f"violates {c.describe()}: median {e.describe()}"))
    return reasons


def _marginal(candidate: Candidate, query: Query) -> list[str]:
    notes = []
    for c in query.constraints:
        e = candidate.estimates[c.metric]
        if e.low is not None and e.high is not None and not (c.holds(e.low) and c.holds(e.high)):
            notes.append(f"marginal: {c.describe()} holds for the median, not across its interval {e.describe()}")
    return notes


def _oriented(e: Estimate, sense: Sense) -> tuple[float, float, float]:
    """(best end, point, worst end), lower better, for the query's sense (which may differ from the table's)."""
    best, point, worst = e.oriented()
    return (best, point, worst) if sense == direction(e.metric) else (-worst, -point, -best)


def _judge(candidates: list[Candidate], query: Query, confidence: float) -> Recommendation:
    notes: dict[str, list[str]] = {}
    out: list[Outcome] = []
    feasible: list[Candidate] = []
    for c in candidates:
        reasons = _violations(c, query)
        remarks = _marginal(c, query) if not reasons else []
        if c.validity_codes:
            remarks.append(f"validity flags on its records: {', '.join(c.validity_codes)}")
        if remarks:
            notes[c.label] = remarks
        if reasons:
            out.append(Outcome(c, tuple(reasons), tuple(remarks)))
        else:
            feasible.append(c)
    if not feasible:
        return Recommendation(query, {}, None, [], out, confidence, notes)

    def objective(c: Candidate) -> tuple[float, float, float]:
        return _oriented(c.estimates[query.metric], query.sense)

    ranked = sorted(feasible, key=lambda c: objective(c)[1])
    best, rest = ranked[0], ranked[1:]
    runners_up = [c for c in rest if objective(c)[0] <= objective(best)[2]]
    beaten: list[Outcome] = []

    def scores(c: Candidate) -> tuple[float, ...]:
        return (objective(c)[1], *(_oriented(c.estimates[k.metric], direction(k.metric))[1] for k in query.constraints))

    for c in rest:
        if any(c is r for r in runners_up):
            continue
        dominating = [d for d in feasible if d is not c and dominates(scores(d), scores(c))]
        mine, best_estimate = c.estimates[query.metric], best.estimates[query.metric]
        if dominating and query.constraints:
            d = best if any(best is x for x in dominating) else dominating[0]
            names = ", ".join([query.metric, *(k.metric for k in query.constraints)])
            reason = Reason("dominated", f"dominated by {d.label}: at least as good on {names} and better on one")
        else:
            known = mine.ci_method is not None and best_estimate.ci_method is not None
            how = "beyond uncertainty" if known else "(one cycle: no interval, so not judged beyond uncertainty)"
            reason = Reason(
                "worse",
                f"worse than the best {how}: {query.metric} {mine.describe()} against {best.label}'s {best_estimate.describe()}",
            )
        beaten.append(Outcome(c, (reason,), tuple(notes.get(c.label, ()))))
    return Recommendation(query, {}, best, runners_up, beaten + out, confidence, notes)


def _records(data: StudyResult | Sequence[Mapping[str, Any]], exclude_flagged: bool) -> tuple[list[dict[str, Any]], int]:
    records = [dict(r) for r in (data.experiments if isinstance(data, StudyResult) else data)]
    if not exclude_flagged:
        return records, 0
    kept = [r for r in records if not record_validity(r)]
    return kept, len(records) - len(kept)


def recommend(
    data: StudyResult | Sequence[Mapping[str, Any]],
    query: str | Query,
    *,
    exclude_flagged: bool = False,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> Recommendation:
    """The best candidate of ``data`` for ``query`` (text or parsed), its runners-up, and why every other lost.

    ``exclude_flagged`` leaves out records with validity flags (their count is in
    ``excluded_flagged``); otherwise a candidate's flags are noted beside it.
    """
    parsed = parse_query(query) if isinstance(query, str) else query
    records, excluded = _records(data, exclude_flagged)
    candidates = build_candidates(records, parsed.metrics, confidence=confidence, n_resamples=n_resamples, seed=seed)
    answer = _judge(candidates, parsed, confidence)
    answer.excluded_flagged = excluded
    return answer


def recommend_groups(
    data: StudyResult | Sequence[Mapping[str, Any]],
    query: str | Query,
    by: Sequence[str],
    *,
    exclude_flagged: bool = False,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> list[Recommendation]:
    """:func:`recommend` within each group of records (``by``: dotted record or config paths, ``gpu_name``, ``host``)."""
    parsed = parse_query(query) if isinstance(query, str) else query
    records, excluded = _records(data, exclude_flagged)
    annotated = [{**r, **derived_fields(r)} for r in records]
    try:
        groups = group_records(annotated, tuple(by))
    except KeyError as exc:
        raise LlemError(f"cannot group the recommendation by {list(by)}: {exc.args[0]}") from None
    answers = []
    for key, members in groups.items():
        candidates = build_candidates(members, parsed.metrics, confidence=confidence, n_resamples=n_resamples, seed=seed)
        answer = _judge(candidates, parsed, confidence)
        answer.group = dict(zip(by, key))
        answer.excluded_flagged = excluded
        answers.append(answer)
    return answers


def render(answer: Recommendation) -> list[str]:
    """The recommendation in words, for the terminal."""
    group = ", ".join(f"{k}={v}" for k, v in answer.group.items())
    lines = [f"query: {answer.query.describe()}" + (f"  [{group}]" if group else "")]
    if answer.excluded_flagged:
        lines.append(f"left out: {answer.excluded_flagged} record(s) with validity flags (--exclude-flagged)")
    names = answer.query.metrics

    def figures(c: Candidate) -> str:
        return "; ".join(f"{name} {c.estimates[name].describe()}" for name in names)

    if answer.best is None:
        lines.append("best: none: no configuration meets every condition")
    else:
        b = answer.best
        lines.append(f"best: {b.label} ({b.n_records} cycle(s)): {figures(b)}")
        lines += [f"  note: {n}" for n in answer.notes.get(b.label, [])]
    if answer.runners_up:
        lines.append(f"not distinguishable from the best at {100 * answer.confidence:g} % confidence (intervals overlap):")
        for c in answer.runners_up:
            lines.append(f"  {c.label} ({c.n_records} cycle(s)): {figures(c)}")
            lines += [f"    note: {n}" for n in answer.notes.get(c.label, [])]
    if answer.others:
        lines.append("lost:")
        for o in answer.others:
            lines.append(f"  {o.candidate.label}: " + "; ".join(r.message for r in o.reasons))
            lines += [f"    note: {n}" for n in o.notes]
    lines.append(
        "figures: median across cycles [confidence interval of verdicts.statistics: Student t below 100 cycles,"
        " baseline uncertainty included for adjusted energy]"
    )
    return lines


def study_query(result: StudyResult) -> tuple[str, list[str]] | None:
    """The study file's own ``report.recommend`` query and ``report.by`` fields, from its manifest."""
    settings = result.manifest.get("report") or {}
    query = settings.get("recommend")
    if not isinstance(query, str) or not query.strip():
        return None
    by = settings.get("by") or []
    return query, [str(field) for field in by]


def study_recommendation_lines(result: StudyResult) -> list[str]:
    """What the session's end prints for a study with ``report.recommend``; nothing without one."""
    stored = study_query(result)
    if stored is None or not result.experiments:
        return []
    query, by = stored
    try:
        answers = recommend_groups(result, query, by) if by else [recommend(result, query)]
    except LlemError as exc:  # a study whose records answer nothing: said, never raised at the summary
        return [f"no recommendation for {query!r}: {exc}"]
    lines: list[str] = []
    for answer in answers:
        lines += render(answer)
    return lines
