"""Reading a finished (or interrupted) study back from disk: :func:`load_results`.

A study directory holds ``manifest.json`` and one directory per cell with its ``result.json``.
:func:`load_results` reads the manifest, loads the record of every completed cell in run order
and hands back a :class:`StudyResult`: the records, the study's identity and protocol, the
manifest's summary, and the cells that failed or were skipped.

:meth:`StudyResult.to_rows` flattens each cell into one row (its figures and its configuration
by dotted path); :func:`cell_config` is the flattening, which the statistics' summary columns
share.

Import-light: no pydantic, numpy or scipy on loading (the engine names that
:func:`cell_config` needs are imported when it first runs). Statistics are the verdicts layer's:
the public :class:`pytest_llem.StudyResult` (:mod:`pytest_llem.api`) adds :meth:`summarise` to
this class.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pytest_llem.errors import ResultsNotFound, ResultsUnreadable
from pytest_llem.results.manifest import MANIFEST_NAME

#: The fixed columns of :meth:`StudyResult.to_rows`, in order: the cell, then its headline
#: figures (dotted names such as ``ttft_s.median`` reach into the record's nested summaries).
#: The cell's flattened configuration follows them, as ``config.<dotted path>`` columns.
#: New columns are only ever appended; none is renamed or dropped.
ROW_FIELDS: tuple[str, ...] = (
    "experiment_id", "config_id", "cycle", "engine", "model_name", "precision", "measurement_config_hash",
    "total_tokens", "total_inference_time_sec", "avg_tokens_per_second", "total_energy_j",
    "mj_per_tok_total", "mj_per_tok_adjusted",
    "position", "energy_adjusted_j", "mj_per_tok_adjusted_uncertainty", "energy_adjusted_uncertainty_j",
    "ttft_s.median", "itl_s.median", "request_latency_s.median", "request_latency_s.p95",
)  # fmt: skip

#: The prefix of :meth:`StudyResult.to_rows`' configuration columns: ``config.transformers.batch_size``.
CONFIG_PREFIX = "config."


@dataclass
class StudyResult:
    """One study's results, as loaded from its directory.

    ``experiments`` are the ``result.json`` records of the completed cells, in run order;
    ``failed_experiments`` and ``skipped_experiments`` describe the cells that left no record.
    ``manifest`` is the whole ``manifest.json``.
    """

    experiments: list[dict[str, Any]]
    study_name: str
    study_design_hash: str | None
    measurement_protocol: dict[str, Any]
    result_files: list[Path]
    summary: dict[str, Any]
    skipped_experiments: list[dict[str, Any]]
    study_dir: Path
    manifest: dict[str, Any] = field(repr=False)
    failed_experiments: list[dict[str, Any]] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"StudyResult(study_name={self.study_name!r}, study_dir={str(self.study_dir)!r},"
            f" completed={len(self.experiments)}, failed={len(self.failed_experiments)},"
            f" skipped={len(self.skipped_experiments)})"
        )

    def records(self, status: str | None = "completed") -> list[dict[str, Any]]:
        """Records of the cells with ``status``.

        ``"completed"`` (the default) gives the ``result.json`` records (copies of
        ``experiments``). Any other status (``"failed"``, ``"skipped"``, ``"pending"``,
        ``"running"``) gives the manifest entries with that status, since such cells have no
        record. ``None`` gives every manifest entry, in run order.
        """
        if status == "completed":
            return [dict(r) for r in self.experiments]
        entries = _entries(self.manifest)
        return [dict(e) for e in entries if status is None or e.get("status") == status]

    def to_rows(self) -> list[dict[str, Any]]:
        """One flat dict per completed cell, in run order: its headline figures and its configuration.

        The columns are :data:`ROW_FIELDS` (the cell's ids, then its figures; ``precision`` is the
        configuration's), then every field of the cell's resolved configuration flattened to a
        dotted path under ``config.`` (``config.transformers.batch_size``, ``config.decoding.top_p``),
        leaving out the settings sections of engines the cell does not use (as
        ``measurement_config_hash`` does). Every row has every column, None where a cell has no
        such figure or field; values are plain (str, int, float, bool or None; a list setting is
        its JSON text). A list of dicts needs no pandas; ``pandas.DataFrame(result.to_rows())``
        makes it a table.
        """
        figures = [{name: _figure(record, name) for name in ROW_FIELDS} for record in self.experiments]
        configs = [cell_config(record) for record in self.experiments]
        for row, config in zip(figures, configs):
            row["precision"] = config.get("precision")
        columns = list(dict.fromkeys(path for config in configs for path in config))
        return [
            {**row, **{CONFIG_PREFIX + path: config.get(path) for path in columns}}
            for row, config in zip(figures, configs)
        ]


ResultT = TypeVar("ResultT", bound=StudyResult)


def _figure(record: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``record``; None where any step is missing or not a mapping."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config``'s leaves by dotted path, in declaration order: ``{"transformers.batch_size": 1, ...}``.

    Nested mappings are walked (an empty one has no leaf); a list is kept as its key-sorted JSON
    text, so every value is plain and hashable (str, int, float, bool or None).
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, path + "."))
        elif isinstance(value, (list, tuple)):
            flat[path] = json.dumps(value, sort_keys=True, default=str)
        else:
            flat[path] = value
    return flat


def cell_config(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's resolved configuration (``record["config"]``) flattened by :func:`flatten_config`.

    The settings sections of engines the cell does not use are left out, as in
    ``measurement_config_hash``: in a study sweeping engines, a vLLM cell has no
    ``transformers.batch_size``. A record without a configuration gives ``{}``.
    """
    config = record.get("config")
    if not isinstance(config, Mapping):
        return {}
    from pytest_llem.config.engines import ENGINE_NAMES  # pydantic loads here, not on loading results

    engine = config.get("engine")
    unused = {name for name in ENGINE_NAMES if name != engine}
    return flatten_config({key: value for key, value in config.items() if key not in unused})


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsNotFound(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ResultsUnreadable(f"cannot read {what} {path}: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ResultsUnreadable(f"{what} {path} is not valid JSON: {exc}") from exc


def _entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [e for e in manifest.get("experiments") or [] if isinstance(e, dict)]

    def position(item: tuple[int, dict[str, Any]]) -> tuple[float, int]:
        value = item[1].get("position")
        return (float(value) if isinstance(value, (int, float)) else float("inf"), item[0])

    return [e for _, e in sorted(enumerate(entries), key=position)]


def _start_time(study_dir: Path) -> str:
    """When the study started: its manifest's ``start_time``, else the manifest file's own time.

    A manifest that cannot be read still sorts where its run belongs, so that "the newest
    study" is never silently an older one because the newest manifest is corrupt.
    """
    manifest = study_dir / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    value = data.get("start_time") if isinstance(data, dict) else None
    if isinstance(value, str) and value:
        return value
    try:
        return datetime.fromtimestamp(manifest.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    except OSError:
        return ""


def study_dirs(results_root: Path) -> list[Path]:
    """The study directories (those holding a manifest) directly under ``results_root``, oldest first.

    Ordered by the manifest's ``start_time``, then by directory name (which ends in the
    run's time stamp).
    """
    try:
        children = [p for p in Path(results_root).iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file()]
    except OSError:
        return []
    return sorted(children, key=lambda p: (_start_time(p), p.name))


def _resolve_study_dir(path: Path) -> Path:
    if path.is_file():
        if path.name != MANIFEST_NAME:
            raise ResultsNotFound(f"{path} is neither a study directory nor its {MANIFEST_NAME}")
        return path.parent
    if not path.exists():
        raise ResultsNotFound(f"no results at {path}: the path does not exist")
    if (path / MANIFEST_NAME).is_file():
        return path
    found = study_dirs(path)
    if not found:
        raise ResultsNotFound(
            f"no {MANIFEST_NAME} in {path}, nor in any directory directly under it:"
            " pass a study directory, a results directory holding study directories, or a manifest.json"
        )
    return found[-1]


def _result_file(study_dir: Path, entry: dict[str, Any]) -> Path:
    experiment_id = entry.get("experiment_id")
    relative = entry.get("result_path")
    if not isinstance(relative, str) or not relative:
        raise ResultsNotFound(
            f"{study_dir / MANIFEST_NAME}: completed experiment {experiment_id!r} names no result_path"
        )
    path = study_dir / relative
    root = study_dir.resolve()
    if root not in path.resolve().parents:
        raise ResultsUnreadable(
            f"{study_dir / MANIFEST_NAME}: result_path {relative!r} of experiment {experiment_id!r}"
            " leaves the study directory"
        )
    return path


def load_results(path: str | os.PathLike[str]) -> StudyResult:
    """Load one study's results from disk.

    ``path`` may be

    * a study directory (the one holding ``manifest.json``);
    * a ``manifest.json`` file;
    * a results directory holding several study directories: the **newest** study is loaded
      (latest manifest ``start_time``, ties broken by directory name, which ends in the run's
      time stamp). Pass the study directory itself to load an older one.

    Completed cells' records are read from their ``result.json`` in run order. Raises
    :class:`ResultsNotFound` (naming the path) when there is no manifest, or when a completed
    cell's ``result.json`` is missing, and :class:`ResultsUnreadable` when a file is not valid
    JSON. Both are :class:`~pytest_llem.errors.LlemError`.
    """
    return read_study(path, StudyResult)


def read_study(path: str | os.PathLike[str], result_type: type[ResultT]) -> ResultT:
    """:func:`load_results` into ``result_type`` (a subclass of :class:`StudyResult`)."""
    study_dir = _resolve_study_dir(Path(path))
    manifest_path = study_dir / MANIFEST_NAME
    repair_hint = f"; `python -m pytest_llem repair {study_dir}` rebuilds it from the records on disk"
    try:
        manifest = _read_json(manifest_path, "manifest")
    except ResultsUnreadable as exc:
        raise ResultsUnreadable(f"{exc}{repair_hint}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("experiments"), list):
        raise ResultsUnreadable(f"{manifest_path} is not a pytest-llem manifest (no 'experiments' list){repair_hint}")

    experiments: list[dict[str, Any]] = []
    result_files: list[Path] = []
    failed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for entry in _entries(manifest):
        status = entry.get("status")
        if status == "completed":
            result_path = _result_file(study_dir, entry)
            record = _read_json(result_path, f"result.json of experiment {entry.get('experiment_id')!r}")
            if not isinstance(record, dict):
                raise ResultsUnreadable(f"{result_path} does not hold a result record (a JSON object)")
            experiments.append(record)
            result_files.append(result_path)
        elif status == "failed":
            failed.append({**entry, "error": entry.get("error")})
        elif status == "skipped":
            reason = entry.get("skip_reason")
            errors = entry.get("errors")
            skipped.append(
                {
                    "experiment_id": entry.get("experiment_id"),
                    "config_id": entry.get("config_id"),
                    "cycle": entry.get("cycle"),
                    "raw_config": entry.get("config"),
                    "reason": reason,
                    "errors": list(errors) if isinstance(errors, list) else [p for p in str(reason or "").split("; ") if p],
                }
            )

    return result_type(
        experiments=experiments,
        study_name=str(manifest.get("study_name") or study_dir.name),
        study_design_hash=manifest.get("study_design_hash"),
        measurement_protocol=dict(manifest.get("measurement_protocol") or {}),
        result_files=result_files,
        summary=dict(manifest.get("summary") or {}),
        skipped_experiments=skipped,
        study_dir=study_dir,
        manifest=manifest,
        failed_experiments=failed,
    )
