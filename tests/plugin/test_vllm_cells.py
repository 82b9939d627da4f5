"""vLLM cells through the whole plugin: the child imports a fake ``vllm`` and a fake NVML.

What the engine-level tests cannot show: that the study's ``vllm:`` section reaches the
engine through the child process, that a tensor-parallel cell's energy is the sum over its
GPUs with the split recorded, that vLLM and transformers cells of one study see identical
input token ids and count output the same way, and what a missing vLLM does.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.plugin.conftest import write_study

FAKES = Path(__file__).resolve().parents[1] / "fakes"

STUDY = """
model: llem-tiny
precision: fp32
engine: vllm
dataset: {n_prompts: 4}
max_input_tokens: 16
max_output_tokens: 6
ignore_eos: true
vllm: {max_num_seqs: 2, tensor_parallel_size: 2, engine_args: {max_model_len: 512}}
measurement:
  min_window_seconds: 0
  warmup: {max_batches: 2}
  baseline: {enabled: false, spot_check_seconds: 0}
execution: {n_cycles: 1}
"""


def with_fakes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpus: list[dict[str, Any]], engines: bool = True) -> Path:
    paths = [str(FAKES / "engines")] if engines else [str(FAKES / "missing_engines")]
    paths.append(str(FAKES))  # pynvml
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("LLEM_FAKE_NVML", json.dumps({"gpus": gpus}))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    log = tmp_path / "vllm-calls.log"
    monkeypatch.setenv("LLEM_FAKE_VLLM_LOG", str(log))
    return log


def records(root: Path) -> list[dict[str, Any]]:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    return [json.loads(p.read_text()) for p in sorted(study_dir.glob("*/result.json"))]


def manifest(root: Path) -> dict[str, Any]:
    (study_dir,) = [p for p in (root / "results").iterdir() if p.is_dir()]
    return json.loads((study_dir / "manifest.json").read_text())


GPU = {"name": "Fake H100", "idle_w": 70.0, "supports_energy": True}


def test_a_tensor_parallel_cell_sums_energy_over_its_gpus(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}, {"uuid": "GPU-b", "power_w": 100.0, **GPU}])
    write_study(pytester.path, "tp.llem.yaml", STUDY.replace("min_window_seconds: 0", "min_window_seconds: 0.2"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    (record,) = records(pytester.path)
    assert record["engine"] == "vllm" and record["engine_version"] == "0.0.0-fake"
    a, b = record["energy_per_device_j"]
    assert a / b == pytest.approx(3.0, rel=0.1), "the per-device split follows each GPU's power"
    assert record["total_energy_j"] == pytest.approx(a + b)
    assert record["total_tokens"] == record["passes"] * 4 * 6
    window = record["telemetry"]
    assert [row["gpu_uuid"] for row in window["temperature_c"]] == ["GPU-a", "GPU-b"]
    assert all(row["start_c"] == row["end_c"] == 45 for row in window["temperature_c"])  # the fake's steady 45 C
    assert [row["gpu_uuid"] for row in window["cross_check"]] == ["GPU-a", "GPU-b"]
    (llm,) = [json.loads(line) for line in log.read_text().splitlines() if '"llm"' in line]
    assert llm["max_num_seqs"] == 2 and llm["tensor_parallel_size"] == 2 and llm["max_model_len"] == 512
    assert llm["enable_prefix_caching"] is False
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    (effective,) = [json.loads(p.read_text()) for p in study_dir.glob("*/effective_config.json")]
    assert effective["engine"]["effective_settings"]["gpus"] == ["GPU-a", "GPU-b"]
    assert effective["engine"]["effective_settings"]["resolved"]["max_num_seqs"] == 2
    # Both workers logged their automatic choice to child.log; the record names it once.
    assert effective["engine"]["effective_settings"]["resolved"]["attention_backend_used"] == "FLASH_ATTN"


def test_three_engines_of_one_study_see_identical_inputs_and_count_alike(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    vllm_log = with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    trt_log = tmp_path / "trt-calls.log"
    monkeypatch.setenv("LLEM_FAKE_TRTLLM_LOG", str(trt_log))
    body = STUDY.replace("engine: vllm", "engine: [transformers, vllm, tensorrt]").replace("tensor_parallel_size: 2", "tensor_parallel_size: 1")
    body = body.replace("max_input_tokens: 16", "max_input_tokens: 5") + "transformers: {batch_size: 4}\n"
    write_study(pytester.path, "parity.llem.yaml", body)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=3)
    by_engine = {r["engine"]: r for r in records(pytester.path)}
    per_pass = {name: r["total_input_tokens"] / r["passes"] for name, r in by_engine.items()}
    assert len(set(per_pass.values())) == 1, per_pass
    assert per_pass["transformers"] <= 4 * 5, "truncated to max_input_tokens"
    for record in by_engine.values():
        assert record["total_tokens"] == record["passes"] * 4 * 6
    # The very ids, not only their number: the first pass of each engine, in order.
    vllm_prompts = [json.loads(line)["ids"] for line in vllm_log.read_text().splitlines() if '"prompt"' in line][:4]
    trt_calls = [json.loads(line) for line in trt_log.read_text().splitlines() if '"generate"' in line]
    assert vllm_prompts == trt_calls[0]["prompts"]
    assert sum(map(len, vllm_prompts)) == per_pass["transformers"]
    assert all(0 < len(ids) <= 5 for ids in vllm_prompts)


def test_eos_is_counted_and_nothing_after_it_by_both_serving_engines(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each fake emits llem-tiny's EOS (id 1) as its third token: both count 3 tokens a request."""
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    monkeypatch.setenv("LLEM_FAKE_VLLM_EMIT", "2:1")
    monkeypatch.setenv("LLEM_FAKE_TRTLLM_EOS_AT", "2")  # its end_id, the first EOS id: 1
    body = STUDY.replace("ignore_eos: true", "ignore_eos: false").replace("tensor_parallel_size: 2", "tensor_parallel_size: 1")
    write_study(pytester.path, "eos.llem.yaml", body.replace("engine: vllm", "engine: [vllm, tensorrt]"))
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    by_engine = {r["engine"]: r for r in records(pytester.path)}
    assert set(by_engine) == {"vllm", "tensorrt"}
    for record in by_engine.values():
        assert record["total_tokens"] == record["passes"] * 4 * 3, record["engine"]


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_missing_vllm_fails_or_skips_by_policy_without_a_traceback(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, policy: str
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}], engines=False)
    write_study(pytester.path, "missing.llem.yaml", STUDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", f"--llem-missing-engine={policy}")
    if policy == "fail":
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*CellEngineUnavailable*vllm engine cannot be imported*pytest-llem[[]vllm[]]*"])
        assert "traceback in the cell's process" not in result.stdout.str()
        assert "Captured log of the cell's process" not in result.stdout.str()  # the README says: nothing more
        assert "Traceback" not in result.stdout.str()
        assert manifest(pytester.path)["experiments"][0]["status"] == "failed"
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*engine unavailable*pytest-llem[[]vllm[]]*"])
        (entry,) = manifest(pytester.path)["experiments"]
        assert entry["status"] == "skipped" and "pytest-llem[vllm]" in entry["skip_reason"]


def test_the_missing_engine_policy_can_live_in_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}], engines=False)
    write_study(pytester.path, "missing.llem.yaml", STUDY)
    pytester.makeini("[pytest]\nllem_missing_engine = skip\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=1)
    pytester.makeini("[pytest]\nllem_missing_engine = sometimes\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*llem_missing_engine must be 'fail' or 'skip'*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_shadowing_escape_hatch_is_an_error_of_the_file(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "shadow.llem.yaml", STUDY.replace("engine_args: {max_model_len: 512}", "engine_args: {max_num_seqs: 8}"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*shadow.llem.yaml:*vllm.engine_args repeats max_num_seqs: set vllm.max_num_seqs instead*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


@pytest.mark.parametrize("skip", [True, False])
def test_a_greedy_cell_tells_vllm_not_to_build_its_top_k_top_p_sampler(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, skip: bool
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    monkeypatch.delenv("VLLM_USE_FLASHINFER_SAMPLER", raising=False)
    body = STUDY.replace("tensor_parallel_size: 2", "tensor_parallel_size: 1")
    body = body.replace("execution: {n_cycles: 1}", f"execution: {{n_cycles: 1, skip_unused_kernels: {str(skip).lower()}}}")
    body += "experiments:\n  - {id: greedy}\n  - {id: nucleus, decoding.temperature: 0.8, decoding.top_p: 0.9}\n"
    write_study(pytester.path, "sampler.llem.yaml", body)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    by_id = {r["config_id"]: r for r in records(pytester.path)}
    greedy, nucleus = by_id["greedy"], by_id["nucleus"]
    for record in (greedy, nucleus):
        assert record["cell_process"]["skip_unused_kernels"] is skip
    assert manifest(pytester.path)["measurement_protocol"]["skip_unused_kernels"] is skip
    greedy_env = greedy["effective_settings"]["vllm_environment"]
    if skip:
        assert greedy_env["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
        assert "greedy decoding" in greedy["effective_settings"]["skipped_kernels"]["flashinfer_sampler"]
    else:
        assert "VLLM_USE_FLASHINFER_SAMPLER" not in greedy_env
        assert greedy["effective_settings"]["skipped_kernels"] == {}
    # A cell that samples with top-p needs the sampler, whatever the key says.
    assert "VLLM_USE_FLASHINFER_SAMPLER" not in nucleus["effective_settings"]["vllm_environment"]
    assert nucleus["effective_settings"]["skipped_kernels"] == {}


def test_a_study_that_alternates_engines_starts_both_coming_cells_processes_ahead(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    body = STUDY.replace("engine: vllm", "engine: [transformers, vllm]").replace("tensor_parallel_size: 2", "tensor_parallel_size: 1")
    body = body.replace("execution: {n_cycles: 1}", "execution: {n_cycles: 2}") + "transformers: {batch_size: 4}\n"
    write_study(pytester.path, "alternate.llem.yaml", body)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=4)
    (study_dir,) = [p for p in (pytester.path / "results").iterdir() if p.is_dir()]
    entries = sorted(json.loads((study_dir / "manifest.json").read_text())["experiments"], key=lambda e: e["position"])
    run = [json.loads((study_dir / e["result_path"]).read_text()) for e in entries]
    assert [(r["engine"], r["cycle"]) for r in run] == [("transformers", 0), ("vllm", 0), ("transformers", 1), ("vllm", 1)]
    assert all(r["cell_process"]["prestarted"] for r in run)

    def spare_began(record: dict[str, Any]) -> datetime:
        # ahead_of_cell_s counts back from the cell's clock origin, and cell_started_at is taken as
        # its spawn phase begins (spawn's start_s after that origin): the spare's start in UTC.
        spawn = next(p for p in record["timeline"] if p["phase"] == "spawn")
        back = spawn["start_s"] + spawn["parts"]["ahead_of_cell_s"]
        return datetime.fromisoformat(record["cell_started_at"]) - timedelta(seconds=back)

    # The second vLLM cell's process was started while the first vLLM cell's engine loaded, before
    # the transformers cell between them began: one import's time ahead is not all it gets.
    assert spare_began(run[3]) < datetime.fromisoformat(run[2]["cell_started_at"])
    # The first vLLM cell's, before the first cell began: during the session's idle checks.
    assert spare_began(run[1]) < datetime.fromisoformat(run[0]["cell_started_at"])
    assert spare_began(run[2]) < datetime.fromisoformat(run[2]["cell_started_at"])
