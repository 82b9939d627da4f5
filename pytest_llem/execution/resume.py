"""``--llem-resume``: which earlier run of a study to pick up, and which of its cells are done.

A six-hour study cut off by a crash, a Ctrl-C, a killed job or a full disk should not start
again from nothing, nor split its statistics over two directories. Resuming runs only the cells
that did not complete, in the study's order, into the earlier run's directory, so its manifest
and statistics cover the whole study. That is sound only when the study is the same: the
earlier run's design hash (every configuration as measured) and the protocol that decides
which cells exist and in which order (cycles, order, shuffle seed) must match the study file
as it is now; otherwise the resume is refused, naming what changed.

Knows nothing of pytest: the session asks :func:`find_resume` per study and deselects the
completed cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_llem.results.loader import study_dirs
from pytest_llem.results.repair import PLAN_NAME, read_valid_manifest, rebuild, study_in_use
from pytest_llem.study.study import Study

#: Protocol keys that decide which cells a study has and their order: a change is a different study.
ORDER_KEYS = ("n_cycles", "experiment_order", "shuffle_seed")


class ResumeRefused(ValueError):
    """The run asked for cannot be resumed with this study file (the message says why)."""


@dataclass
class ResumePlan:
    """Where a study resumes (None: a new run) and the cells already completed there."""

    study_dir: Path | None
    completed: set[str] = field(default_factory=set)
    note: str = ""


def planned_ids(study: Study) -> list[str]:
    """Experiment ids of the study's runnable cells in run order (planned cycles only)."""
    return [f"{c.config_id}::{study.cycle_name(k)}" for c, k in study.run_order() if c.runnable]


def _view(study_dir: Path) -> dict[str, Any] | None:
    """The earlier run as its files tell it (the manifest made to agree with the records), read only."""
    previous = read_valid_manifest(study_dir)
    if previous is None and not (study_dir / PLAN_NAME).is_file():
        return None
    return rebuild(study_dir, previous, interrupted=False).manifest


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def differences(study: Study, view: dict[str, Any], limit: int = 8) -> list[str]:
    """What changed between the earlier run and the study file now, in words (at most ``limit``)."""
    found: list[str] = []
    protocol = view.get("measurement_protocol") or {}
    for key in ORDER_KEYS:
        now = getattr(study.execution, key)
        if key in protocol and protocol[key] != now:
            found.append(f"execution.{key}: {protocol[key]!r} then, {now!r} now")
    then = {e.get("config_id"): e for e in view["experiments"] if not e.get("adaptive_reason")}
    current = {c.config_id: c for c in study.configurations if c.runnable}
    for config_id in [c for c in current if c not in then]:
        found.append(f"configuration {config_id!r} is new")
    for config_id in [c for c in then if c not in current]:
        found.append(f"configuration {config_id!r} is gone")
    for config_id, configuration in current.items():
        entry = then.get(config_id)
        if entry is None or entry.get("measurement_config_hash") == configuration.config_hash:
            continue
        old = _flat(entry.get("config") or {})
        new = _flat(configuration.config.model_dump(mode="json") if configuration.config is not None else {})
        changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        found.append(f"configuration {config_id!r} changed ({'; '.join(changed[:4]) or 'its measured settings'})")
    if not found and view.get("study_design_hash") != study.design_hash:
        found.append("the measured settings changed (design hash differs)")
    if len(found) > limit:
        found = found[:limit] + [f"... and {len(found) - limit} more"]
    return found


def _order_changed(study: Study, view: dict[str, Any]) -> bool:
    protocol = view.get("measurement_protocol") or {}
    return any(key in protocol and protocol[key] != getattr(study.execution, key) for key in ORDER_KEYS)


def _completed(view: dict[str, Any]) -> set[str]:
    return {e["experiment_id"] for e in view["experiments"] if e.get("status") == "completed"}


def _check(study: Study, study_dir: Path, view: dict[str, Any]) -> None:
    if view.get("study_name") not in (None, study.name):
        raise ResumeRefused(f"{study_dir} holds study {view.get('study_name')!r}, not {study.name!r} ({study.path.name})")
    if view.get("study_design_hash") == study.design_hash and not _order_changed(study, view):
        return  # the same study (cells left out by -k then, or now, are no difference)
    changed = differences(study, view)
    if changed:
        raise ResumeRefused(
            f"{study.path.name} changed since the run in {study_dir}: " + "; ".join(changed)
            + ". Resuming would mix two studies in one directory; run it as a new study (without --llem-resume)"
        )  # fmt: skip


def find_resume(study: Study, results_root: Path, explicit: Path | None) -> ResumePlan:
    """The run of ``study`` to resume: ``explicit`` (a study directory), else the newest unfinished one.

    Unfinished: a planned cell of the study as it is now is not completed there. A directory
    a live session holds is never picked (and refused when named). Raises
    :class:`ResumeRefused` when the named directory cannot be resumed with this study file.
    """
    if explicit is not None:
        view = _view(explicit) if explicit.is_dir() else None
        if view is None:
            raise ResumeRefused(f"{explicit} is not a study directory (no manifest.json, no {PLAN_NAME})")
        if study_in_use(explicit):
            raise ResumeRefused(f"{explicit} is being run by another pytest session right now")
        _check(study, explicit, view)
        done = _completed(view)
        left = [i for i in planned_ids(study) if i not in done]
        return ResumePlan(explicit, done, f"resuming {explicit}: {len(done)} cell(s) completed earlier, {len(left)} to run")
    rejected: list[str] = []
    for candidate in reversed(study_dirs(results_root)):
        view = _view(candidate)
        if view is None or view.get("study_name") != study.name:
            continue
        done = _completed(view)
        left = [i for i in planned_ids(study) if i not in done]
        if not left or study_in_use(candidate):
            continue
        try:
            _check(study, candidate, view)
        except ResumeRefused as exc:
            rejected.append(str(exc))
            continue
        return ResumePlan(candidate, done, f"resuming {candidate}: {len(done)} cell(s) completed earlier, {len(left)} to run")
    why = f" (the newest unfinished one is of another version: {rejected[0]})" if rejected else ""
    return ResumePlan(None, set(), f"nothing to resume for {study.name} under {results_root}{why}; a new run starts")
