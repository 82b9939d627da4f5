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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from pytest_llem.errors import ResultsNotFound, ResultsUnreadable
from pytest_llem.results.fields import dotted_value
from pytest_llem.results.manifest import MANIFEST_NAME
from pytest_llem.results.validity import record_validity

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
    #: The studies the records come from, oldest first (one for a single study).
    studies: list[StudySource] = field(default_factory=list, repr=False)
    #: Records left out of a merge because another study held the same cell (see :func:`load_results`).
    duplicates: list[Duplicate] = field(default_factory=list, repr=False)
    #: Records left out by ``exclude_flagged=True``, each with its ``validity`` flags.
    excluded_flagged: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        merged = f", studies={len(self.studies)}" if len(self.studies) > 1 else ""
        return (
            f"StudyResult(study_name={self.study_name!r}, study_dir={str(self.study_dir)!r},"
            f" completed={len(self.experiments)}, failed={len(self.failed_experiments)},"
            f" skipped={len(self.skipped_experiments)}{merged})"
        )

    def source_of(self, index: int) -> StudySource | None:
        """The study that ``experiments[index]`` came from (by its ``result.json`` path)."""
        path = self.result_files[index]
        return next((s for s in self.studies if s.study_dir in path.parents), None)

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
        figures = [{name: dotted_value(record, name) for name in ROW_FIELDS} for record in self.experiments]
        configs = [cell_config(record) for record in self.experiments]
        for row, config in zip(figures, configs):
            row["precision"] = config.get("precision")
        columns = list(dict.fromkeys(path for config in configs for path in config))
        return [
            {**row, **{CONFIG_PREFIX + path: config.get(path) for path in columns}}
            for row, config in zip(figures, configs)
        ]


ResultT = TypeVar("ResultT", bound=StudyResult)


@dataclass(frozen=True)
class StudySource:
    """One study of a (merged) result: where it is, what it is, when it started, how many records it gave."""

    study_dir: Path
    study_name: str
    study_design_hash: str | None
    start_time: str
    n_records: int


@dataclass(frozen=True)
class Duplicate:
    """A record left out of a merge: another study holds the same cell (:data:`IDENTITY_FIELDS`).

    The newer study's record is kept (``kept``, ``dropped``: the two ``result.json`` paths).
    ``differing`` names the headline figures on which the two disagree; empty when the same
    record was simply found twice (a study passed twice, or copied).
    """

    key: tuple[str, ...]
    kept: Path
    dropped: Path
    differing: tuple[str, ...]


#: What makes two records the same cell: its id and configuration hash, and the hardware, host
#: and software it ran on (one study run on an H100 and on an H200 gives two cells, not one).
IDENTITY_FIELDS: tuple[str, ...] = ("experiment_id", "measurement_config_hash", "gpu_name", "engine_version", "host")

#: The figures compared when two records of one cell meet: a difference is a disagreement, reported.
AGREEMENT_FIELDS: tuple[str, ...] = (
    "cell_started_at", "total_tokens", "total_energy_j", "total_inference_time_sec", "mj_per_tok_adjusted",
)  # fmt: skip


def gpu_name(record: Mapping[str, Any]) -> str | None:
    """The GPUs a record ran on, in words: ``NVIDIA H200``, ``2x NVIDIA H200``; None for a CPU cell or an old record."""
    gpus = record.get("gpus")
    names = [str(g.get("name")) for g in gpus if isinstance(g, Mapping) and g.get("name")] if isinstance(gpus, list) else []
    if not names:
        return None
    counts = {name: names.count(name) for name in dict.fromkeys(names)}
    return " + ".join(name if n == 1 else f"{n}x {name}" for name, n in counts.items())


