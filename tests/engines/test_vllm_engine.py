"""The vLLM engine adapter against a fake ``vllm`` at the import boundary (tests/fakes/engines/vllm).

The fake keeps vLLM 0.26's names and keyword rules (``LLM`` hands unknown keywords to the
``EngineArgs`` dataclass, which raises ``TypeError``), batches continuously up to
``max_num_seqs`` and generates deterministic ids, so these tests check what the adapter does
with vLLM: which settings reach it, how tokens are counted and timed, and what the escape hatch
forwards or refuses.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from pytest_llem.config.engines import TransformersConfig, VllmConfig
from pytest_llem.config.experiment import DecodingConfig
from pytest_llem.engines.protocol import LoadRequest
from pytest_llem.errors import EngineUnavailable, LlemError
from tests.energy.conftest import FakeNvml

ENGINE_FAKES = Path(__file__).resolve().parents[1] / "fakes" / "engines"


@pytest.fixture
def vllm_module(monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml, tmp_path: Path) -> Iterator[ModuleType]:
    """The adapter module, importing the fake vllm; two fake GPUs; a log of what vLLM was given."""
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")] + ["pytest_llem.engines.vllm"]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(ENGINE_FAKES))
    monkeypatch.setenv("LLEM_FAKE_VLLM_LOG", str(tmp_path / "vllm.log"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # The adapter sets VLLM_USE_FLASHINFER_SAMPLER in its own process; this test process must get
    # it back as it was (absent), so set it here first for monkeypatch to undo.
    monkeypatch.setenv("VLLM_USE_FLASHINFER_SAMPLER", "")
    monkeypatch.delenv("VLLM_USE_FLASHINFER_SAMPLER")
    fake_nvml.configure(fake_nvml.gpu("GPU-aaa", name="Fake H100"), fake_nvml.gpu("GPU-bbb", name="Fake H100"))
    module = importlib.import_module("pytest_llem.engines.vllm")
    assert getattr(sys.modules["vllm"], "FAKE", False)
    yield module
    for name in [n for n in sys.modules if n == "vllm" or n.startswith("vllm.")] + ["pytest_llem.engines.vllm"]:
        sys.modules.pop(name, None)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (directory / "model.safetensors").write_bytes(b"")
    return directory


def request(model: Path, **overrides: Any) -> LoadRequest:
    values: dict[str, Any] = {
        "model": str(model), "precision": "bf16", "settings": VllmConfig(), "decoding": DecodingConfig(),
        "max_output_tokens": 5, "ignore_eos": False, "eos_token_ids": (2, 9), "pad_token_id": 0,
    }  # fmt: skip
    values.update(overrides)
    return LoadRequest(**values)


def log(tmp_path: Path, event: str) -> list[dict[str, Any]]:
    lines = (tmp_path / "vllm.log").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["event"] == event]


def test_settings_reach_the_engine_and_are_read_back(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    settings = {
        "max_num_seqs": 3, "max_num_batched_tokens": 512, "gpu_memory_utilization": 0.5, "enforce_eager": True,
        "enable_prefix_caching": False, "kv_cache_dtype": "fp8", "block_size": 32, "tensor_parallel_size": 2,
        "attention_backend": "FLASHINFER", "quantization": "fp8",
    }  # fmt: skip
    engine.load(request(model_dir, settings=VllmConfig(**settings), precision="fp16"))
    (llm,) = log(tmp_path, "llm")
    for key, value in settings.items():
        assert llm[key] == value, key
    assert llm["dtype"] == "float16" and llm["skip_tokenizer_init"] is True
    assert llm["generation_config"] == "vllm" and llm["load_format"] == "auto"
    effective = engine.effective_settings()
    assert effective["resolved"]["max_num_seqs"] == 3
    assert effective["resolved"]["enable_prefix_caching"] is False
    assert effective["resolved"]["tensor_parallel_size"] == 2
    assert effective["weights"] == "pretrained"
    assert engine.version() == "0.0.0-fake"


#: Verbatim from a vLLM 0.26.0 cell's child.log on an H100 (engine core process).
REAL_AUTO_BACKEND_LINE = (
    "(EngineCore pid=805) INFO 11-23 19:01:52 [cuda.py:482] Using FLASH_ATTN attention backend out of"
    " potential backends: ['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION'].\n"
)


def test_the_automatic_attention_backend_is_read_from_the_cell_log(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell_log = tmp_path / "child.log"
    cell_log.write_text("(EngineCore pid=805) INFO ... Using FlashAttention version 3\n" + REAL_AUTO_BACKEND_LINE)
    monkeypatch.setenv("LLEM_CELL_LOG", str(cell_log))
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    resolved = engine.effective_settings()["resolved"]
    assert resolved["attention_backend_requested"] is None
    assert resolved["attention_backend_used"] == "FLASH_ATTN"


def test_a_requested_attention_backend_is_the_one_used(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell_log = tmp_path / "child.log"
    cell_log.write_text(REAL_AUTO_BACKEND_LINE)  # a stale automatic choice must not win over the request
    monkeypatch.setenv("LLEM_CELL_LOG", str(cell_log))
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(attention_backend="FLASHINFER")))
    resolved = engine.effective_settings()["resolved"]
    assert resolved["attention_backend_requested"] == resolved["attention_backend_used"] == "FLASHINFER"


def test_attention_backend_is_unknown_without_a_log_line(vllm_module: ModuleType, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.log"
    quiet.write_text("INFO nothing about attention here\n")
    assert vllm_module.logged_attention_backends(str(quiet)) is None
    assert vllm_module.logged_attention_backends(str(tmp_path / "absent.log")) is None
    assert vllm_module.logged_attention_backends(None) is None
    workers = tmp_path / "tp.log"
    workers.write_text(REAL_AUTO_BACKEND_LINE + REAL_AUTO_BACKEND_LINE.replace("FLASH_ATTN attention", "TRITON_ATTN attention"))
    assert vllm_module.logged_attention_backends(str(workers)) == ["FLASH_ATTN", "TRITON_ATTN"]


def test_a_backend_forced_outside_the_study_is_read_from_its_own_line(vllm_module: ModuleType, tmp_path: Path) -> None:
    """vLLM 0.26 logs a configured backend as 'Using <enum member> backend.' (platforms/cuda.py)."""
    forced = tmp_path / "forced.log"
    forced.write_text(
        "(EngineCore pid=7) INFO 11-23 19:01:52 [cuda.py:422] Using AttentionBackendEnum.FLASHINFER backend.\n"
        "(EngineCore pid=7) INFO 11-23 19:01:52 [selector.py:203] Using NHD KV cache layout for FLASHINFER backend.\n"
        "(EngineCore pid=7) INFO 11-23 19:01:53 [cuda.py:523] Using backend FLASH_ATTN for vit attention\n"
    )
    assert vllm_module.logged_attention_backends(str(forced)) == ["FLASHINFER"]


def test_tensor_parallel_cells_name_every_gpu_they_use(vllm_module: ModuleType, model_dir: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(tensor_parallel_size=2)))
    assert [g.uuid for g in engine.gpus] == ["GPU-aaa", "GPU-bbb"]
    assert [g.cuda_index for g in engine.gpus] == [0, 1]
    assert engine.device_description == "cuda:0 (Fake H100) + cuda:1 (Fake H100)"


def test_visible_devices_choose_the_gpus(vllm_module: ModuleType, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    assert [g.uuid for g in engine.gpus] == ["GPU-bbb"]


def test_more_ranks_than_gpus_is_unavailable_not_a_crash(vllm_module: ModuleType, model_dir: Path) -> None:
    with pytest.raises(EngineUnavailable, match="needs 4 GPU"):
        vllm_module.VllmEngine().load(request(model_dir, settings=VllmConfig(tensor_parallel_size=4)))


def test_cpu_is_refused(vllm_module: ModuleType, model_dir: Path) -> None:
    with pytest.raises(EngineUnavailable, match="GPUs only"):
        vllm_module.VllmEngine().load(request(model_dir, device="cpu"))


def test_outputs_stop_at_eos_counting_it_and_nothing_after(
    vllm_module: ModuleType, model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLEM_FAKE_VLLM_EMIT", "2:9")  # every request emits EOS id 9 at step 2
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(max_num_seqs=2)))
    batch = [[5, 6], [7], [8, 8, 8]]
    result = engine.run_batch(batch)
    assert [len(ids) for ids in result.output_token_ids] == [3, 3, 3]
    assert all(ids[-1] == 9 for ids in result.output_token_ids)
    assert len(result.ttft_s) == 3 and len(result.itl_s) == 3 * 2 and len(result.per_request_time_s) == 3
    finished = log(tmp_path, "finished")
    assert [len(entry["ids"]) for entry in finished] == [3, 3, 3], "vLLM itself stopped at the EOS id"


def test_outputs_come_back_in_request_order_whatever_order_requests_finish(
    vllm_module: ModuleType, model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLEM_FAKE_VLLM_EMIT", "0@4:9,1@0:9,2@1:9")  # they finish in the order 1, 2, 0
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(max_num_seqs=3)))
    batch = [[5, 6], [7], [8, 8, 8]]
    result = engine.run_batch(batch)
    assert [entry["index"] for entry in log(tmp_path, "finished")] == [1, 2, 0]
    expected = [[(sum(p) + 7 * k) % 97 + 3 for k in range(n)] + [9] for p, n in zip(batch, (4, 0, 1))]
    assert result.output_token_ids == expected
    assert result.ttft_s[1] <= result.ttft_s[0] and result.per_request_time_s[1] < result.per_request_time_s[0]


def test_ignore_eos_runs_to_max_tokens(vllm_module: ModuleType, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLEM_FAKE_VLLM_EMIT", "1:2")
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, ignore_eos=True))
    result = engine.run_batch([[4, 4], [5]])
    assert [len(ids) for ids in result.output_token_ids] == [5, 5]
    assert result.output_token_ids[0][1] == 2, "the EOS id is an ordinary token under ignore_eos"
    assert engine.effective_settings()["sampling"]["stop_token_ids"] == []


def test_token_timing_follows_continuous_batching(
    vllm_module: ModuleType, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one running slot, the second request waits for the first: its TTFT is later."""
    monkeypatch.setenv("LLEM_FAKE_VLLM_STEP_SLEEP", "0.01")
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(max_num_seqs=1), ignore_eos=True))
    result = engine.run_batch([[1], [2]])
    assert result.ttft_s[1] >= result.ttft_s[0] + 5 * 0.01 * 0.9
    assert all(gap >= 0.009 for gap in result.itl_s)
    assert result.per_request_time_s[1] == pytest.approx(result.wall_time_s, abs=0.005)
    assert max(result.per_request_time_s) <= result.wall_time_s


