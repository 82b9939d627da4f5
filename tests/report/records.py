"""Records and study directories for the report tests, shaped as runs leave them.

``cell`` gives a record with the fields the trade-off and recommendation code reads, each cycle's
figure set by the test, so that a test knows which configuration must win. ``study`` writes
records built by ``build_result`` under a manifest, as a run writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.results.manifest import Manifest
from pytest_llem.results.writer import write_json_atomic
from tests.results.test_record import build, measurement


def cell(
    config_id: str, cycle: int, *, mj: float | None, itl: float, tps: float, ttft_p95: float = 0.5,
    gpu: str = "NVIDIA H200", engine_version: str = "0.26.0", model: str = "m",
) -> dict[str, Any]:  # fmt: skip
    """One cycle of one configuration: adjusted mJ/token, median ITL, tokens/s and p95 TTFT as given."""
    return {
        "experiment_id": f"{config_id}::c{cycle}", "config_id": config_id, "cycle": cycle,
        "measurement_config_hash": f"{config_id:x>16}"[-16:], "engine": "vllm", "engine_version": engine_version,
        "model_name": model, "gpus": [{"uuid": "GPU-1", "name": gpu, "cuda_index": 0}],
        "mj_per_tok_adjusted": mj, "mj_per_tok_total": None if mj is None else mj * 1.25, "avg_tokens_per_second": tps,
        "itl_s": {"median": itl}, "ttft_s": {"p95": ttft_p95},
        "config": {"model": model, "engine": "vllm", "precision": "bf16", "vllm": {"max_num_seqs": 64}, "label": config_id},
    }  # fmt: skip


def cycles(config_id: str, mj: list[float | None], itl: list[float], tps: list[float], **kw: Any) -> list[dict[str, Any]]:
    return [cell(config_id, i, mj=m, itl=lat, tps=t, **kw) for i, (m, lat, t) in enumerate(zip(mj, itl, tps))]


def study(
    root: Path, name: str, start_time: str, cells: list[tuple[str, int, dict[str, Any]]], dir_name: str | None = None,
) -> Path:  # fmt: skip
    """A study directory of completed cells: (config_id, cycle, measurement overrides) each, built by build_result."""
    study_dir = root / (dir_name or f"{name}_{start_time[:19].replace(':', '-')}")
    header = {
        "schema_version": "3.0", "llenergymeasure_version": "0.1.0", "study_name": name,
        "study_design_hash": "feedfacecafebeef", "measurement_protocol": {"n_cycles": 2},
    }  # fmt: skip
    entries, records = [], []
    for position, (config_id, cycle, overrides) in enumerate(cells, start=1):
        precision = "bf16" if config_id.startswith("bf16") else "fp16"
        config = ExperimentConfig.model_validate({"model": "org/model", "precision": precision})
        record = build(
            measurement(**overrides), config=config, experiment_id=f"{config_id}::c{cycle}",
            config_hash=f"{config_id:0>16}"[-16:], study_name=name, config_id=config_id, cycle=cycle, position=position,
        )  # fmt: skip
        records.append(record)
        entries.append({name_: record[name_] for name_ in ("experiment_id", "config_id", "cycle", "position", "measurement_config_hash")})
    manifest = Manifest(study_dir, header, entries)
    manifest.data["start_time"] = start_time
    manifest.flush()
    for record in records:
        cell_dir = f"{record['position']:03d}_c{record['cycle']}_{record['config_id']}"
        write_json_atomic(study_dir / cell_dir / "result.json", record)
        manifest.update(record["experiment_id"], "completed", result_path=f"{cell_dir}/result.json")
    manifest.finish(1.0)
    return study_dir
