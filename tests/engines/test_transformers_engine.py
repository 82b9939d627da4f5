"""The transformers engine, run for real on the embedded llem-tiny model on the CPU.

The checks that matter for the figures: batching with left padding changes no token, pads and
tokens after EOS are never counted, and ``ignore_eos`` really runs every request to full length
even when the model emits its own EOS token.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_llem.config.engines import TransformersConfig, VllmConfig
from pytest_llem.config.experiment import DecodingConfig, ExperimentConfig
from pytest_llem.engines.latency import batch_latencies
from pytest_llem.engines.protocol import LoadRequest, count_output_tokens
from pytest_llem.engines.registry import create_engine
from pytest_llem.engines.transformers import TransformersEngine, _StepTimer
from pytest_llem.errors import EngineUnavailable, LlemError
from pytest_llem.models.tiny import read_stamp, resolve_model

EOS = 1  # the byte tokenizer's EOS
PAD = 0

# Prompts of different lengths, so a batch needs real left padding.
PROMPTS = [
    [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100],
    [87, 104, 121],
    [69, 120, 112, 108, 97, 105, 110, 32, 114, 101, 99, 117, 114, 115, 105, 111, 110, 46, 32, 80],
    [65],
    [84, 101, 108, 108, 32, 109, 101, 32, 97],
]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLEM_CACHE_DIR", str(tmp_path_factory.mktemp("llem-cache")))
        yield resolve_model("llem-tiny")


def request_for(model: str, **overrides: Any) -> LoadRequest:
    values: dict[str, Any] = {
        "model": model,
        "precision": "fp32",
        "settings": TransformersConfig(batch_size=1),
        "decoding": DecodingConfig(),
        "max_output_tokens": 16,
        "ignore_eos": True,
        "eos_token_ids": (EOS,),
        "pad_token_id": PAD,
        "device": "cpu",
    }
    values.update(overrides)
    return LoadRequest(**values)


def loaded(model: str, **overrides: Any) -> TransformersEngine:
    engine = TransformersEngine()
    engine.load(request_for(model, **overrides))
    return engine


def run_all(engine: TransformersEngine, prompts: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for batch in engine.plan_batches(prompts):
        out.extend(engine.run_batch(batch).output_token_ids)
    return out


@pytest.fixture(scope="module")
def greedy_alone(model_path: str) -> list[list[int]]:
    """Each prompt generated on its own (no padding at all), the reference for parity."""
    return run_all(loaded(model_path, max_output_tokens=24), PROMPTS)


# -- count_output_tokens (the contract the engine relies on) ---------------------------------


@pytest.mark.parametrize(
    ("generated", "eos", "ignore_eos", "expected"),
    [
        ([5, 6, 1, 0, 0], (1,), False, [5, 6, 1]),
        ([5, 1, 6, 1, 7], (1,), False, [5, 1]),
        ([1, 0, 0], (1,), False, [1]),
        ([5, 6, 7], (1,), False, [5, 6, 7]),
        ([5, 9, 6, 1], (1, 9), False, [5, 9]),
        ([5, 1, 0, 0], (1,), True, [5, 1, 0, 0]),
        ([5, 6], (), False, [5, 6]),
    ],
)
def test_count_output_tokens(generated: list[int], eos: tuple[int, ...], ignore_eos: bool, expected: list[int]) -> None:
    assert count_output_tokens(generated, eos, ignore_eos) == expected


# -- generation ------------------------------------------------------------------------------


def test_batched_left_padded_generation_matches_running_alone(
    model_path: str, greedy_alone: list[list[int]]
) -> None:
    engine = loaded(model_path, max_output_tokens=24, settings=TransformersConfig(batch_size=len(PROMPTS)))
    batched = run_all(engine, PROMPTS)
    assert batched == greedy_alone
    # not vacuous: the random model produces varied text, different per prompt
    assert all(len(set(row)) > 4 for row in greedy_alone)
    assert len({tuple(row) for row in greedy_alone}) == len(PROMPTS)


def test_uneven_batches_keep_order_and_tokens(model_path: str, greedy_alone: list[list[int]]) -> None:
    engine = loaded(model_path, max_output_tokens=24, settings=TransformersConfig(batch_size=2))
    assert [len(b) for b in engine.plan_batches(PROMPTS)] == [2, 2, 1]
    assert engine.plan_batches(PROMPTS)[0] == PROMPTS[:2]
    assert run_all(engine, PROMPTS) == greedy_alone


def test_ignore_eos_runs_to_full_length_even_when_the_model_emits_eos(
    model_path: str, greedy_alone: list[list[int]], tmp_path: Path
) -> None:
    """Declare as EOS a token the model is known to emit early, in the request *and* in the
    checkpoint's own config files, so no transformers fallback could bring it back."""
    emitted = greedy_alone[0][2]
    patched = tmp_path / "model"
    shutil.copytree(model_path, patched)
    for name in ("config.json", "generation_config.json"):
        config = json.loads((patched / name).read_text())
        config["eos_token_id"] = emitted
        (patched / name).write_text(json.dumps(config))
    engine = loaded(
        str(patched), max_output_tokens=24, settings=TransformersConfig(batch_size=len(PROMPTS)), eos_token_ids=(emitted,)
    )
    result = engine.run_batch(PROMPTS)
    assert [len(row) for row in result.output_token_ids] == [24] * len(PROMPTS)
    assert result.output_token_ids == greedy_alone
    assert result.output_token_ids[0][2] == emitted  # it was emitted, and generation went on
    assert engine.effective_settings()["generation"]["eos_token_id"] is None


