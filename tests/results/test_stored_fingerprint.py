"""verdicts/stored.py: the hardware fingerprint that keys a stored baseline, from result records.

Kept beside the record tests: the fingerprint is read from the records' ``gpu_state_start``,
which NVML fills and may leave null (``power_limit_w`` without permission, say).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from pytest_llem.verdicts.stored import baseline_file, fingerprint, hardware, snapshot, store


def _record(**gpu: Any) -> dict[str, Any]:
    state = {"name": "NVIDIA H100 80GB HBM3", "power_limit_w": 700.0, **gpu}
    return {
        "config_id": "cfg0",
        "measurement_config_hash": "0123456789abcdef",
        "gpu_state_start": [state],
        "software_versions": {"pytest_llem": "0.1.0"},
    }


def test_fingerprint_names_gpu_count_model_and_power_limit() -> None:
    assert fingerprint([_record()]) == "1x-NVIDIA_H100_80GB_HBM3-700W"
    assert fingerprint([_record(power_limit_w=350.5)]) == "1x-NVIDIA_H100_80GB_HBM3-350.5W"


def test_an_unknown_power_limit_is_named_not_a_crash() -> None:
    # It raised TypeError (None has no :g format) and the regression gate went down with it.
    record = _record(power_limit_w=None)
    assert hardware([record])["power_limit_w"] is None
    assert fingerprint([record]) == "1x-NVIDIA_H100_80GB_HBM3-unknownW"
    assert fingerprint([record]) != fingerprint([_record()])  # never mixed with a known limit


def test_a_baseline_with_an_unknown_power_limit_is_stored_under_it(tmp_path: Path) -> None:
    record = _record(power_limit_w=None)
    path = store(tmp_path, "demo", [record])
    assert path == baseline_file(tmp_path, "1x-NVIDIA_H100_80GB_HBM3-unknownW", "demo")
    assert path.is_file()
    assert snapshot("demo", [record])["hardware"]["power_limit_w"] is None


def test_cpu_only_fingerprint() -> None:
    assert fingerprint([{"gpu_state_start": []}]) == f"cpu-{platform.machine()}"
