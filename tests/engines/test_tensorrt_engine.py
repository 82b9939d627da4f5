"""The TensorRT-LLM engine adapter, in process, against a fake ``tensorrt_llm`` and a fake NVML.

TensorRT-LLM cannot be installed here, so ``tests/fakes/engines/tensorrt_llm`` stands in at the
import boundary with the real API's names and checks; it records every ``LLM`` argument and
every ``SamplingParams`` it got in a JSON-lines log, which is how these tests see what reached
the engine.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from pytest_llem.config.engines import TensorrtConfig, TransformersConfig
from pytest_llem.config.experiment import DecodingConfig
from pytest_llem.engines.protocol import LoadRequest
from pytest_llem.errors import EngineUnavailable, LlemError
from tests.energy.conftest import FakeNvml

FAKE_ENGINES = Path(__file__).resolve().parents[1] / "fakes" / "engines"
EOS, PAD = 1, 0
PROMPTS = [
    [72, 101, 108, 108, 111],
    [87, 104, 121],
    [69, 120, 112, 108, 97, 105, 110],
    [65],
]
FAKE_ENV = ("BACKEND", "EOS_AT", "DROP_END_ID", "SHUFFLE", "STEP_SLEEP", "BUILD_SLEEP")
#: A Llama small enough to count by hand (see test_parameter_count_comes_from_the_config).
TINY_LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}


def _forget_modules() -> None:
    for name in [
        n for n in sys.modules if n == "tensorrt_llm" or n.startswith("tensorrt_llm.")
    ]:
        del sys.modules[name]
    sys.modules.pop("pytest_llem.engines.tensorrt", None)


Adapter = Callable[..., ModuleType]


@pytest.fixture
def adapter(
    monkeypatch: pytest.MonkeyPatch, fake_nvml: FakeNvml, tmp_path: Path
) -> Iterator[Adapter]:
    """Import the adapter against the fake; keyword arguments set ``LLEM_FAKE_TRTLLM_*`` first
    (the fake reads its backend at import, so each call imports both afresh)."""
    fake_nvml.configure(FakeNvml.gpu("GPU-fake-0"), FakeNvml.gpu("GPU-fake-1"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LLEM_FAKE_TRTLLM_LOG", str(tmp_path / "trtllm.jsonl"))
    for name in FAKE_ENV:
        monkeypatch.delenv(f"LLEM_FAKE_TRTLLM_{name}", raising=False)
    monkeypatch.syspath_prepend(str(FAKE_ENGINES))

    def load(**env: str) -> ModuleType:
        for name, value in env.items():
            monkeypatch.setenv(f"LLEM_FAKE_TRTLLM_{name.upper()}", value)
        _forget_modules()
        module = importlib.import_module("pytest_llem.engines.tensorrt")
        assert getattr(sys.modules["tensorrt_llm"], "FAKE", False), (
            "imported a real tensorrt_llm"
        )
        return module

    yield load
    _forget_modules()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model directory with a config and a weight file (the fake only checks it exists)."""
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(TINY_LLAMA))
    (directory / "model.safetensors").write_bytes(b"")
    return directory


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    path = tmp_path / "trtllm.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def request_for(model: Path, **overrides: Any) -> LoadRequest:
    values: dict[str, Any] = {
        "model": str(model),
        "precision": "bf16",
        "settings": TensorrtConfig(),
        "decoding": DecodingConfig(),
        "max_output_tokens": 6,
        "ignore_eos": False,
        "eos_token_ids": (EOS,),
        "pad_token_id": PAD,
        "device": "auto",
        **overrides,
    }
    return LoadRequest(**values)


def loaded(module: ModuleType, model: Path, **overrides: Any) -> Any:
    engine = module.TensorrtEngine()
    engine.load(request_for(model, **overrides))
    return engine


# -- settings reach the LLM ------------------------------------------------------------------


