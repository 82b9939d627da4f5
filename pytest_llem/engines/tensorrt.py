"""The TensorRT-LLM engine: the high-level ``LLM`` API fed with token ids.

Follows the LLM API of TensorRT-LLM 1.x as documented at nvidia.github.io/TensorRT-LLM
(llm-api reference, TorchLlmArgs, SamplingParams) and in its ``llmapi/llm.py`` and
``sampling_params.py``: ``from tensorrt_llm import LLM, SamplingParams``, with ``KvCacheConfig``,
``QuantConfig`` and ``QuantAlgo`` from ``tensorrt_llm.llmapi``. Since 1.0 ``LLM`` runs the PyTorch
backend and checks its keyword arguments against ``TorchLlmArgs``; only the TensorRT-engine
backend (``TrtLlmArgs``) takes ``quant_config``. Verified only against a fake ``tensorrt_llm``.

* Prompts go in as token ids with ``skip_tokenizer_init=True``, so nothing is re-tokenised. The
  LLM API then needs ``end_id``: the first EOS id, the others as ``stop_token_ids`` with
  ``include_stop_str_in_output=True`` (otherwise a stop id is cut from ``token_ids``).
* With ``ignore_eos`` the executor drops ``end_id`` and the stop ids: every request runs
  ``max_tokens`` steps while EOS stays an ordinary token, as in the other engines.
* In-flight batching: a pass is one ``generate`` call, ``max_batch_size`` bounding concurrency.
  KV-cache block reuse is off, or each pass after the first would skip the prefill of prompts
  it has seen (vLLM's prefix caching is off by default for the same reason).
* Only the wall time of ``generate`` is measured: per-token times (TTFT, ITL) would need
  streaming requests, so they are left empty and each request's time is the call's.
"""

from __future__ import annotations

import enum
import gc
import inspect
import time
from typing import Any

import tensorrt_llm
from tensorrt_llm import llmapi

from pytest_llem.config.engines import TENSORRT_GPU_ARGS, TensorrtConfig
from pytest_llem.engines import common, protocol
from pytest_llem.engines.common import PRECISION_DTYPES
from pytest_llem.engines.protocol import BatchResult, LoadRequest
from pytest_llem.errors import EngineUnavailable, LlemError
from pytest_llem.models.loading import is_architecture_only
from pytest_llem.results.measurement import GpuInfo

#: ``LLM`` arguments pytest-llem sets itself, and the study key to use instead.
OWNED_ARGS: dict[str, str] = {
    # What changes how many GPUs run: the meter must see it (the config refuses these already).
    **{key: f"({advice})" for key, advice in TENSORRT_GPU_ARGS.items()},
    "model": "model",
    "dtype": "precision",
    "tensor_parallel_size": "tensorrt.tensor_parallel_size",
    "pipeline_parallel_size": "tensorrt.pipeline_parallel_size",
    "max_batch_size": "tensorrt.max_batch_size",
    "max_num_tokens": "tensorrt.max_num_tokens",
    "kv_cache_config": "tensorrt.kv_cache_free_gpu_memory_fraction",
    "quant_config": "tensorrt.quantization",
    "skip_tokenizer_init": "(always on: prompts are token ids)",
    "tokenizer": "(prompts are token ids)",
    "load_format": "(set by pytest-llem: 'dummy' for an architecture-only model directory)",
}


