"""The regression gate at the end of a session: store baselines, compare, and say what regressed.

Knows nothing of pytest: the session reads the command line into :class:`GateOptions` and hands
over pytest's cache (``config.cache`` satisfies :class:`Cache`) for ``--llem-compare=last``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pytest_llem.verdicts import stored
from pytest_llem.verdicts.compare import CompareRule, judge, values_by_config

if TYPE_CHECKING:
    from pytest_llem.verdicts.finalize import FinalizedStudy

CACHE_PREFIX = "llem/last/"


@dataclass(frozen=True)
class GateOptions:
    """What the command line asks of the gate."""

    baseline_root: Path  # where stored baselines live, already resolved against the rootdir
    required: bool = False  # a configuration with no baseline (NEW) fails the session
    any_hardware: bool = False  # comparing with a baseline of other hardware is allowed
    compare: Literal["stored", "last"] = "stored"  # the stored baseline, or the last run's cached figures
    update: bool = False  # store this run's figures as the baseline


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
            cache.set(CACHE_PREFIX + study.result.study_name, stored.snapshot(study.result.study_name, records))


def _last(cache: Cache | None, name: str, finger: str, any_hardware: bool) -> tuple[dict[str, Any] | None, str | None]:
    if cache is None:
        return None, "--llem-compare=last needs pytest's cache, which is disabled (-p no:cacheprovider)"
    saved = cache.get(CACHE_PREFIX + name, None)
    if saved is None:
        return None, None
    if saved.get("fingerprint") != finger and not any_hardware:
        return None, f"the last run was on other hardware ({saved.get('fingerprint')}), not {finger}; refused"
    return saved, "compared with the last run (pytest cache)"


def run_gate(
    options: GateOptions, studies: list[FinalizedStudy], rules: list[CompareRule], cache: Cache | None = None
) -> tuple[int, list[str]]:
    """``(failures, report lines)`` over every study of the session.

    ``cache`` is where ``--llem-compare=last`` finds the previous run (None: pytest's cache is off).
    """
    failures = 0
    lines: list[str] = []
    for study in studies:
        records = _passing(study.result.experiments, study.result.manifest)
        name = study.result.study_name
        if rules:
            cycles = (study.result.measurement_protocol or {}).get("n_cycles") or 0
            found, compared = _compare(options, cache, name, cycles, records, rules)
            failures += found
            lines += compared
        if options.update and records:
            path = stored.store(options.baseline_root, name, records)
            lines.append(f"{name}: baseline stored in {path}")
    regressed = [line for line in lines if line.endswith("REGRESSED")]
    if regressed:
        lines.insert(0, f"{len(regressed)} regression(s): " + "; ".join(line.split(":")[1].strip() for line in regressed))
    return failures, lines


def _compare(
    options: GateOptions, cache: Cache | None, name: str, cycles: int, records: list[dict[str, Any]],
    rules: list[CompareRule],
) -> tuple[int, list[str]]:  # fmt: skip
    """``(failures, report lines)`` of one study against its baseline, rule by rule and configuration by configuration."""
    failures = 0
    lines: list[str] = []
    if cycles < 4:
        lines.append(
            f"{name}: only {cycles} cycle(s): a one-sided Mann-Whitney test needs 4 or more per side to reach"
            " p < 0.05, so this study's gate cannot fail on a regression"
        )
    if options.compare == "last":
        saved, note = _last(cache, name, stored.fingerprint(records), options.any_hardware)
    else:
        saved, note = stored.load(options.baseline_root, stored.fingerprint(records), name, options.any_hardware)
    if note:
        lines.append(f"{name}: {note}")
    if saved is None and note and not options.any_hardware:
        lines.append(f"{name}: REFUSED (no comparable baseline)")
        return failures + 1, lines
    if saved is not None:
        diffs = stored.software_differences(saved, records)
        if diffs:
            lines.append(f"{name}: software differs from the baseline: {'; '.join(diffs)}")
    for rule in rules:
        current = values_by_config(records, rule.metric)
        for config_id in dict.fromkeys(r["config_id"] for r in records):
            before = None if saved is None else (saved["configs"].get(config_id) or {}).get(rule.metric)
            if saved is not None and before is None and config_id in saved["configs"]:
                before = []  # stored, but without this metric: incomplete
            verdict = judge(config_id, rule, before, current.get(config_id, []))
            lines.append(f"{name}: {verdict.line()}")
            if verdict.status == "regressed" or (verdict.status == "new" and options.required):
                failures += 1
    return failures, lines