def test_without_ignore_eos_counting_stops_at_the_first_eos(
    model_path: str, greedy_alone: list[list[int]]
) -> None:
    """Row 0 meets its EOS early; the others run on, so row 0 is padded in the raw output."""
    emitted = greedy_alone[0][2]
    assert emitted not in greedy_alone[0][:2]
    engine = loaded(
        model_path,
        max_output_tokens=24,
        settings=TransformersConfig(batch_size=len(PROMPTS)),
        ignore_eos=False,
        eos_token_ids=(emitted,),
    )
    batched = engine.run_batch(PROMPTS).output_token_ids
    assert batched[0] == greedy_alone[0][:3]  # up to and including EOS, no pads after it
    for row, reference in zip(batched, greedy_alone):
        expected = count_output_tokens(reference, (emitted,), ignore_eos=False)
        assert row == expected
        assert emitted not in row[:-1]  # nothing counted after an EOS
    assert any(len(row) == 24 for row in batched)  # the batch itself ran on past row 0's EOS
    # the same request alone stops there too
    alone = loaded(model_path, max_output_tokens=24, ignore_eos=False, eos_token_ids=(emitted,))
    assert alone.run_batch([PROMPTS[0]]).output_token_ids == [greedy_alone[0][:3]]


def test_sampling_is_reproducible_per_seed(model_path: str) -> None:
    decoding = DecodingConfig(temperature=0.9, top_p=0.95, top_k=None, seed=7)
    engine = loaded(model_path, decoding=decoding, settings=TransformersConfig(batch_size=3))
    first = engine.run_batch(PROMPTS[:3]).output_token_ids
    assert engine.run_batch(PROMPTS[:3]).output_token_ids == first
    other = loaded(model_path, decoding=DecodingConfig(temperature=0.9, top_p=0.95, seed=8), settings=TransformersConfig(batch_size=3))
    assert other.run_batch(PROMPTS[:3]).output_token_ids != first
    generation = engine.effective_settings()["generation"]
    assert generation["do_sample"] is True
    assert generation["top_k"] == 0  # "no top-k", not transformers' silent default of 50
    assert generation["temperature"] == 0.9


def test_bf16_on_cpu(model_path: str) -> None:
    engine = loaded(model_path, precision="bf16", settings=TransformersConfig(batch_size=3), max_output_tokens=8)
    result = engine.run_batch(PROMPTS[:3])
    assert [len(row) for row in result.output_token_ids] == [8, 8, 8]
    assert engine.effective_settings()["dtype"] == "torch.bfloat16"