def derived_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Where a record ran, as plain values: ``gpu_name``, ``gpu_count``, ``host``, ``driver_version``.

    From the record's ``gpus``, ``provenance`` and ``gpu_state_start``; None where the record
    does not say (a CPU cell, a record older than ``provenance``).
    """
    gpus = record.get("gpus")
    prov = record.get("provenance")
    prov = prov if isinstance(prov, Mapping) else {}
    states = record.get("gpu_state_start")
    drivers = [s.get("driver_version") for s in states if isinstance(s, Mapping)] if isinstance(states, list) else []
    driver = prov.get("driver_version") or next((d for d in drivers if d), None)
    return {
        "gpu_name": gpu_name(record),
        "gpu_count": len(gpus) if isinstance(gpus, list) else None,
        "host": prov.get("hostname"),
        "driver_version": driver,
    }


def identity_key(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The record's :data:`IDENTITY_FIELDS` as text (``gpu_name`` and ``host`` from :func:`derived_fields`)."""
    values = {**record, **derived_fields(record)}
    return tuple(str(values.get(name)) for name in IDENTITY_FIELDS)




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


def load_results(
    path: str | os.PathLike[str],
    *more: str | os.PathLike[str],
    all_studies: bool = False,
    exclude_flagged: bool = False,
) -> StudyResult:
    """Load one study's results from disk, or several studies merged into one data set.

    Each path may be

    * a study directory (the one holding ``manifest.json``);
    * a ``manifest.json`` file;
    * a results directory holding several study directories: its **newest** study (latest
      manifest ``start_time``, ties broken by directory name, which ends in the run's time
      stamp), or, with ``all_studies=True``, every study under it, at any depth.

    One path naming one study loads that study, exactly as before. Several paths, or
    ``all_studies=True``, merge the studies into one :class:`StudyResult` (see
    :func:`read_studies`): their records in study order (oldest first), duplicates removed.

    Every record carries ``validity`` (a list of ``{"code", "message"}``,
    :mod:`pytest_llem.results.validity`): the stored one, or, for a record written before the
    field, the flags computed on loading. ``exclude_flagged=True`` leaves flagged records out
    (they are kept in ``excluded_flagged``).

    Completed cells' records are read from their ``result.json`` in run order. Raises
    :class:`ResultsNotFound` (naming the path) when there is no manifest, or when a completed
    cell's ``result.json`` is missing, and :class:`ResultsUnreadable` when a file is not valid
    JSON. Both are :class:`~pytest_llem.errors.LlemError`.
    """
    return read_studies((path, *more), StudyResult, all_studies=all_studies, exclude_flagged=exclude_flagged)


def all_study_dirs(root: Path) -> list[Path]:
    """Every study directory at any depth under ``root`` (a study's own directories are not searched)."""
    found: list[Path] = []
    for current, subdirs, files in os.walk(root):
        if MANIFEST_NAME in files and current != str(root):
            found.append(Path(current))
            subdirs[:] = []
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
    return found


def _study_dirs_of(path: Path, all_studies: bool) -> list[Path]:
    if all_studies and path.is_dir() and not (path / MANIFEST_NAME).is_file():
        found = all_study_dirs(path)
        if found:
            return found
    return [_resolve_study_dir(path)]


def _exclude_flagged(result: ResultT) -> ResultT:
    kept = [(r, f) for r, f in zip(result.experiments, result.result_files) if not r.get("validity")]
    result.excluded_flagged = [r for r in result.experiments if r.get("validity")]
    result.experiments = [r for r, _ in kept]
    result.result_files = [f for _, f in kept]
    return result