class TensorrtEngine:
    """:class:`~pytest_llem.engines.protocol.Engine` over TensorRT-LLM's ``LLM.generate``."""

    name = "tensorrt"

    def __init__(self) -> None:
        self._llm: Any = None
        self._request: LoadRequest | None = None
        self._settings = TensorrtConfig()
        self._sampling: Any = None
        self._sampling_used: dict[str, Any] = {}
        self._gpus: list[GpuInfo] = []
        self._parameters: int | None = None
        self._build_time_s = 0.0
        self._engine_args: dict[str, Any] = {}
        self._end_token: int | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self.weights_source = "pretrained"

    def load(self, request: LoadRequest) -> None:
        """Check what the schema cannot know (the escape hatch and quantization against the
        installed LLM, the GPUs), then construct (and time) the ``LLM``, which builds the engine."""
        common.require_gpu_device(self.name, request.device)
        settings = request.section(TensorrtConfig)
        accepted = accepted_llm_arguments()
        engine_args = common.check_engine_args(
            self.name, settings.engine_args, accepted=accepted, owned=OWNED_ARGS
        )
        kwargs: dict[str, Any] = {
            "model": request.model,
            "dtype": PRECISION_DTYPES[request.precision],
            "tensor_parallel_size": settings.tensor_parallel_size,
            "pipeline_parallel_size": settings.pipeline_parallel_size,
            "skip_tokenizer_init": True,
            "kv_cache_config": llmapi.KvCacheConfig(
                free_gpu_memory_fraction=settings.kv_cache_free_gpu_memory_fraction,
                enable_block_reuse=False,
            ),
        }
        if settings.max_batch_size is not None:
            kwargs["max_batch_size"] = settings.max_batch_size
        if settings.max_num_tokens is not None:
            kwargs["max_num_tokens"] = settings.max_num_tokens
        if settings.quantization is not None:
            algo = _quant_algo(settings.quantization)
            if "quant_config" not in accepted:  # 1.x PyTorch LLM: from the checkpoint
                raise LlemError(
                    f"tensorrt.quantization: the installed LLM takes no quant_config"
                    f" ({_installed()}); use a pre-quantized checkpoint and leave it unset"
                )
            kwargs["quant_config"] = llmapi.QuantConfig(quant_algo=algo)
        self.weights_source = "pretrained"
        if is_architecture_only(request.model):
            if "load_format" not in accepted:
                raise EngineUnavailable(
                    f"{request.model} has no weights, and the installed LLM has no"
                    f" load_format to draw random ones ({_installed()})"
                )
            kwargs["load_format"] = "dummy"
            self.weights_source = "random (load_format=dummy)"
        self._sampling_used = _sampling_fields(request)
        eos = request.eos_token_ids
        self._end_token = None if request.ignore_eos or not eos else int(eos[0])
        self._eos_ids = frozenset(int(token) for token in eos)
        sampling = tensorrt_llm.SamplingParams(**self._sampling_used)
        # GPUs are checked before the engine build, which can take minutes.
        gpus = common.engine_gpus(settings.gpu_count)  # one per rank: every GPU it uses is metered
        started = time.perf_counter()
        llm = tensorrt_llm.LLM(**kwargs, **engine_args)
        self._build_time_s = time.perf_counter() - started
        self._llm, self._request, self._settings = llm, request, settings
        self._sampling, self._gpus, self._engine_args = sampling, gpus, engine_args
        self._parameters = None

    @property
    def gpus(self) -> list[GpuInfo]:
        """The first ``tensor_parallel_size x pipeline_parallel_size`` visible GPUs, found at load through NVML."""
        return list(self._gpus)

    @property
    def device_description(self) -> str:
        """``cuda:0 (NVIDIA H100 80GB HBM3)``, several joined with ``+`` under tensor parallelism."""
        return common.describe_gpus_in_words(self._gpus)

    def parameter_count(self) -> int:
        """Counted from the model's config on the meta device (the weights live in workers)."""
        if self._parameters is None:
            model = self._loaded_request().model
            self._parameters = common.parameter_count_from_config(model)
        return self._parameters

    def plan_batches(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        """One batch per pass: the engine batches in flight, up to its ``max_batch_size``."""
        return [list(prompts)] if prompts else []

    def run_batch(self, batch: list[list[int]]) -> BatchResult:
        """One ``generate`` call; it returns once every request has finished on the GPU."""
        request = self._loaded_request()
        if not batch or any(len(ids) == 0 for ids in batch):
            raise LlemError("run_batch needs a non-empty batch of non-empty prompts")
        inputs = [{"prompt_token_ids": list(ids)} for ids in batch]
        start = time.perf_counter()
        outputs = self._llm.generate(
            inputs, sampling_params=self._sampling, use_tqdm=False
        )
        wall = time.perf_counter() - start
        eos, ignore_eos = request.eos_token_ids, request.ignore_eos
        counted = [
            protocol.count_output_tokens(self._generated_ids(output), eos, ignore_eos)
            for output in _in_request_order(list(outputs), batch)
        ]
        return BatchResult.untimed(counted, wall)

    def version(self) -> str | None:
        """The installed tensorrt_llm version."""
        return str(tensorrt_llm.__version__)

    def effective_settings(self) -> dict[str, Any]:
        """Settings in force, read back from ``llm.args`` where the API exposes them."""
        request = self._loaded_request()
        args = getattr(self._llm, "args", None)
        chosen = self._settings
        kv = _read(args, "kv_cache_config", None)
        in_force = {
            "backend": _read(args, "backend", None),
            "dtype": _read(args, "dtype", PRECISION_DTYPES[request.precision]),
            "tensor_parallel_size": _read(
                args, "tensor_parallel_size", chosen.tensor_parallel_size
            ),
            "pipeline_parallel_size": _read(
                args, "pipeline_parallel_size", chosen.pipeline_parallel_size
            ),
            "max_batch_size": _read(args, "max_batch_size", chosen.max_batch_size),
            "max_num_tokens": _read(args, "max_num_tokens", chosen.max_num_tokens),
            "kv_cache_free_gpu_memory_fraction": _read(
                kv, "free_gpu_memory_fraction", chosen.kv_cache_free_gpu_memory_fraction
            ),
            "kv_cache_block_reuse": _read(kv, "enable_block_reuse", False),
            "quantization": _read(
                _read(args, "quant_config", None), "quant_algo", chosen.quantization
            ),
            "load_format": _read(args, "load_format", None),
            "engine_args": self._engine_args,
            "sampling_params": self._sampling_used,
        }
        eos_handling = (
            "ignore_eos: end_id and stop ids ignored, every request runs max_tokens steps"
            if request.ignore_eos
            else "stop at end_id or any stop_token_ids; counted up to and including it"
        )
        return {
            **_plain(in_force),
            "llm": _installed(),
            "skip_tokenizer_init": True,
            "build_time_s": self._build_time_s,
            "weights": self.weights_source,
            "cuda_visible_devices": common.cuda_visible_devices(),
            "device": self.device_description,
            "scheduling": "in-flight batching: one generate() per pass, up to max_batch_size",
            "eos_handling": eos_handling,
            "latency": "generate() wall time only; TTFT/ITL would need streaming requests",
        }

    def peak_memory_bytes(self) -> int | None:
        """None: the engine preallocates its KV cache; resident memory comes from NVML."""
        return None

    def release(self) -> None:
        """Shut the executor and its workers down, then drop every reference."""
        llm, self._llm, self._sampling = self._llm, None, None
        if llm is not None and callable(getattr(llm, "shutdown", None)):
            llm.shutdown()
        del llm
        gc.collect()

    def _loaded_request(self) -> LoadRequest:
        if self._llm is None or self._request is None:
            raise LlemError("the tensorrt engine has no model loaded; load() it first")
        return self._request

    def _generated_ids(self, output: Any) -> list[int]:
        """The generated ids of one request, with the end token it stopped on.

        A request that finished on ``end_id`` reports ``finish_reason == "stop"`` and no
        ``stop_reason``; builds differ in whether that token is in ``token_ids``, and the count
        includes it in every engine, so it is put back when missing.
        """
        completion = output.outputs[0]
        ids = [int(token) for token in completion.token_ids]
        stopped = completion.finish_reason == "stop" and completion.stop_reason is None
        # A stop id kept at the end (include_stop_str_in_output) means the request stopped on
        # it, even where the build left stop_reason unset: then nothing is missing.
        ends_on_eos = bool(ids) and ids[-1] in self._eos_ids
        if self._end_token is not None and stopped and not ends_on_eos:
            ids.append(self._end_token)
        return ids


def accepted_llm_arguments() -> set[str]:
    """Keyword names the installed ``LLM`` accepts: its signature plus its args-class fields.

    ``LLM.__init__`` names a few arguments and takes the rest as ``**kwargs``, which it checks
    against the pydantic fields of its args class (``TorchLlmArgs`` for the PyTorch-backend
    ``LLM`` of 1.x, ``TrtLlmArgs``/``LlmArgs`` for the TensorRT-engine one).
    """
    llm_class = tensorrt_llm.LLM
    params = list(inspect.signature(llm_class).parameters.values())
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return names
    torch_llm = "_TorchLLM" in {cls.__name__ for cls in inspect.getmro(llm_class)}
    for candidate in ("TorchLlmArgs",) if torch_llm else ("TrtLlmArgs", "LlmArgs"):
        args_class = getattr(llmapi, candidate, None)
        fields = getattr(args_class, "model_fields", None)  # pydantic; else a dataclass
        found = set(fields or ()) or common.dataclass_field_names(args_class)
        if found:
            return names | found
    return names


def _quant_algo(name: str) -> Any:
    """The ``QuantAlgo`` member named ``name``, case-insensitively."""
    members = list(llmapi.QuantAlgo)
    for member in members:
        if member.name.lower() == name.lower():
            return member
    known = ", ".join(member.name for member in members)
    raise LlemError(
        f"tensorrt.quantization {name!r} is not a TensorRT-LLM QuantAlgo; known: {known}"
    )


def _sampling_fields(request: LoadRequest) -> dict[str, Any]:
    """``SamplingParams`` keywords: the shared decoding settings and the EOS rule.

    ``temperature=0`` is greedy in the LLM API; sampling sets every knob, ``top_k=0`` meaning
    no top-k. ``repetition_penalty`` is passed only when it does something, since setting it
    turns the penalty kernels on.
    """
    decoding = request.decoding
    eos = list(request.eos_token_ids)
    # Without EOS ids, end_id -1: no end token (the executor's own convention).
    fields: dict[str, Any] = {
        "max_tokens": request.max_output_tokens,
        "end_id": eos[0] if eos else -1,
        "ignore_eos": request.ignore_eos,
        "seed": decoding.seed,
    }
    if request.pad_token_id is not None:
        fields["pad_id"] = request.pad_token_id
    if not request.ignore_eos and len(eos) > 1:
        fields["stop_token_ids"] = eos[1:]
        fields["include_stop_str_in_output"] = True
    if decoding.temperature > 0:
        fields.update(
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            top_k=decoding.top_k if decoding.top_k is not None else 0,
        )
    else:
        fields["temperature"] = 0.0
    if decoding.repetition_penalty != 1.0:
        fields["repetition_penalty"] = decoding.repetition_penalty
    if "detokenize" in common.dataclass_field_names(tensorrt_llm.SamplingParams):
        fields["detokenize"] = False
    return fields


def _in_request_order(outputs: list[Any], batch: list[list[int]]) -> list[Any]:
    """Outputs matched to the prompts: as returned, else sorted by request id, else an error."""
    for candidate in (outputs, sorted(outputs, key=lambda o: int(o.request_id))):
        if [list(o.prompt_token_ids) for o in candidate] == batch:
            return candidate
    raise LlemError(
        f"generate returned {len(outputs)} outputs not matching {len(batch)} prompts"
    )


def _installed() -> str:
    llm_class = tensorrt_llm.LLM
    return (
        f"{llm_class.__module__}.{llm_class.__qualname__}, {tensorrt_llm.__version__}"
    )


def _read(source: Any, name: str, default: Any) -> Any:
    value = getattr(source, name, None) if source is not None else None
    return default if value is None else value


def _plain(value: Any) -> Any:
    """JSON-ready: enums by name, containers element-wise, other objects as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