def test_without_token_timing_plain_generate_runs(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(token_timing=False), ignore_eos=True))
    result = engine.run_batch([[1, 2], [3]])
    assert [len(ids) for ids in result.output_token_ids] == [5, 5]
    assert result.ttft_s == [] and result.itl_s == []
    assert result.per_request_time_s == [result.wall_time_s] * 2
    assert {s["output_kind"] for s in log(tmp_path, "sampling")} == {"FINAL_ONLY"}


def test_sampling_settings_are_exactly_the_studys(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, decoding=DecodingConfig(temperature=0.7, top_p=0.9, top_k=None, seed=11)))
    engine.run_batch([[1]])
    (sampling,) = log(tmp_path, "sampling")
    assert sampling["temperature"] == 0.7 and sampling["top_p"] == 0.9
    assert sampling["seed"] is None, "no per-request seed: it sends vLLM's sampler down a slow path"
    assert log(tmp_path, "llm")[0]["seed"] == 11, "the engine's seed is the study's"
    assert sampling["top_k"] == 0, "no top-k is vLLM's 0, not its default"
    assert sampling["stop_token_ids"] == [2, 9] and sampling["detokenize"] is False
    assert sampling["output_kind"] == "DELTA" and sampling["max_tokens"] == 5


def test_greedy_sets_temperature_zero(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    engine.run_batch([[1]])
    (sampling,) = log(tmp_path, "sampling")
    assert sampling["temperature"] == 0.0 and sampling["seed"] is None


@pytest.mark.parametrize(
    ("decoding", "why"),
    [
        (DecodingConfig(), "greedy decoding"),
        (DecodingConfig(temperature=0.8), "neither top_k nor top_p"),
    ],
)
def test_a_sampler_the_cell_never_calls_is_not_built(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, decoding: DecodingConfig, why: str
) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, decoding=decoding))
    (environment,) = log(tmp_path, "environment")
    assert environment["VLLM_USE_FLASHINFER_SAMPLER"] == "0", "set before the engine started"
    settings = engine.effective_settings()
    assert settings["vllm_environment"]["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    assert why in settings["skipped_kernels"]["flashinfer_sampler"]


@pytest.mark.parametrize(
    "decoding", [DecodingConfig(temperature=0.8, top_p=0.9), DecodingConfig(temperature=0.8, top_k=40)]
)
def test_a_cell_that_samples_with_top_k_or_top_p_keeps_the_sampler(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, decoding: DecodingConfig
) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, decoding=decoding))
    (environment,) = log(tmp_path, "environment")
    assert "VLLM_USE_FLASHINFER_SAMPLER" not in environment
    assert engine.effective_settings()["skipped_kernels"] == {}