def read_studies(
    paths: Sequence[str | os.PathLike[str]],
    result_type: type[ResultT],
    *,
    all_studies: bool = False,
    exclude_flagged: bool = False,
) -> ResultT:
    """Several studies as one :class:`StudyResult` of ``result_type``; one study as :func:`read_study` gives it.

    The merge. Studies are taken oldest first (manifest ``start_time``), each study's records in
    its run order; a study reached twice (named twice, or inside a results directory also named)
    is read once. Two records are the same cell when their :data:`IDENTITY_FIELDS` agree
    (experiment id, configuration hash, GPU name, engine version, host): the newer study's record is
    kept, the older one is listed in ``duplicates``, and where the two disagree on a figure of
    :data:`AGREEMENT_FIELDS` (two measurements of one cell, not one record found twice) a
    ``UserWarning`` says how many. Records of different hardware or software stay apart, and the
    tidy table tells them apart by ``gpu_name``, ``host``, ``engine_version``, ``driver_version``.

    The merged result's ``study_name`` joins the studies' names with `` + ``; ``study_dir`` is
    their common directory; ``study_design_hash`` and ``measurement_protocol`` are the studies'
    when they all agree, else None and ``{}``; ``manifest`` holds every study's entries
    (``records(status)`` works) and ``studies`` each study.
    """
    if not paths:
        raise ResultsNotFound("no results path given")
    dirs: list[Path] = []
    for path in paths:
        for study_dir in _study_dirs_of(Path(path), all_studies):
            if study_dir.resolve() not in {d.resolve() for d in dirs}:
                dirs.append(study_dir)
    dirs.sort(key=lambda d: (_start_time(d), d.name))
    studies = [read_study(d, result_type) for d in dirs]
    result = studies[0] if len(studies) == 1 else _merge(studies, result_type)
    return _exclude_flagged(result) if exclude_flagged else result


def _merge(studies: list[ResultT], result_type: type[ResultT]) -> ResultT:
    """``studies`` (oldest first) as one result, later studies' records winning duplicates."""
    kept: dict[tuple[str, ...], tuple[dict[str, Any], Path]] = {}
    duplicates: list[Duplicate] = []
    for study in studies:
        for record, path in zip(study.experiments, study.result_files):
            key = identity_key(record)
            if key in kept:
                old, old_path = kept.pop(key)
                differing = tuple(name for name in AGREEMENT_FIELDS if old.get(name) != record.get(name))
                duplicates.append(Duplicate(key=key, kept=path, dropped=old_path, differing=differing))
            kept[key] = (record, path)
    disagreeing = [d for d in duplicates if d.differing]
    if disagreeing:
        first = disagreeing[0]
        warnings.warn(
            f"{len(disagreeing)} cell(s) were measured in more than one study with different figures; the newer"
            f" study's record is kept (e.g. {first.key[0]}: kept {first.kept}, left out {first.dropped}, differing"
            f" in {', '.join(first.differing)}); see StudyResult.duplicates",
            UserWarning,
            stacklevel=4,
        )
    names = list(dict.fromkeys(s.study_name for s in studies))
    design = {s.study_design_hash for s in studies}
    protocols = [s.measurement_protocol for s in studies]
    summary_keys = ("total_experiments", "completed", "failed", "skipped")
    summary: dict[str, Any] = {
        key: sum(int(s.summary.get(key) or 0) for s in studies) for key in summary_keys
    }
    summary.update(studies=len(studies), duplicates=len(duplicates), completed_after_merge=len(kept))
    entries = [e for s in studies for e in _entries(s.manifest)]
    try:
        common = Path(os.path.commonpath([str(s.study_dir.resolve()) for s in studies]))
    except ValueError:  # different drives
        common = studies[-1].study_dir
    return result_type(
        experiments=[record for record, _ in kept.values()],
        study_name=" + ".join(names),
        study_design_hash=design.pop() if len(design) == 1 else None,
        measurement_protocol=dict(protocols[0]) if all(p == protocols[0] for p in protocols) else {},
        result_files=[path for _, path in kept.values()],
        summary=summary,
        skipped_experiments=[e for s in studies for e in s.skipped_experiments],
        study_dir=common,
        manifest={"study_name": " + ".join(names), "experiments": entries, "studies": [str(s.study_dir) for s in studies]},
        failed_experiments=[e for s in studies for e in s.failed_experiments],
        studies=[src for s in studies for src in s.studies],
        duplicates=duplicates,
    )


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
            if not isinstance(record.get("validity"), list):  # a record older than the field: computed now
                record["validity"] = record_validity(record)
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
        studies=[
            StudySource(
                study_dir=study_dir,
                study_name=str(manifest.get("study_name") or study_dir.name),
                study_design_hash=manifest.get("study_design_hash"),
                start_time=_start_time(study_dir),
                n_records=len(experiments),
            )
        ],
    )
