"""Stored baselines: per-configuration, per-cycle figures of an earlier run, committed to a repo.

One JSON file per study under ``<baseline dir>/<hardware fingerprint>/<study>.json``. The
fingerprint (GPU model, count and power limit; ``cpu-<machine>`` without a GPU) is the key, since
figures from other hardware are not comparable; software versions are recorded inside and shown
as differences, not made part of the key.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

from pytest_llem.config.metrics import LIMIT_METRICS
from pytest_llem.errors import BaselineUnreadable
from pytest_llem.naming import sanitise
from pytest_llem.results.writer import utc_iso, write_json_atomic
from pytest_llem.verdicts.compare import values_by_config
from pytest_llem.verdicts.limits import finite_number

FORMAT = 1
#: What to do about a stored baseline that cannot be used, said after what is wrong with it.
FIX = "fix or delete it, or store a new one with --llem-baseline-update"


def hardware(records: list[dict[str, Any]]) -> dict[str, Any]:
    states = (records[0].get("gpu_state_start") or []) if records else []
    if not states:
        return {"gpus": 0, "machine": platform.machine()}
    return {
        "gpus": len(states),
        "gpu_name": states[0].get("name"),
        "power_limit_w": states[0].get("power_limit_w"),
    }


def fingerprint(records: list[dict[str, Any]]) -> str:
    """``1x-NVIDIA-H100-80GB-HBM3-700W``: the stored baseline's key for this hardware.

    A power limit NVML would not report (no permission, an unsupported board) is written
    ``unknownW``: such figures are still stored and compared, apart from those of a known limit.
    """
    hw = hardware(records)
    if not hw["gpus"]:
        return sanitise(f"cpu-{hw['machine']}")
    limit = hw["power_limit_w"]
    watts = "unknown" if limit is None else f"{limit:g}"
    return sanitise(f"{hw['gpus']}x-{hw['gpu_name']}-{watts}W")


def baseline_file(root: Path, finger: str, study_name: str) -> Path:
    """Both parts through sanitise: neither a study name nor a fingerprint can leave ``root``."""
    return root / sanitise(finger) / f"{sanitise(study_name)}.json"


def snapshot(study_name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-cycle figures of every metric, per configuration, with hardware and software."""
    configs: dict[str, Any] = {}
    for metric in LIMIT_METRICS:
        for config_id, values in values_by_config(records, metric).items():
            finite = [v for v in values if math.isfinite(v)]  # NaN stored would make the baseline unusable
            if finite:
                configs.setdefault(config_id, {})[metric] = finite
    for record in records:
        configs.setdefault(record["config_id"], {})["measurement_config_hash"] = record.get("measurement_config_hash")
    return {
        "format": FORMAT,
        "study_name": study_name,
        "fingerprint": fingerprint(records),
        "hardware": hardware(records),
        "software": records[0].get("software_versions") if records else {},
        "stored_at": utc_iso(),
        "configs": configs,
    }


def store(root: Path, study_name: str, records: list[dict[str, Any]]) -> Path:
    """Write the snapshot as this hardware's baseline of the study."""
    data = snapshot(study_name, records)
    path = baseline_file(root, data["fingerprint"], study_name)
    write_json_atomic(path, data)
    return path


def load(root: Path, finger: str, study_name: str, any_hardware: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """The stored baseline of this study on this hardware, or why there is none to use.

    Raises :class:`BaselineUnreadable` for a file that is there but cannot be used (see :func:`checked`).
    """
    path = baseline_file(root, finger, study_name)
    if path.is_file():
        return _read(path), None
    others = sorted(root.glob(f"*/{path.name}"), key=lambda p: p.stat().st_mtime, reverse=True)
    if others and any_hardware:
        return _read(others[0]), f"compared across hardware ({others[0].parent.name})"
    if others:
        return None, (
            f"a baseline exists only for other hardware ({', '.join(p.parent.name for p in others)}), not {finger};"
            " comparing across hardware is refused (--llem-compare-any-hardware allows it)"
        )
    return None, None


def _read(path: Path) -> dict[str, Any]:
    """A stored baseline file, checked; :class:`BaselineUnreadable` says what is wrong with it."""

    def unusable(problem: str) -> BaselineUnreadable:
        return BaselineUnreadable(f"{path}: the stored baseline is unusable: {problem}; {FIX}")

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise unusable(f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise unusable("not valid JSON (not UTF-8 text)") from None
    if not text.strip():
        raise unusable("the file is empty")
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        where = f" (line {exc.lineno}, column {exc.colno}: {exc.msg})" if isinstance(exc, json.JSONDecodeError) else ""
        raise unusable(f"not valid JSON{where}, perhaps truncated") from None
    return checked(data, str(path))


def checked(data: Any, where: str, unusable: str = "the stored baseline is unusable", fix: str = FIX) -> dict[str, Any]:
    """``data`` if it has the shape :func:`snapshot` writes, else :class:`BaselineUnreadable` naming ``where`` and the key.

    ``unusable`` and ``fix`` end the message: what cannot be used, and how to mend it (a stored
    file, or pytest's cache).

    A stored figure that is not a finite number is refused rather than judged: NaN compares
    false with everything, so a baseline holding it would let any run pass. Keys this version
    does not know are left alone (a newer version may add some); ``format`` newer than
    :data:`FORMAT` is refused, since its figures may mean something else.
    """

    def refuse(key: str, expected: str, got: Any) -> BaselineUnreadable:
        shown = json.dumps(got)[:60] if isinstance(got, (bool, int, float, str, type(None))) else f"a JSON {_kind(got)}"
        return BaselineUnreadable(f"{where}: {key}: expected {expected}, got {shown}; {unusable}: {fix}")

    if not isinstance(data, dict):
        raise refuse("(top level)", "a JSON object", data)
    version = data.get("format", FORMAT)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT:
        raise refuse("format", f"a format number up to {FORMAT} (this version of pytest-llem reads no newer)", version)
    for key in ("software", "hardware"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise refuse(key, "a JSON object", data[key])
    if data.get("fingerprint") is not None and not isinstance(data["fingerprint"], str):
        raise refuse("fingerprint", "a string", data["fingerprint"])
    configs = data.get("configs")
    if not isinstance(configs, dict):
        raise refuse("configs", "a JSON object of configurations", configs)
    for config_id, entry in configs.items():
        if not isinstance(entry, dict):
            raise refuse(f"configs.{config_id}", "a JSON object of per-cycle figures", entry)
        config_hash = entry.get("measurement_config_hash")
        if config_hash is not None and not isinstance(config_hash, str):
            raise refuse(f"configs.{config_id}.measurement_config_hash", "a string", config_hash)
        for metric in (m for m in entry if m in LIMIT_METRICS):  # in the file's order: the first bad one is named
            values = entry[metric]
            if not isinstance(values, list) or not values:
                raise refuse(f"configs.{config_id}.{metric}", "a non-empty list of per-cycle figures", values)
            for index, value in enumerate(values):
                if finite_number(value) is None:
                    raise refuse(f"configs.{config_id}.{metric}[{index}]", "a finite number", value)
    return data


def _kind(value: Any) -> str:
    return "list" if isinstance(value, list) else "object" if isinstance(value, dict) else type(value).__name__


def software_differences(stored: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    before = stored.get("software") or {}
    now = (records[0].get("software_versions") if records else None) or {}
    return [f"{k}: {before.get(k)} -> {now.get(k)}" for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