def test_fp16_on_cpu_is_refused_before_loading(model_path: str) -> None:
    """A first user's fp16 cell on a CPU spent 244 s in warm-up: torch has no fast fp16 there."""
    with pytest.raises(EngineUnavailable, match="precision fp16 on the CPU.*use fp32 or bf16 on a CPU"):
        loaded(model_path, precision="fp16", settings=TransformersConfig(batch_size=3), max_output_tokens=8)


def test_result_timing_and_shapes(model_path: str) -> None:
    engine = loaded(model_path, settings=TransformersConfig(batch_size=4), max_output_tokens=4)
    result = engine.run_batch(PROMPTS[:4])
    assert result.wall_time_s > 0
    assert len(result.per_request_time_s) == 4
    assert all(0 < t <= result.wall_time_s for t in result.per_request_time_s)
    assert all(isinstance(t, int) for row in result.output_token_ids for t in row)


# -- latency figures -------------------------------------------------------------------------

EPSILON = 1e-9


def test_batch_latencies_from_step_times() -> None:
    figures = batch_latencies(10.0, [10.5, 10.7, 11.0, 11.6], [4, 1, 2])
    assert figures.ttft_s == pytest.approx([0.5, 0.5, 0.5])
    assert figures.end_to_end_s == pytest.approx([1.6, 0.5, 0.7])
    # request 0: three gaps; request 1: none; request 2: one
    assert figures.itl_s == pytest.approx([0.2, 0.3, 0.6, 0.2])


