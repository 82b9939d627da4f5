"""The fake ``tensorrt_llm.llmapi``: the LLM API surface the engine adapter uses.

Names, fields and behaviours follow TensorRT-LLM 1.x (``tensorrt_llm/llmapi/llm.py``,
``llm_args.py`` and ``tensorrt_llm/sampling_params.py``): unknown ``LLM`` arguments raise
``ValueError("LLM got invalid argument: ...")`` before the args model validates them; a
``SamplingParams`` without ``end_id`` is refused when the tokenizer was skipped; a request that
hits a stop token loses it from ``token_ids`` unless ``include_stop_str_in_output``; with
``ignore_eos`` the end and stop ids do not stop a request. Generation itself is arithmetic: the
token at each step is derived from the prompt ids and the step, so it is deterministic.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

BACKEND = os.environ.get("LLEM_FAKE_TRTLLM_BACKEND", "pytorch")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class QuantAlgo(str, enum.Enum):
    """Quantization recipes (a subset of ``tensorrt_llm.quantization.mode.QuantAlgo``)."""

    W8A16 = "W8A16"
    W4A16 = "W4A16"
    W4A16_AWQ = "W4A16_AWQ"
    W4A8_AWQ = "W4A8_AWQ"
    W4A16_GPTQ = "W4A16_GPTQ"
    W8A8_SQ_PER_CHANNEL = "W8A8_SQ_PER_CHANNEL"
    FP8 = "FP8"
    FP8_PER_CHANNEL_PER_TOKEN = "FP8_PER_CHANNEL_PER_TOKEN"
    FP8_BLOCK_SCALES = "FP8_BLOCK_SCALES"
    INT8 = "INT8"
    NVFP4 = "NVFP4"
    NO_QUANT = "NO_QUANT"


@dataclasses.dataclass
class QuantConfig:
    quant_algo: QuantAlgo | None = None
    kv_cache_quant_algo: QuantAlgo | None = None
    group_size: int = 128


class LoadFormat(enum.Enum):
    AUTO = 0
    DUMMY = 1  # initialise all weights randomly


class KvCacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    free_gpu_memory_fraction: float | None = 0.9
    enable_block_reuse: bool = True
    max_tokens: int | None = None
    dtype: str = "auto"


class BaseLlmArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str
    tokenizer: Any = None
    tokenizer_mode: str = "auto"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    revision: str | None = None
    tokenizer_revision: str | None = None
    pipeline_parallel_size: int = 1
    max_batch_size: int | None = 2048
    max_num_tokens: int | None = 8192
    max_seq_len: int | None = None
    max_beam_width: int = 1
    kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
    enable_chunked_prefill: bool = False
    return_perf_metrics: bool = False
    backend: str | None = None


class TorchLlmArgs(BaseLlmArgs):
    load_format: str | LoadFormat = LoadFormat.AUTO
    disable_overlap_scheduler: bool = False
    attn_backend: str = "TRTLLM"
    enable_trtllm_sampler: bool = False
    print_iter_log: bool = False
    enable_iter_perf_stats: bool = False
    stream_interval: int = 1
    _quant_config: QuantConfig | None = PrivateAttr(default=None)

    @property
    def quant_config(self) -> QuantConfig:
        if self._quant_config is None:
            self._quant_config = QuantConfig()
        return self._quant_config

    @field_validator("load_format", mode="before")
    @classmethod
    def _load_format(cls, value: Any) -> LoadFormat:
        if isinstance(value, LoadFormat):
            return value
        if str(value).upper() not in LoadFormat.__members__:
            raise ValueError(f"Invalid LoadFormat: {value}")
        return LoadFormat[str(value).upper()]


class TrtLlmArgs(BaseLlmArgs):
    quant_config: QuantConfig | None = None
    calib_config: Any = None
    build_config: Any = None
    fast_build: bool = False
    enable_build_cache: Any = False
    embedding_parallel_mode: str = "SHARDING_ALONG_VOCAB"
    workspace: str | None = None


LlmArgs = TorchLlmArgs if BACKEND == "pytorch" else TrtLlmArgs


@dataclasses.dataclass(slots=True, kw_only=True)
class SamplingParams:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    temperature: float | None = None
    min_tokens: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    min_p: float | None = None
    return_perf_metrics: bool = False
    ignore_eos: bool = False
    detokenize: bool = True
    add_special_tokens: bool = True
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.pad_id is None:
            self.pad_id = self.end_id
        self.best_of = self.best_of or self.n


@dataclasses.dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclasses.dataclass
class RequestOutput:
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


class BaseLLM:
    _args_class: type[BaseLlmArgs] = TorchLlmArgs

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        tokenizer_mode: str = "auto",
        skip_tokenizer_init: bool = False,
        trust_remote_code: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        valid = set(self._args_class.model_fields) | {"backend"}
        for key in kwargs:
            if key not in valid:
                raise ValueError(f"{type(self).__name__} got invalid argument: {key}")
        named = {
            "model": str(model),
            "tokenizer": tokenizer,
            "tokenizer_mode": tokenizer_mode,
            "skip_tokenizer_init": skip_tokenizer_init,
            "trust_remote_code": trust_remote_code,
            "tensor_parallel_size": tensor_parallel_size,
            "dtype": dtype,
            "revision": revision,
            "tokenizer_revision": tokenizer_revision,
        }
        self.args = self._args_class(**named, **kwargs)
        _check_weights(self.args)
        time.sleep(float(os.environ.get("LLEM_FAKE_TRTLLM_BUILD_SLEEP", "0")))
        self._next_request_id = 0
        self._executor_alive = True
        _log(
            {
                "event": "init",
                "class": type(self).__name__,
                "kwargs": _jsonable({**named, **kwargs}),
            }
        )

    def generate(
        self,
        inputs: Any,
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: Any = None,
        prompt_adapter_request: Any = None,
        kv_cache_retention_config: Any = None,
        disaggregated_params: Any = None,
        scheduling_params: Any = None,
        cache_salt: Any = None,
    ) -> RequestOutput | list[RequestOutput]:
        if not self._executor_alive:
            raise RuntimeError("LLM is shutting down")
        unbatched = not isinstance(inputs, list) or (
            bool(inputs) and isinstance(inputs[0], int)
        )
        items = [inputs] if unbatched else list(inputs)
        outputs: list[RequestOutput] = []
        used: list[SamplingParams] = []
        for index, item in enumerate(items):
            params = (
                sampling_params[index]
                if isinstance(sampling_params, list)
                else sampling_params
            )
            params = self._prepare_sampling_params(params)
            used.append(params)
            outputs.append(self._run(index, _prompt_ids(item), params))
        longest = max((len(o.outputs[0].token_ids) for o in outputs), default=0)
        waves = math.ceil(len(items) / (self.args.max_batch_size or len(items) or 1))
        time.sleep(
            float(os.environ.get("LLEM_FAKE_TRTLLM_STEP_SLEEP", "0")) * longest * waves
        )
        _log(
            {
                "event": "generate",
                "n": len(items),
                "prompts": [_prompt_ids(item) for item in items],
                "sampling_params": [_jsonable(p) for p in used],
            }
        )
        if os.environ.get("LLEM_FAKE_TRTLLM_SHUFFLE") == "1":
            outputs.reverse()
        return outputs[0] if unbatched else outputs

    def shutdown(self) -> None:
        if self._executor_alive:
            _log({"event": "shutdown"})
        self._executor_alive = False

    def _prepare_sampling_params(self, params: SamplingParams | None) -> SamplingParams:
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise TypeError(
                f"The sampling_params must be type SamplingParams or None, but got {type(params)}"
            )
        if params.end_id is None:
            if self.args.skip_tokenizer_init:
                raise ValueError(
                    "tokenizer is required to reset end_id if it is None, or you can explicitly"
                    " specify the end_id for sampling_params"
                )
            params.end_id = 2
        return params

    def _run(
        self, index: int, prompt: list[int], params: SamplingParams
    ) -> RequestOutput:
        forced = _forced_tokens(index, params)
        ids: list[int] = []
        finish, stop_reason = "length", None
        base = sum(prompt) * 131 + len(prompt) * 17
        for step in range(params.max_tokens):
            token = forced.get(step, 3 + (base + 7919 * (step + 1)) % 997)
            ids.append(token)
            if params.ignore_eos:
                continue
            if token == params.end_id:
                finish = "stop"
                if os.environ.get("LLEM_FAKE_TRTLLM_DROP_END_ID") == "1":
                    ids.pop()
                break
            if params.stop_token_ids and token in params.stop_token_ids:
                finish, stop_reason = "stop", token
                if not params.include_stop_str_in_output:
                    ids.pop()
                break
        request_id = self._next_request_id
        self._next_request_id += 1
        completion = CompletionOutput(
            index=0, token_ids=ids, finish_reason=finish, stop_reason=stop_reason
        )
        return RequestOutput(request_id, None, list(prompt), [completion])


class _TorchLLM(BaseLLM):
    _args_class = TorchLlmArgs


class _TrtLLM(BaseLLM):
    _args_class = TrtLlmArgs


if BACKEND == "pytorch":

    class LLM(_TorchLLM):
        """LLM class is the main class for running a LLM model (PyTorch backend)."""

else:

    class LLM(_TrtLLM):  # type: ignore[no-redef]
        """LLM class is the main class for running a LLM model (TensorRT backend)."""


def _prompt_ids(item: Any) -> list[int]:
    if isinstance(item, list):
        assert item and isinstance(item[0], int)
        return list(item)
    if isinstance(item, dict) and item.get("prompt_token_ids") is not None:
        return list(item["prompt_token_ids"])
    raise TypeError(f"the fake takes token ids only, got {type(item)}")


def _forced_tokens(index: int, params: SamplingParams) -> dict[int, int]:
    """Steps at which this request emits a given token (``LLEM_FAKE_TRTLLM_EOS_AT``)."""
    forced: dict[int, int] = {}
    for entry in filter(None, os.environ.get("LLEM_FAKE_TRTLLM_EOS_AT", "").split(",")):
        target, _, spec = entry.strip().rpartition("@")
        if target and int(target) != index:
            continue
        step, _, token = spec.partition(":")
        forced[int(step)] = (
            int(token)
            if token
            else int(params.end_id if params.end_id is not None else 2)
        )
    return forced


def _check_weights(args: BaseLlmArgs) -> None:
    """A local model directory without weights loads only with ``load_format=dummy``."""
    directory = Path(args.model)
    if not (directory / "config.json").is_file():
        return
    if any(p.name.endswith(WEIGHT_SUFFIXES) for p in directory.iterdir()):
        return
    if getattr(args, "load_format", LoadFormat.AUTO) is not LoadFormat.DUMMY:
        raise FileNotFoundError(f"no weight files in {directory}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _log(event: dict[str, Any]) -> None:
    path = os.environ.get("LLEM_FAKE_TRTLLM_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")