def test_skipping_unused_kernels_can_be_switched_off(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, skip_unused_kernels=False))
    (environment,) = log(tmp_path, "environment")
    assert "VLLM_USE_FLASHINFER_SAMPLER" not in environment
    assert engine.effective_settings()["skipped_kernels"] == {}


def test_a_sampler_switch_the_user_set_is_left_alone(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_USE_FLASHINFER_SAMPLER", "1")
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    (environment,) = log(tmp_path, "environment")
    assert environment["VLLM_USE_FLASHINFER_SAMPLER"] == "1"
    assert engine.effective_settings()["skipped_kernels"] == {}


def test_escape_hatch_forwards_real_arguments(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(engine_args={"max_model_len": 1024, "max_logprobs": 2})))
    (llm,) = log(tmp_path, "llm")
    assert llm["max_model_len"] == 1024 and llm["max_logprobs"] == 2
    assert engine.effective_settings()["passed_to_llm"]["max_model_len"] == 1024


def test_escape_hatch_rejects_unknown_arguments_by_name(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LlemError, match=r"'max_model_length' is not an argument .*did you mean 'max_model_len'"):
        vllm_module.VllmEngine().load(request(model_dir, settings=VllmConfig(engine_args={"max_model_length": 1})))
    assert not (tmp_path / "vllm.log").exists(), "refused before vLLM started"