def test_settings_reach_the_llm(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    settings = {
        "max_batch_size": 16,
        "max_num_tokens": 2048,
        "kv_cache_free_gpu_memory_fraction": 0.55,
    }
    engine = loaded(
        adapter(),
        model_dir,
        settings=TensorrtConfig(**settings, tensor_parallel_size=2),
    )
    (init,) = events(tmp_path, "init")
    assert init["class"] == "LLM"
    kwargs = init["kwargs"]
    assert kwargs["model"] == str(model_dir)
    assert kwargs["dtype"] == "bfloat16"
    assert kwargs["tensor_parallel_size"] == 2
    assert kwargs["max_batch_size"] == 16 and kwargs["max_num_tokens"] == 2048
    assert kwargs["kv_cache_config"]["free_gpu_memory_fraction"] == 0.55
    assert kwargs["kv_cache_config"]["enable_block_reuse"] is False
    assert kwargs["skip_tokenizer_init"] is True
    assert "quant_config" not in kwargs and "load_format" not in kwargs
    effective = engine.effective_settings()
    assert effective["dtype"] == "bfloat16" and effective["tensor_parallel_size"] == 2
    assert effective["max_batch_size"] == 16 and effective["max_num_tokens"] == 2048
    assert effective["kv_cache_free_gpu_memory_fraction"] == 0.55
    assert effective["kv_cache_block_reuse"] is False
    assert effective["weights"] == "pretrained" and effective["load_format"] == "AUTO"
    assert [(g.uuid, g.cuda_index) for g in engine.gpus] == [
        ("GPU-fake-0", 0),
        ("GPU-fake-1", 1),
    ]
    assert engine.device_description == "cuda:0 (Fake H100) + cuda:1 (Fake H100)"
    json.dumps(effective)  # the record must be plain JSON


def test_unset_limits_are_left_to_the_engine_and_read_back(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(adapter(), model_dir, precision="fp16")
    kwargs = events(tmp_path, "init")[0]["kwargs"]
    assert "max_batch_size" not in kwargs and "max_num_tokens" not in kwargs
    assert kwargs["dtype"] == "float16"
    effective = engine.effective_settings()
    assert (effective["max_batch_size"], effective["max_num_tokens"]) == (
        2048,
        8192,
    )  # the fake's defaults
    assert (
        effective["backend"] is None
        and effective["llm"] == "tensorrt_llm.llmapi.LLM, 0.0.0-fake"
    )


def test_quantization_reaches_the_engine_building_llm(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(
        adapter(backend="tensorrt"),
        model_dir,
        settings=TensorrtConfig(quantization="fp8"),
    )
    assert events(tmp_path, "init")[0]["kwargs"]["quant_config"]["quant_algo"] == "FP8"
    assert engine.effective_settings()["quantization"] == "FP8"


def test_an_unknown_quantization_lists_the_known_ones(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        LlemError, match=r"'fp9' is not a TensorRT-LLM QuantAlgo; known: .*FP8.*NVFP4"
    ):
        loaded(
            adapter(backend="tensorrt"),
            model_dir,
            settings=TensorrtConfig(quantization="fp9"),
        )
    assert not events(tmp_path, "init")


def test_quantization_without_quant_config_is_refused_not_dropped(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(LlemError, match="takes no quant_config"):
        loaded(adapter(), model_dir, settings=TensorrtConfig(quantization="FP8"))
    assert not events(tmp_path, "init")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 4}, "batch_size\n  Extra inputs are not permitted"),
        (
            {"max_batch_size": 0},
            "max_batch_size\n  Input should be greater than or equal to 1",
        ),
        ({"tensor_parallel_size": True}, "tensor_parallel_size\n  Input should be a valid integer"),
        (
            {"kv_cache_free_gpu_memory_fraction": 1.5},
            "kv_cache_free_gpu_memory_fraction\n  Input should be less than or equal to 1",
        ),
        (
            {"engine_args": {"max_batch_size": 8}},
            "tensorrt.engine_args repeats max_batch_size: set tensorrt.max_batch_size instead",
        ),
    ],
)
def test_bad_settings_are_refused_by_the_schema(
    values: dict[str, Any], message: str
) -> None:
    """The engine trusts its section: a bad setting is refused once, where the study is read."""
    with pytest.raises(ValidationError, match=message):
        TensorrtConfig.model_validate(values)


