"""The regression gate at the end of a session: store baselines, compare, and say what regressed.

Knows nothing of pytest: the session reads the command line into :class:`GateOptions` and hands
over pytest's cache (``config.cache`` satisfies :class:`Cache`) for ``--llem-compare=last``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pytest_llem.errors import BaselineUnreadable
from pytest_llem.naming import sanitise
from pytest_llem.verdicts import stored
from pytest_llem.verdicts.compare import CompareRule, Verdict, judge, values_by_config
from pytest_llem.verdicts.decision import holm, holm_adjusted

if TYPE_CHECKING:
    from pytest_llem.verdicts.finalize import FinalizedStudy

CACHE_PREFIX = "llem/last/"


def cache_key(study_name: str) -> str:
    """The cache key of a study's last figures, its name made safe by the one sanitiser.

    pytest joins a key onto its cache directory as a path: an unsanitised ``../../x`` would
    write outside the project (pytest 8) or raise after the cells ran (newer pytest).
    """
    return CACHE_PREFIX + sanitise(study_name)


@dataclass(frozen=True)
class GateOptions:
    """What the command line asks of the gate."""

    baseline_root: Path  # where stored baselines live, already resolved against the rootdir
    required: bool = False  # a configuration with no baseline (NEW) fails the session
    any_hardware: bool = False  # comparing with a baseline of other hardware is allowed
    compare: Literal["stored", "last"] = "stored"  # the stored baseline, or the last run's cached figures
    update: bool = False  # store this run's figures as the baseline
    inconclusive: Literal["pass", "fail"] = "pass"  # what a verdict the cycles cannot decide does to the session


class Cache(Protocol):
    """A JSON key-value store kept between runs; pytest's ``config.cache`` is one."""

    def get(self, key: str, default: Any) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