def test_escape_hatch_rejects_what_pytest_llem_sets(vllm_module: ModuleType, model_dir: Path) -> None:
    with pytest.raises(LlemError, match=r"'dtype' is set by pytest-llem; use precision"):
        vllm_module.VllmEngine().load(request(model_dir, settings=VllmConfig(engine_args={"dtype": "float32"})))


def test_bad_section_values_are_refused_by_the_schema() -> None:
    with pytest.raises(ValidationError, match="batch_size\n  Extra inputs are not permitted"):
        VllmConfig.model_validate({"batch_size": 4})
    with pytest.raises(ValidationError, match="tensor_parallel_size\n  Input should be greater than or equal to 1"):
        VllmConfig.model_validate({"tensor_parallel_size": 0})
    with pytest.raises(ValidationError, match="engine_args\n  Input should be a valid dictionary"):
        VllmConfig.model_validate({"engine_args": "max_model_len=1024"})


def test_another_engines_section_is_refused_before_vllm_starts(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(LlemError, match="the vllm engine was given the transformers section TransformersConfig, not its own"):
        vllm_module.VllmEngine().load(request(model_dir, settings=TransformersConfig(batch_size=4)))
    assert not (tmp_path / "vllm.log").exists(), "refused before vLLM started"


def test_architecture_only_models_load_dummy_weights(vllm_module: ModuleType, tmp_path: Path) -> None:
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "config.json").write_text(json.dumps({"model_type": "llama"}))
    engine = vllm_module.VllmEngine()
    engine.load(request(arch))
    assert log(tmp_path, "llm")[0]["load_format"] == "dummy"
    assert engine.effective_settings()["weights"] == "random (load_format=dummy)"
    with pytest.raises(LlemError, match="only load with load_format 'dummy'"):
        vllm_module.VllmEngine().load(request(arch, settings=VllmConfig(engine_args={"load_format": "safetensors"})))


