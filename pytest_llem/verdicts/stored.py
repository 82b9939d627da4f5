"""Stored baselines: per-configuration, per-cycle figures of an earlier run, committed to a repo.

One JSON file per study under ``<baseline dir>/<hardware fingerprint>/<study>.json``. The
fingerprint (GPU model, count and power limit; ``cpu-<machine>`` without a GPU) is the key, since
figures from other hardware are not comparable; software versions are recorded inside and shown
as differences, not made part of the key.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from pytest_llem.config.metrics import LIMIT_METRICS
from pytest_llem.naming import sanitise
from pytest_llem.results.writer import utc_iso, write_json_atomic
from pytest_llem.verdicts.compare import values_by_config

FORMAT = 1


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
    return root / finger / f"{sanitise(study_name)}.json"


def snapshot(study_name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-cycle figures of every metric, per configuration, with hardware and software."""
    configs: dict[str, Any] = {}
    for metric in LIMIT_METRICS:
        for config_id, values in values_by_config(records, metric).items():
            configs.setdefault(config_id, {})[metric] = values
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
    """The stored baseline of this study on this hardware, or why there is none to use."""
    path = baseline_file(root, finger, study_name)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")), None
    others = sorted(root.glob(f"*/{path.name}"), key=lambda p: p.stat().st_mtime, reverse=True)
    if others and any_hardware:
        return json.loads(others[0].read_text(encoding="utf-8")), f"compared across hardware ({others[0].parent.name})"
    if others:
        return None, (
            f"a baseline exists only for other hardware ({', '.join(p.parent.name for p in others)}), not {finger};"
            " comparing across hardware is refused (--llem-compare-any-hardware allows it)"
        )
    return None, None


def software_differences(stored: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    before = stored.get("software") or {}
    now = (records[0].get("software_versions") if records else None) or {}
    return [f"{k}: {before.get(k)} -> {now.get(k)}" for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
