"""A TensorRT-LLM study run through the plugin, end to end, on fakes at the import boundary.

The cell's child imports the fake ``tensorrt_llm`` (tests/fakes/engines) and the fake NVML
(tests/fakes/pynvml) through ``PYTHONPATH``; everything else (the plugin, the parent/child
split, tokenisation of llem-tiny, measurement, records) is the real thing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.plugin.conftest import write_study

FAKES = Path(__file__).resolve().parents[1] / "fakes"

STUDY = """
model: llem-tiny
engine: tensorrt
precision: bf16
dataset: {n_prompts: 4}
max_output_tokens: 4
measurement:
  energy: nvml
  min_window_seconds: 0
  warmup: {max_batches: 1}
  baseline: {enabled: false}
tensorrt: {max_batch_size: 8, kv_cache_free_gpu_memory_fraction: 0.5}
sweep:
  ignore_eos: [true, false]
execution: {n_cycles: 1, teardown: graceful}  # the engine's own shutdown is checked below
"""


@pytest.fixture
def fake_trtllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Children import the fakes and see one of two fake GPUs; every request emits the EOS id
    at its second step."""
    existing = os.environ.get("PYTHONPATH")
    paths = [str(FAKES / "engines"), str(FAKES)] + ([existing] if existing else [])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    gpu = {"uuid": "GPU-fake-0", "name": "Fake H100", "power_w": 300.0}
    other = {"uuid": "GPU-fake-1", "name": "Other GPU", "power_w": 50.0}
    monkeypatch.setenv("LLEM_FAKE_NVML", json.dumps({"gpus": [other, gpu]}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-0")  # the second GPU only
    monkeypatch.setenv("LLEM_FAKE_TRTLLM_EOS_AT", "1")
    monkeypatch.setenv("LLEM_FAKE_TRTLLM_STEP_SLEEP", "0.002")
    for name in ("BACKEND", "DROP_END_ID", "SHUFFLE", "BUILD_SLEEP"):
        monkeypatch.delenv(f"LLEM_FAKE_TRTLLM_{name}", raising=False)
    log = tmp_path / "trtllm.jsonl"
    monkeypatch.setenv("LLEM_FAKE_TRTLLM_LOG", str(log))
    return log


def records(root: Path) -> dict[bool, dict[str, Any]]:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    found = [json.loads(p.read_text()) for p in study_dir.glob("*/result.json")]
    return {r["config"]["ignore_eos"]: r for r in found}


def test_a_tensorrt_study_runs_and_records_the_engine(
    pytester: pytest.Pytester, fake_trtllm: Path
) -> None:
    write_study(pytester.path, "trt.llem.yaml", STUDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    by_ignore_eos = records(pytester.path)
    for record in by_ignore_eos.values():
        assert record["engine"] == "tensorrt"
        assert record["engine_version"] == "0.0.0-fake"
        assert record["total_requests"] > 0 and record["total_requests"] % 4 == 0
        assert record["device"] == "cuda:0 (Fake H100)"
        assert [g["uuid"] for g in record["gpus"]] == ["GPU-fake-0"]
        assert record["energy_meter"] == "nvml" and record["total_energy_j"] > 0
        settings = record["effective_settings"]
        assert settings["build_time_s"] > 0
        assert settings["max_batch_size"] == 8
        assert settings["kv_cache_free_gpu_memory_fraction"] == 0.5
        assert settings["dtype"] == "bfloat16" and settings["weights"] == "pretrained"
        assert settings["cuda_visible_devices"] == "GPU-fake-0"
    # ignore_eos: every request runs its 4 tokens although EOS came at the second.
    full = by_ignore_eos[True]
    assert full["total_tokens"] == 4 * full["total_requests"]
    assert full["effective_settings"]["sampling_params"]["ignore_eos"] is True
    # Otherwise each request counts up to and including its EOS: 2 tokens.
    cut = by_ignore_eos[False]
    assert cut["total_tokens"] == 2 * cut["total_requests"]
    # The settings reached the engine's constructor in the children, one LLM per cell.
    events = [json.loads(line) for line in fake_trtllm.read_text().splitlines()]
    inits = [e["kwargs"] for e in events if e["event"] == "init"]
    assert len(inits) == 2
    for kwargs in inits:
        assert kwargs["max_batch_size"] == 8 and kwargs["dtype"] == "bfloat16"
        assert kwargs["kv_cache_config"]["free_gpu_memory_fraction"] == 0.5
        assert kwargs["skip_tokenizer_init"] is True
    assert sum(e["event"] == "shutdown" for e in events) == 2
    effective = next((pytester.path / "results").glob("*/*/effective_config.json"))
    assert (
        json.loads(effective.read_text())["engine"]["effective_settings"][
            "build_time_s"
        ]
        > 0
    )