def _passing(records: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    failed = {e["experiment_id"] for e in manifest.get("experiments", []) if e.get("verdict") == "failed"}
    return [r for r in records if r["experiment_id"] not in failed]


def remember_last(cache: Cache | None, studies: list[FinalizedStudy]) -> None:
    """Keep each study's per-cycle figures in the cache, for ``--llem-compare=last`` (None: disabled)."""
    if cache is None:  # -p no:cacheprovider
        return
    for study in studies:
        records = _passing(study.result.experiments, study.result.manifest)
        if records:
            cache.set(cache_key(study.result.study_name), stored.snapshot(study.result.study_name, records))


def _last(cache: Cache | None, name: str, finger: str, any_hardware: bool) -> tuple[dict[str, Any] | None, str | None]:
    if cache is None:
        return None, "--llem-compare=last needs pytest's cache, which is disabled (-p no:cacheprovider)"
    key = cache_key(name)
    saved = cache.get(key, None)  # pytest answers None for an entry that is not JSON, too: then NEW
    if saved is None:
        return None, None
    saved = stored.checked(
        saved, f"pytest cache entry {key}", "the last run's figures are unusable",
        "this run's figures replace them for the next run, or --cache-clear drops them now",
    )  # fmt: skip
    if saved.get("fingerprint") != finger and not any_hardware:
        return None, f"the last run was on other hardware ({saved.get('fingerprint')}), not {finger}; refused"
    return saved, "compared with the last run (pytest cache)"


@dataclass
class _StudyComparison:
    """One study's verdicts, with the lines that come before them."""

    name: str
    notes: list[str]
    verdicts: list[Verdict]
    refused: bool = False


def run_gate(
    options: GateOptions, studies: list[FinalizedStudy], rules: list[CompareRule], cache: Cache | None = None
) -> tuple[int, list[str]]:
    """``(failures, report lines)`` over every study of the session.

    Regressions are decided over the whole session at once (Holm's correction over every
    configuration and rule), so a session's chance of failing without a real change beyond the
    tolerance stays at most 5 % however many configurations it has. ``cache`` is where
    ``--llem-compare=last`` finds the previous run (None: pytest's cache is off).
    """
    comparisons = _compare_all(options, studies, rules, cache)
    stored_lines: list[str] = []
    for study in studies:
        records = _passing(study.result.experiments, study.result.manifest)
        name = study.result.study_name
        if options.update and records:
            path = stored.store(options.baseline_root, name, records)
            stored_lines.append(f"{name}: baseline stored in {path}")
    failures = 0
    lines: list[str] = []
    for comparison in comparisons:
        lines += [f"{comparison.name}: {note}" for note in comparison.notes]
        failures += comparison.refused
        for verdict in comparison.verdicts:
            lines.append(f"{comparison.name}: {verdict.line()}")
            failures += _fails(verdict, options)
    lines += stored_lines
    regressed = [v.config_id for c in comparisons for v in c.verdicts if v.status == "regressed"]
    if regressed:
        lines.insert(0, f"{len(regressed)} regression(s): " + "; ".join(regressed))
    return failures, lines


def _compare_all(
    options: GateOptions, studies: list[FinalizedStudy], rules: list[CompareRule], cache: Cache | None
) -> list[_StudyComparison]:
    """Every study against its baseline, decided together (Holm over the session); stores nothing."""
    if not rules:
        return []
    comparisons = [
        _compare(options, cache, study.result.study_name, _passing(study.result.experiments, study.result.manifest), rules)
        for study in studies
    ]
    _decide_regressions([v for c in comparisons for v in c.verdicts])
    return comparisons


def inconclusive_configs(
    options: GateOptions, studies: list[FinalizedStudy], rules: list[CompareRule], cache: Cache | None = None
) -> dict[str, dict[str, str]]:
    """Study name -> config id -> the rule(s) the gate cannot yet decide it under.

    The same decision as :func:`run_gate`'s, without storing anything: adaptive cycles ask it
    after each round which configurations more cycles could decide.
    """
    found: dict[str, dict[str, str]] = {}
    for comparison in _compare_all(options, studies, rules, cache):
        for verdict in comparison.verdicts:
            if verdict.status == "inconclusive":
                rules_of = found.setdefault(comparison.name, {})
                described = verdict.rule.describe()
                rules_of[verdict.config_id] = "; ".join(filter(None, [rules_of.get(verdict.config_id), described]))
    return found


def _decide_regressions(verdicts: list[Verdict]) -> None:
    """Holm's correction over every tested verdict of the session; the rejected ones regressed."""
    tested = [v for v in verdicts if v.evidence is not None]
    p_values = [v.evidence.p_value for v in tested if v.evidence is not None]
    for verdict, rejected, adjusted in zip(tested, holm(p_values), holm_adjusted(p_values)):
        verdict.p_adjusted = adjusted
        if rejected:
            verdict.status = "regressed"


def _fails(verdict: Verdict, options: GateOptions) -> bool:
    """Whether a verdict fails the session under the options."""
    if verdict.status in ("regressed", "missing"):
        return True  # a figure that broke while a baseline exists is never a pass
    if verdict.status in ("new", "unjudgeable"):
        return options.required
    return verdict.status == "inconclusive" and options.inconclusive == "fail"


def _compare(
    options: GateOptions, cache: Cache | None, name: str, records: list[dict[str, Any]], rules: list[CompareRule]
) -> _StudyComparison:
    """One study against its baseline, rule by rule and configuration by configuration."""
    try:
        if options.compare == "last":
            saved, note = _last(cache, name, stored.fingerprint(records), options.any_hardware)
        else:
            saved, note = stored.load(options.baseline_root, stored.fingerprint(records), name, options.any_hardware)
    except BaselineUnreadable as exc:  # refused, and so failed: a corrupt baseline must not pass every configuration
        return _StudyComparison(name, [str(exc), "REFUSED (unusable baseline)"], [], refused=True)
    comparison = _StudyComparison(name, [note] if note else [], [])
    if saved is None and note and not options.any_hardware:
        comparison.notes.append("REFUSED (no comparable baseline)")
        comparison.refused = True
        return comparison
    if saved is not None:
        diffs = stored.software_differences(saved, records)
        if diffs:
            comparison.notes.append(f"software differs from the baseline: {'; '.join(diffs)}")
    configs: dict[str, Any] = (saved or {}).get("configs") or {}
    hashes = {r["config_id"]: r.get("measurement_config_hash") for r in records}
    for rule in rules:
        current = values_by_config(records, rule.metric)
        for config_id in dict.fromkeys(r["config_id"] for r in records):
            entry = configs.get(config_id) if saved is not None else None
            before = None if entry is None else (entry.get(rule.metric) or [])
            verdict = judge(
                config_id, rule, before, current.get(config_id, []),
                stored_hash=(entry or {}).get("measurement_config_hash"), current_hash=hashes.get(config_id),
            )  # fmt: skip
            comparison.verdicts.append(verdict)
    return comparison
