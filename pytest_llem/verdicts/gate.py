"""The regression gate at the end of a session: store baselines, compare, and say what regressed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llem.verdicts import stored
from pytest_llem.verdicts.compare import CompareRule, judge, values_by_config

if TYPE_CHECKING:
    import pytest

    from pytest_llem.verdicts.finalize import FinalizedStudy


def baseline_root(config: pytest.Config) -> Path:
    chosen = Path(config.getoption("llem_baseline_dir") or ".llem-baselines")
    return chosen if chosen.is_absolute() else config.rootpath / chosen


def _passing(records: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    failed = {e["experiment_id"] for e in manifest.get("experiments", []) if e.get("verdict") == "failed"}
    return [r for r in records if r["experiment_id"] not in failed]


CACHE_PREFIX = "llem/last/"


def remember_last(config: pytest.Config, studies: list[FinalizedStudy]) -> None:
    """Keep each study's per-cycle figures in pytest's cache, for ``--llem-compare=last``."""
    cache = getattr(config, "cache", None)
    if cache is None:  # -p no:cacheprovider
        return
    for study in studies:
        records = _passing(study.result.experiments, study.result.manifest)
        if records:
            cache.set(CACHE_PREFIX + study.result.study_name, stored.snapshot(study.result.study_name, records))


def _last(config: pytest.Config, name: str, finger: str, any_hardware: bool) -> tuple[dict[str, Any] | None, str | None]:
    cache = getattr(config, "cache", None)
    if cache is None:
        return None, "--llem-compare=last needs pytest's cache, which is disabled (-p no:cacheprovider)"
    saved = cache.get(CACHE_PREFIX + name, None)
    if saved is None:
        return None, None
    if saved.get("fingerprint") != finger and not any_hardware:
        return None, f"the last run was on other hardware ({saved.get('fingerprint')}), not {finger}; refused"
    return saved, "compared with the last run (pytest cache)"


def run_gate(config: pytest.Config, studies: list[FinalizedStudy], rules: list[CompareRule]) -> tuple[int, list[str]]:
    """``(failures, report lines)`` over every study of the session."""
    root = baseline_root(config)
    required = bool(config.getoption("llem_baseline_required"))
    any_hardware = bool(config.getoption("llem_compare_any_hardware"))
    failures = 0
    lines: list[str] = []
    for study in studies:
        records = _passing(study.result.experiments, study.result.manifest)
        name = study.result.study_name
        if rules:
            cycles = (study.result.measurement_protocol or {}).get("n_cycles") or 0
            if cycles < 4:
                lines.append(
                    f"{name}: only {cycles} cycle(s): a one-sided Mann-Whitney test needs 4 or more per side to reach"
                    " p < 0.05, so this study's gate cannot fail on a regression"
                )
            if config.getoption("llem_compare") == "last":
                saved, note = _last(config, name, stored.fingerprint(records), any_hardware)
            else:
                saved, note = stored.load(root, stored.fingerprint(records), name, any_hardware)
            if note:
                lines.append(f"{name}: {note}")
            if saved is None and note and not any_hardware:
                failures += 1
                lines.append(f"{name}: REFUSED (no comparable baseline)")
            else:
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
                        if verdict.status == "regressed" or (verdict.status == "new" and required):
                            failures += 1
        if config.getoption("llem_baseline_update") and records:
            path = stored.store(root, name, records)
            lines.append(f"{name}: baseline stored in {path}")
    regressed = [line for line in lines if line.endswith("REGRESSED")]
    if regressed:
        lines.insert(0, f"{len(regressed)} regression(s): " + "; ".join(line.split(":")[1].strip() for line in regressed))
    return failures, lines