def test_another_engines_section_is_refused_before_any_build(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        LlemError,
        match="the tensorrt engine was given the transformers section TransformersConfig, not its own",
    ):
        loaded(adapter(), model_dir, settings=TransformersConfig())
    assert not events(tmp_path, "init")


# -- the escape hatch ------------------------------------------------------------------------


def test_engine_args_are_forwarded(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine_args = {"enable_chunked_prefill": True, "max_seq_len": 512}
    engine = loaded(
        adapter(), model_dir, settings=TensorrtConfig(engine_args=engine_args)
    )
    kwargs = events(tmp_path, "init")[0]["kwargs"]
    assert kwargs["enable_chunked_prefill"] is True and kwargs["max_seq_len"] == 512
    assert engine.effective_settings()["engine_args"] == engine_args


def test_an_unknown_engine_arg_fails_naming_it(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        LlemError,
        match=r"'enable_chunked_prefil' is not .*did you mean 'enable_chunked_prefill'",
    ):
        loaded(
            adapter(),
            model_dir,
            settings=TensorrtConfig(engine_args={"enable_chunked_prefil": True}),
        )
    assert not events(tmp_path, "init"), "refused before any engine build"


def test_accepted_engine_args_come_from_the_installed_backend(
    adapter: Adapter, model_dir: Path
) -> None:
    with pytest.raises(
        LlemError, match="'fast_build' is not an argument of the installed tensorrt"
    ):
        loaded(
            adapter(),
            model_dir,
            settings=TensorrtConfig(engine_args={"fast_build": True}),
        )
    engine = loaded(
        adapter(backend="tensorrt"),
        model_dir,
        settings=TensorrtConfig(engine_args={"fast_build": True}),
    )
    assert engine.effective_settings()["engine_args"] == {"fast_build": True}


@pytest.mark.parametrize(
    ("key", "use_instead"),
    [
        ("dtype", "precision"),
        ("kv_cache_config", "tensorrt.kv_cache_free_gpu_memory_fraction"),
        ("max_batch_size", "tensorrt.max_batch_size"),
        ("load_format", "set by pytest-llem"),
    ],
)
def test_an_owned_engine_arg_names_the_study_key(
    adapter: Adapter, model_dir: Path, key: str, use_instead: str
) -> None:
    with pytest.raises(
        LlemError, match=rf"'{key}' is set by pytest-llem; use .*{use_instead}"
    ):
        # Unvalidated: the schema refuses a section key (max_batch_size) here first, and the
        # engine's own refusal is what this test is about.
        unchecked = TensorrtConfig.model_construct(engine_args={key: "x"})
        loaded(adapter(), model_dir, settings=unchecked)


# -- generation and token accounting ---------------------------------------------------------


def test_counting_stops_at_eos_and_includes_it(
    adapter: Adapter, model_dir: Path
) -> None:
    engine = loaded(adapter(eos_at="0@1,2@3"), model_dir)
    rows = engine.run_batch(PROMPTS).output_token_ids
    assert [len(r) for r in rows] == [2, 6, 4, 6]
    assert rows[0][-1] == EOS and rows[2][-1] == EOS
    assert all(EOS not in row[:-1] for row in rows) and EOS not in rows[1] + rows[3]


def test_ignore_eos_counts_every_token(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(adapter(eos_at="1"), model_dir, ignore_eos=True)
    rows = engine.run_batch(PROMPTS).output_token_ids
    assert [len(r) for r in rows] == [6] * 4
    assert all(row[1] == EOS for row in rows)  # emitted, and generation went on
    (generate,) = events(tmp_path, "generate")
    assert generate["sampling_params"][0]["ignore_eos"] is True


def test_every_eos_id_stops_a_request(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(adapter(eos_at="1@2:50"), model_dir, eos_token_ids=(EOS, 50))
    rows = engine.run_batch(PROMPTS).output_token_ids
    assert [len(r) for r in rows] == [6, 3, 6, 6] and rows[1][-1] == 50
    params = events(tmp_path, "generate")[0]["sampling_params"][0]
    assert (
        params["end_id"],
        params["stop_token_ids"],
        params["include_stop_str_in_output"],
    ) == (EOS, [50], True)


def test_an_end_token_left_out_by_the_engine_is_counted(
    adapter: Adapter, model_dir: Path
) -> None:
    engine = loaded(adapter(eos_at="0@1", drop_end_id="1"), model_dir)
    rows = engine.run_batch(PROMPTS).output_token_ids
    assert len(rows[0]) == 2 and rows[0][-1] == EOS
    assert [len(r) for r in rows[1:]] == [6, 6, 6]


def test_outputs_come_back_in_request_order(adapter: Adapter, model_dir: Path) -> None:
    in_order = loaded(adapter(), model_dir).run_batch(PROMPTS).output_token_ids
    # The rows differ, so an order mix-up would show.
    assert len({tuple(r) for r in in_order}) == len(PROMPTS)
    shuffled = (
        loaded(adapter(shuffle="1"), model_dir).run_batch(PROMPTS).output_token_ids
    )
    assert shuffled == in_order


def test_one_batch_per_pass_and_its_timing(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(adapter(step_sleep="0.01"), model_dir, ignore_eos=True)
    assert engine.plan_batches(PROMPTS) == [PROMPTS]
    result = engine.run_batch(PROMPTS)
    assert result.wall_time_s >= 0.06  # 6 steps of 10 ms: the call's own time
    assert result.per_request_time_s == [result.wall_time_s] * 4
    assert result.ttft_s == [] and result.itl_s == []
    (generate,) = events(tmp_path, "generate")
    assert generate["n"] == 4


def test_greedy_sampling_params(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(adapter(), model_dir)
    engine.run_batch(PROMPTS[:1])
    params = events(tmp_path, "generate")[0]["sampling_params"][0]
    assert (
        params["temperature"] == 0.0
        and params["top_k"] is None
        and params["top_p"] is None
    )
    assert (
        params["max_tokens"],
        params["end_id"],
        params["pad_id"],
        params["seed"],
    ) == (6, EOS, PAD, 0)
    assert params["repetition_penalty"] is None and params["detokenize"] is False
    assert params["stop_token_ids"] is None and params["ignore_eos"] is False
    assert engine.effective_settings()["sampling_params"]["temperature"] == 0.0


def test_sampling_params_when_sampling(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    decoding = DecodingConfig(
        temperature=0.8, top_p=0.9, top_k=None, repetition_penalty=1.1, seed=5
    )
    engine = loaded(adapter(), model_dir, decoding=decoding)
    engine.run_batch(PROMPTS[:1])
    params = events(tmp_path, "generate")[0]["sampling_params"][0]
    # top_k 0: no top-k, rather than some default
    assert (params["temperature"], params["top_p"], params["top_k"]) == (0.8, 0.9, 0)
    assert (params["repetition_penalty"], params["seed"]) == (1.1, 5)
    loaded(
        adapter(), model_dir, decoding=DecodingConfig(temperature=0.7, top_k=40)
    ).run_batch(PROMPTS[:1])
    assert events(tmp_path, "generate")[1]["sampling_params"][0]["top_k"] == 40


# -- load, devices, weights, release ---------------------------------------------------------


def test_build_time_is_recorded(adapter: Adapter, model_dir: Path) -> None:
    engine = loaded(adapter(build_sleep="0.05"), model_dir)
    build = engine.effective_settings()["build_time_s"]
    assert 0.05 <= build < 5


def test_the_cpu_is_refused(adapter: Adapter, model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="NVIDIA GPUs only"):
        loaded(adapter(), model_dir, device="cpu")
    assert not events(tmp_path, "init")


def test_more_tensor_parallel_ranks_than_visible_gpus(
    adapter: Adapter, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        EngineUnavailable, match=r"needs 4 GPU\(s\) but this process sees 2 visible"
    ):
        loaded(adapter(), model_dir, settings=TensorrtConfig(tensor_parallel_size=4))
    assert not events(tmp_path, "init"), "refused before any engine build"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-1")
    engine = loaded(adapter(), model_dir)
    assert [(g.uuid, g.cuda_index) for g in engine.gpus] == [("GPU-fake-1", 0)]
    assert engine.effective_settings()["cuda_visible_devices"] == "GPU-fake-1"


def test_an_architecture_only_model_gets_dummy_weights(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    (model_dir / "model.safetensors").unlink()
    engine = loaded(adapter(), model_dir)
    assert events(tmp_path, "init")[0]["kwargs"]["load_format"] == "dummy"
    effective = engine.effective_settings()
    assert (
        effective["weights"] == "random (load_format=dummy)"
        and effective["load_format"] == "DUMMY"
    )


def test_an_architecture_only_model_without_dummy_load_format(
    adapter: Adapter, model_dir: Path
) -> None:
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(
        EngineUnavailable,
        match="has no weights, and the installed LLM has no load_format",
    ):
        loaded(adapter(backend="tensorrt"), model_dir)


def test_release_shuts_the_llm_down(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    engine = loaded(adapter(), model_dir)
    engine.release()
    assert len(events(tmp_path, "shutdown")) == 1
    with pytest.raises(LlemError, match="no model loaded"):
        engine.run_batch(PROMPTS)
    engine.release()  # twice is harmless
    assert len(events(tmp_path, "shutdown")) == 1


def test_version_memory_and_parameter_count(adapter: Adapter, model_dir: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    engine = loaded(adapter(), model_dir)
    assert engine.version() == "0.0.0-fake"
    assert engine.peak_memory_bytes() is None
    # embeddings 32*8, per layer q/k/v/o 4*8*8 + MLP 3*8*16 + two norms 2*8, final norm 8; tied head
    assert engine.parameter_count() == 32 * 8 + (4 * 8 * 8 + 3 * 8 * 16 + 2 * 8) + 8


# -- the GPUs a cell uses are the GPUs it meters ----------------------------------------------


def test_pipeline_parallel_stages_are_metered_gpus(
    adapter: Adapter, model_dir: Path, tmp_path: Path, fake_nvml: FakeNvml
) -> None:
    fake_nvml.configure(*(FakeNvml.gpu(f"GPU-fake-{i}") for i in range(4)))
    engine = loaded(
        adapter(),
        model_dir,
        settings=TensorrtConfig(tensor_parallel_size=2, pipeline_parallel_size=2),
    )
    (init,) = events(tmp_path, "init")
    assert init["kwargs"]["tensor_parallel_size"] == 2
    assert init["kwargs"]["pipeline_parallel_size"] == 2
    assert [g.uuid for g in engine.gpus] == [f"GPU-fake-{i}" for i in range(4)]
    assert engine.effective_settings()["pipeline_parallel_size"] == 2


def test_more_pipeline_ranks_than_visible_gpus_is_refused_before_the_build(
    adapter: Adapter, model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(EngineUnavailable, match=r"needs 4 GPU\(s\) but this process sees 2"):
        loaded(
            adapter(),
            model_dir,
            settings=TensorrtConfig(tensor_parallel_size=2, pipeline_parallel_size=2),
        )
    assert not events(tmp_path, "init")


@pytest.mark.parametrize(
    ("key", "use_instead"),
    [
        ("pipeline_parallel_size", "tensorrt.pipeline_parallel_size"),
        ("tensor_parallel_size", "tensorrt.tensor_parallel_size"),
        ("moe_expert_parallel_size", r"\(not supported: the MoE parallel sizes"),
        ("context_parallel_size", r"\(not supported: context parallelism"),
        ("gpus_per_node", r"\(not supported: a cell meters the GPUs of its own host"),
    ],
)
def test_a_gpu_count_engine_arg_is_refused_by_the_engine_too(
    adapter: Adapter, model_dir: Path, tmp_path: Path, key: str, use_instead: str
) -> None:
    # Unvalidated: the schema refuses these first; the engine must not forward them either.
    unchecked = TensorrtConfig.model_construct(engine_args={key: 2})
    with pytest.raises(LlemError, match=rf"'{key}' is set by pytest-llem; use {use_instead}"):
        loaded(adapter(), model_dir, settings=unchecked)
    assert not events(tmp_path, "init")