def test_one_call_per_pass_and_release_shuts_down(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    prompts = [[1], [2], [3]]
    assert engine.plan_batches(prompts) == [prompts]
    assert engine.peak_memory_bytes() is None
    engine.release()
    assert log(tmp_path, "shutdown")
    assert engine.gpus == []
    with pytest.raises(LlemError, match="no model loaded"):
        engine.run_batch([[1]])


def test_vllm_environment_is_recorded_without_secrets(
    vllm_module: ModuleType, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "FLASHINFER")
    monkeypatch.setenv("VLLM_API_KEY", "hunter2")
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    recorded = engine.effective_settings()["vllm_environment"]
    assert recorded["VLLM_ATTENTION_BACKEND"] == "FLASHINFER"
    assert recorded["VLLM_API_KEY"] == "<withheld>"
    assert "hunter2" not in json.dumps(engine.effective_settings())


def test_parameters_are_counted_from_the_config(vllm_module: ModuleType) -> None:
    from pytest_llem.models.tiny import resolve_model

    engine = vllm_module.VllmEngine()
    engine.load(request(Path(resolve_model("llem-tiny"))))
    assert 800_000 < engine.parameter_count() < 900_000  # llem-tiny: 0.84 M


def test_bad_sampling_settings_fail_before_the_engine_starts(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="temperature"):
        vllm_module.VllmEngine().load(request(model_dir, decoding=DecodingConfig(temperature=3.0)))
    assert not (tmp_path / "vllm.log").exists() or not log(tmp_path, "llm"), "refused before vLLM started"


def test_a_broken_install_is_not_reported_as_a_missing_one(
    vllm_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM present but an API the adapter imports gone: a failure with its cause, never a skip."""
    from pytest_llem.engines.registry import create_engine

    monkeypatch.delitem(sys.modules, "pytest_llem.engines.vllm")
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", None)
    with pytest.raises(ModuleNotFoundError, match="vllm.sampling_params"):
        create_engine("vllm")


def test_a_lost_output_is_an_error_not_a_silent_zero(vllm_module: ModuleType, model_dir: Path) -> None:
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir))
    real_step = engine._llm.llm_engine.step

    def step_losing_request_1() -> list[Any]:
        return [out for out in real_step() if not out.request_id.endswith("-1")]

    engine._llm.llm_engine.step = step_losing_request_1
    with pytest.raises(LlemError, match=r"no tokens for request\(s\) at position\(s\) \[1\]"):
        engine.run_batch([[1], [2], [3]])


# -- the GPUs a cell uses are the GPUs it meters ----------------------------------------------


def test_pipeline_parallel_stages_are_metered_gpus(
    vllm_module: ModuleType, model_dir: Path, fake_nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake's EngineArgs has no pipeline_parallel_size; vLLM's own (0.26) does: record what
    # LLM is given instead of starting the fake.
    fake_nvml.configure(*(fake_nvml.gpu(f"GPU-{i}", name="Fake H100") for i in range(6)))
    given: dict[str, Any] = {}

    class RecordingLLM:
        def __init__(self, **kwargs: Any) -> None:
            given.update(kwargs)

    monkeypatch.setattr(vllm_module, "LLM", RecordingLLM)
    engine = vllm_module.VllmEngine()
    engine.load(request(model_dir, settings=VllmConfig(tensor_parallel_size=2, pipeline_parallel_size=2)))
    assert given["tensor_parallel_size"] == 2 and given["pipeline_parallel_size"] == 2
    assert [g.uuid for g in engine.gpus] == ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]  # every rank's GPU
    assert engine.device_description.count("cuda:") == 4


def test_one_pipeline_stage_leaves_vllms_default(vllm_module: ModuleType) -> None:
    assert "pipeline_parallel_size" not in vllm_module.llm_kwargs(VllmConfig())
    assert vllm_module.llm_kwargs(VllmConfig(pipeline_parallel_size=3))["pipeline_parallel_size"] == 3


def test_more_pipeline_ranks_than_gpus_is_unavailable(vllm_module: ModuleType, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match=r"needs 4 GPU\(s\) but this process sees 2"):
        vllm_module.VllmEngine().load(request(model_dir, settings=VllmConfig(pipeline_parallel_size=4)))
    assert not (tmp_path / "vllm.log").exists(), "refused before vLLM started"


@pytest.mark.parametrize(
    ("key", "use_instead"),
    [
        ("pipeline_parallel_size", "vllm.pipeline_parallel_size"),
        ("tensor_parallel_size", "vllm.tensor_parallel_size"),
        ("data_parallel_size", r"\(not supported: data parallelism"),
        ("data_parallel_address", r"\(not supported: data parallelism"),  # by its prefix
        ("prefill_context_parallel_size", r"\(not supported: prefill context parallelism"),
        ("nnodes", r"\(not supported: a cell meters the GPUs of its own host"),
    ],
)
def test_a_gpu_count_engine_arg_is_refused_by_the_engine_too(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, key: str, use_instead: str
) -> None:
    # Unvalidated: the schema refuses these first; the engine must not forward them either.
    unchecked = VllmConfig.model_construct(engine_args={key: 2})
    with pytest.raises(LlemError, match=rf"'{key}' is set by pytest-llem; use {use_instead}"):
        vllm_module.VllmEngine().load(request(model_dir, settings=unchecked))
    assert not (tmp_path / "vllm.log").exists(), "refused before vLLM started"


def test_a_multi_gpu_cell_in_an_xdist_worker_is_told_to_run_without_n(
    vllm_module: ModuleType, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen on two H200s: a TP-2 cell under ``-n 2`` was refused, but the message did not say what to do."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    with pytest.raises(EngineUnavailable, match=r"sees 2 visible; under pytest-xdist each worker is given one GPU.*without -n"):
        vllm_module.VllmEngine().load(request(model_dir, settings=VllmConfig(pipeline_parallel_size=4)))
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    with pytest.raises(EngineUnavailable) as outside:
        vllm_module.VllmEngine().load(request(model_dir, settings=VllmConfig(pipeline_parallel_size=4)))
    assert "xdist" not in str(outside.value)