@pytest.mark.parametrize(
    ("steps", "lengths", "message"),
    [
        ([1.0, 2.0], [3], "only 2 steps were timed"),
        ([1.0, 2.0], [0], "at least one counted token"),
        ([2.0, 1.0], [2], "must not decrease"),
    ],
)
def test_batch_latencies_refuses_inconsistent_input(steps: list[float], lengths: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batch_latencies(0.0, steps, lengths)


def test_step_timer_sees_one_put_per_generated_position_of_a_batch(model_path: str) -> None:
    """A plain BaseStreamer takes a whole batch (the batch-size-1 check is TextStreamer's), and
    generate calls put once with the prompt, then once per generated position."""
    engine = loaded(model_path, settings=TransformersConfig(batch_size=3), max_output_tokens=7)
    model = engine._loaded()
    timer = _StepTimer()
    ids = torch.tensor([[PAD, 72, 101], [87, 104, 121]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    output = model.generate(
        input_ids=ids, attention_mask=mask, generation_config=model.generation_config, streamer=timer
    )
    assert output.shape[1] - ids.shape[1] == 7
    assert len(timer.step_times) == 7
    assert timer.step_times == sorted(timer.step_times)
    assert timer.ended


def test_latency_figures_with_ignore_eos(model_path: str) -> None:
    batch_size, max_tokens = 4, 6
    engine = loaded(model_path, settings=TransformersConfig(batch_size=batch_size), max_output_tokens=max_tokens)
    result = engine.run_batch(PROMPTS[:batch_size])
    wall = result.wall_time_s
    assert len(result.ttft_s) == batch_size
    assert all(t > 0 for t in result.ttft_s)
    assert len(result.per_request_time_s) == batch_size
    for ttft, e2e in zip(result.ttft_s, result.per_request_time_s):
        assert ttft <= e2e <= wall + EPSILON
    assert len(result.itl_s) == batch_size * (max_tokens - 1)
    assert all(gap >= 0 for gap in result.itl_s)
    # each request's gaps add up to the time from its first token to its last
    for index, (ttft, e2e) in enumerate(zip(result.ttft_s, result.per_request_time_s)):
        gaps = result.itl_s[index * (max_tokens - 1) : (index + 1) * (max_tokens - 1)]
        assert ttft + sum(gaps) == pytest.approx(e2e, abs=1e-9)


def test_a_request_that_stops_at_eos_ends_before_its_batch(
    model_path: str, greedy_alone: list[list[int]]
) -> None:
    """Row 0 meets its EOS at its third token while other rows run all 24 steps: its result is
    ready at step 3, well before the batch's generate returns."""
    emitted = greedy_alone[0][2]
    engine = loaded(
        model_path,
        max_output_tokens=24,
        settings=TransformersConfig(batch_size=len(PROMPTS)),
        ignore_eos=False,
        eos_token_ids=(emitted,),
    )
    result = engine.run_batch(PROMPTS)
    lengths = [len(row) for row in result.output_token_ids]
    assert lengths[0] == 3
    longest = lengths.index(24)  # the batch ran on past row 0's EOS
    e2e = result.per_request_time_s
    assert e2e[0] < e2e[longest] <= result.wall_time_s + EPSILON
    assert e2e[0] < result.wall_time_s
    # gaps are over counted tokens only, per request in batch order
    assert len(result.itl_s) == sum(n - 1 for n in lengths)
    offsets = [sum(n - 1 for n in lengths[:i]) for i in range(len(lengths))]
    own_gaps = [result.itl_s[offsets[i] : offsets[i] + lengths[i] - 1] for i in range(len(lengths))]
    for index, gaps in enumerate(own_gaps):
        # end-to-end is the step time of the request's own last counted token
        assert result.ttft_s[index] + sum(gaps) == pytest.approx(e2e[index], abs=1e-9)
    # a static batch shares its steps: row 0's two gaps are the batch's first two
    assert own_gaps[0] == own_gaps[longest][:2]
    assert len(set(result.ttft_s)) == 1


def test_latency_falls_back_to_wall_time_when_steps_are_not_timed(
    model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a transformers release stream differently, no figure is made up."""
    monkeypatch.setattr(_StepTimer, "put", lambda self, value: None)
    engine = loaded(model_path, settings=TransformersConfig(batch_size=2), max_output_tokens=4)
    result = engine.run_batch(PROMPTS[:2])
    assert result.per_request_time_s == [result.wall_time_s] * 2
    assert result.ttft_s == [] and result.itl_s == []
    assert [len(row) for row in result.output_token_ids] == [4, 4]


# -- what the engine reports -----------------------------------------------------------------


def test_reports_after_load(model_path: str) -> None:
    engine = loaded(model_path, settings=TransformersConfig(batch_size=2, attn_implementation="eager"))
    assert engine.name == "transformers"
    assert engine.gpus == []
    assert engine.device_description == "cpu"
    assert engine.peak_memory_bytes() is None
    stamp = read_stamp(Path(model_path))
    assert stamp is not None
    assert engine.parameter_count() == stamp["parameter_count"]
    import transformers

    assert engine.version() == transformers.__version__
    settings = engine.effective_settings()
    assert settings["batch_size"] == 2
    assert settings["attn_implementation"] == "eager"
    assert settings["use_cache"] is True
    assert settings["torch_compile"] is False
    assert settings["dtype"] == "torch.float32"
    assert settings["device"] == "cpu"
    assert settings["torch_version"] == torch.__version__
    generation = settings["generation"]
    assert generation["do_sample"] is False
    assert generation["max_new_tokens"] == 16
    assert generation["temperature"] is None and generation["top_k"] is None
    json.dumps(settings)  # goes into effective_config.json as is


def test_release_frees_the_model(model_path: str) -> None:
    engine = loaded(model_path)
    engine.release()
    with pytest.raises(LlemError, match="no model loaded"):
        engine.run_batch([PROMPTS[0]])


def test_pad_falls_back_to_eos(model_path: str, greedy_alone: list[list[int]]) -> None:
    engine = loaded(model_path, pad_token_id=None, max_output_tokens=24, settings=TransformersConfig(batch_size=5))
    assert engine.effective_settings()["generation"]["pad_token_id"] == EOS
    assert run_all(engine, PROMPTS) == greedy_alone


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (TransformersConfig, {"batch_sise": 4}, "batch_sise\n  Extra inputs are not permitted"),
        (TransformersConfig, {"batch_size": 0}, "batch_size\n  Input should be greater than or equal to 1"),
        (TransformersConfig, {"batch_size": True}, "batch_size\n  Input should be a valid integer"),
        (TransformersConfig, {"use_cache": "yes"}, "use_cache\n  Input should be a valid boolean"),
        (ExperimentConfig, {"precision": "int4"}, "precision\n  Input should be 'fp32', 'fp16' or 'bf16'"),
        (ExperimentConfig, {"max_output_tokens": 0}, "max_output_tokens\n  Input should be greater than or equal to 1"),
    ],
)
def test_bad_settings_are_refused_by_the_schema(model: type[BaseModel], values: dict[str, Any], message: str) -> None:
    """The engine trusts its section: a bad setting is refused once, where the study is read."""
    with pytest.raises(ValidationError, match=message):
        model.model_validate(values)


def test_another_engines_section_is_refused_before_loading(model_path: str) -> None:
    with pytest.raises(LlemError, match="the transformers engine was given the vllm section VllmConfig, not its own"):
        loaded(model_path, settings=VllmConfig())


def test_an_unknown_device_is_refused_before_loading(model_path: str) -> None:
    with pytest.raises(LlemError, match="device must be"):
        loaded(model_path, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_fails_rather_than_running_on_cpu(model_path: str) -> None:
    with pytest.raises(EngineUnavailable, match="sees no CUDA device"):
        loaded(model_path, device="cuda")


def test_empty_batch_is_refused(model_path: str) -> None:
    engine = loaded(model_path)
    with pytest.raises(LlemError, match="non-empty"):
        engine.run_batch([])
    with pytest.raises(LlemError, match="non-empty"):
        engine.run_batch([[5], []])


# -- registry --------------------------------------------------------------------------------


def test_registry_creates_the_transformers_engine() -> None:
    assert isinstance(create_engine("transformers"), TransformersEngine)


@pytest.mark.parametrize(("name", "module"), [("vllm", "vllm"), ("tensorrt", "tensorrt_llm")])
def test_registry_names_the_extra_when_an_engine_package_is_missing(
    name: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # an import of it now raises ImportError
    monkeypatch.delitem(sys.modules, f"pytest_llem.engines.{name}", raising=False)
    with pytest.raises(EngineUnavailable, match=rf"the {name} engine cannot be imported .*pytest-llem\[{name}\]"):
        create_engine(name)


def test_registry_unknown_engine() -> None:
    with pytest.raises(EngineUnavailable, match="unknown engine 'onnx'"):
        create_engine("onnx")


def test_registry_names_the_extra_when_torch_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pytest_llem.engines.transformers")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails as if not installed
    with pytest.raises(EngineUnavailable, match=r'pip install "pytest-llem\[transformers\]"'):
        create_engine("transformers")


def test_registry_lets_other_import_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our own adapter failing to import is a bug to see, not an engine to skip."""
    monkeypatch.setitem(sys.modules, "pytest_llem.engines.transformers", None)
    with pytest.raises(ModuleNotFoundError):
        create_engine("transformers")


def test_request_latencies_time_each_request_on_its_own_clock() -> None:
    """Continuous batching: the second request started late and stopped at its EOS (2 counted)."""
    from pytest_llem.engines.latency import request_latencies

    got = request_latencies(10.0, [[10.5, 10.75, 11.0], [11.5, 12.0, 12.5]], [3, 2])
    assert got.ttft_s == [0.5, 1.5]
    assert got.itl_s == [0.25, 0.25, 0.5]
    assert got.end_to_end_s == [1.0, 2.0]
    with pytest.raises(ValueError, match="only 1 were timed"):
        request_latencies(0.0, [[1.0]], [2])
    with pytest.raises(ValueError, match="2 requests timed but 1 counted"):
        request_latencies(0.0, [[1.0], [1.0]], [1])
