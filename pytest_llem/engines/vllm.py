"""The vLLM engine: offline ``vllm.LLM`` fed the measurement loop's token ids.

Written against vLLM 0.26 (V1 engine) and run on an H100 with it. Choices that keep vLLM's
figures comparable with the other engines:

* **Same inputs.** The tokenizer is never initialised (``skip_tokenizer_init``); prompts go in
  as ``{"prompt_token_ids": [...]}``, the ids the loop tokenised and truncated once for every
  engine, and nothing is detokenised (``detokenize=False``).
* **Same stopping.** Every id the loop counts as EOS (the tokenizer's and the generation
  config's) is passed as ``stop_token_ids``; vLLM adds the model config's EOS ids itself, which
  are among them. vLLM keeps the stop token in the output, so it counts, as in transformers.
  ``ignore_eos`` is vLLM's own: generation runs to ``max_tokens``.
* **The study's sampling, exactly.** Explicit ``SamplingParams`` are always passed, so a model's
  ``generation_config.json`` cannot change temperature or top-p (``generation_config="vllm"``
  also keeps vLLM's own defaults neutral). The seed is the engine's (``LLM(seed=...)``), not a
  per-request one: per-request seeds send vLLM's sampler down a slow per-row path.
* **Prefix caching off by default**: the measured window repeats the same prompts, and a cache
  would skip their prefill after the first pass.
* **Architecture-only models** (a config without weights) load with ``load_format="dummy"``:
  random weights, no download; energy per token does not depend on weight values.
* **Per-token timing** (``vllm.token_timing``, default on): requests are added to the engine and
  it is stepped here, as ``LLM.generate`` does internally, but with ``RequestOutputKind.DELTA``
  so each step reports its new tokens; each token is stamped with the host time its step
  returned. That is the same definition as the transformers engine's. Off, the batch runs
  through plain ``LLM.generate`` and only end-to-end latency (the batch's) is recorded.
* **GPUs**: vLLM uses the first ``tensor_parallel_size x pipeline_parallel_size`` visible GPUs
  (one per rank); their UUIDs come from NVML before vLLM starts, so this process never creates a
  CUDA context of its own, and the meter reads every one of them. Arguments that would make vLLM
  use more GPUs (data parallelism, context parallelism, several nodes) are refused in
  ``engine_args`` (:data:`~pytest_llem.config.engines.VLLM_GPU_ARGS`).

The whole pass is one ``generate`` call: vLLM schedules the requests itself (continuous
batching), with ``max_num_seqs`` bounding how many run at once.
"""

from __future__ import annotations

import gc
import inspect
import itertools
import os
import re
import time
from typing import Any

import vllm
from vllm import LLM, SamplingParams
from vllm.engine.arg_utils import EngineArgs
from vllm.sampling_params import RequestOutputKind

from pytest_llem.config.engines import VLLM_GPU_ARG_PREFIXES, VLLM_GPU_ARGS, VllmConfig, gpu_arg_advice
from pytest_llem.engines.common import (
    PRECISION_DTYPES,
    check_engine_args,
    cuda_visible_devices,
    dataclass_field_names,
    describe_gpus_in_words,
    engine_gpus,
    parameter_count_from_config,
    require_gpu_device,
)
from pytest_llem.engines.latency import request_latencies
from pytest_llem.engines.protocol import (
    CELL_LOG_VARIABLE,
    BatchResult,
    LoadRequest,
    count_output_tokens,
)
from pytest_llem.engines.unused_kernels import vllm_unused_kernels
from pytest_llem.errors import LlemError
from pytest_llem.models.loading import is_architecture_only
from pytest_llem.results.measurement import GpuInfo

#: Arguments pytest-llem sets itself, and the study key to use instead of engine_args.
OWNED_ARGS: dict[str, str] = {
    "model": "model",
    "dtype": "precision",
    "seed": "decoding.seed",
    "skip_tokenizer_init": "(always on: prompts are token ids)",
    "tokenizer": "(prompts are token ids; no tokenizer is loaded)",
    "generation_config": "(always 'vllm': the study's decoding settings apply, not the checkpoint's)",
    # What changes how many GPUs run: the meter must see it (the config refuses these already).
    **{key: f"({advice})" for key, advice in VLLM_GPU_ARGS.items()},
    "tensor_parallel_size": "vllm.tensor_parallel_size",
    "pipeline_parallel_size": "vllm.pipeline_parallel_size",
}


def owned_args(engine_args: dict[str, Any]) -> dict[str, str]:
    """:data:`OWNED_ARGS`, plus any ``data_parallel_*`` key among ``engine_args`` (a prefix, not a list)."""
    by_prefix = {
        key: f"({advice})"
        for key in engine_args
        if key not in OWNED_ARGS and (advice := gpu_arg_advice(key, {}, VLLM_GPU_ARG_PREFIXES)) is not None
    }
    return {**OWNED_ARGS, **by_prefix}


#: How vLLM 0.26's workers log their attention backend (vllm/platforms/cuda.py): an automatic
#: choice, or one forced by configuration. The choice is made inside the worker process and is
#: not visible on ``LLM``.
_BACKEND_LINES = (
    re.compile(r"Using (\w+) attention backend out of potential backends"),
    re.compile(r"\] Using (?:AttentionBackendEnum\.)?(\w+) backend\.$"),
)


def logged_attention_backends(log_path: str | None) -> list[str] | None:
    """The attention backends vLLM's workers said they use, in order of first mention.

    None when there is no log to read or it names none (a vLLM that logs differently): the
    record then says "unknown" rather than guessing. Several names mean several backends are in
    use, e.g. workers that differ, or a model (or draft model) with more than one kind of layer.
    """
    if not log_path:
        return None
    names: list[str] = []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            for line in log:
                if "backend" not in line:  # cheap filter: the log of a long start can be large
                    continue
                for pattern in _BACKEND_LINES:
                    if match := pattern.search(line.rstrip()):
                        names.append(match.group(1))
    except OSError:
        return None
    return list(dict.fromkeys(names)) or None


def _backend_name(value: Any) -> str | None:
    """``AttentionBackendEnum.FLASH_ATTN`` (or its str) -> ``FLASH_ATTN``."""
    if value is None:
        return None
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1]


def llm_kwargs(settings: VllmConfig) -> dict[str, Any]:
    """The section's settings as ``vllm.LLM`` keywords; unset optional ones are left to vLLM."""
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enforce_eager": settings.enforce_eager,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "kv_cache_dtype": settings.kv_cache_dtype,
    }
    optional = {
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "enable_chunked_prefill": settings.enable_chunked_prefill,
        "quantization": settings.quantization,
        "block_size": settings.block_size,
        "attention_backend": settings.attention_backend,
    }
    kwargs.update({key: value for key, value in optional.items() if value is not None})
    if settings.pipeline_parallel_size != 1:  # 1 is vLLM's own default
        kwargs["pipeline_parallel_size"] = settings.pipeline_parallel_size
    return kwargs


def accepted_llm_args() -> set[str]:
    """What the installed vLLM's ``LLM(...)`` takes: its own keywords and every EngineArgs field."""
    own = {
        name
        for name, parameter in inspect.signature(LLM.__init__).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)
    }
    return own | dataclass_field_names(EngineArgs)


def vllm_environment() -> dict[str, str]:
    """``VLLM_*`` variables in force: they change vLLM's behaviour (attention backend, workers).

    Names that look like credentials are listed with their value withheld.
    """
    secret = ("KEY", "TOKEN", "SECRET", "PASSWORD")
    return {
        name: "<withheld>" if any(word in name for word in secret) else value
        for name, value in sorted(os.environ.items())
        if name.startswith("VLLM_")
    }


class VllmEngine:
    """:class:`~pytest_llem.engines.protocol.Engine` over vLLM's offline ``LLM``."""

    name = "vllm"

    def __init__(self) -> None:
        self._llm: Any = None
        self._request: LoadRequest | None = None
        self._settings = VllmConfig()
        self._sampling: Any = None
        self._gpus: list[GpuInfo] = []
        self._kwargs: dict[str, Any] = {}
        self._start_time_s: float | None = None
        self._parameters: int | None = None
        self._ids = itertools.count()
        self._skipped_kernels: dict[str, str] = {}

    def load(self, request: LoadRequest) -> None:
        """Start vLLM on the cell's GPUs (compilation and CUDA graph capture happen here)."""
        require_gpu_device(self.name, request.device)
        settings = request.section(VllmConfig)
        # In name order, so the record (passed_to_llm) and a refusal naming several keys do not
        # depend on the order the study file wrote them in.
        engine_args = dict(sorted(settings.engine_args.items()))
        extra = check_engine_args(self.name, engine_args, accepted=accepted_llm_args(), owned=owned_args(engine_args))
        gpus = engine_gpus(settings.gpu_count)  # one per rank: every GPU vLLM uses is metered
        kwargs: dict[str, Any] = {
            "model": request.model,
            "dtype": PRECISION_DTYPES[request.precision],
            "seed": request.decoding.seed,
            "skip_tokenizer_init": True,
            "generation_config": "vllm",
            **llm_kwargs(settings),
        }
        if is_architecture_only(request.model):
            if extra.get("load_format", "dummy") != "dummy":
                raise LlemError(
                    f"{request.model} has a config but no weights, so it can only load with"
                    f" load_format 'dummy', not {extra['load_format']!r}"
                )
            kwargs["load_format"] = "dummy"
        kwargs.update(extra)
        # Before the engine starts: vLLM's own checks of the sampling settings (a temperature
        # above 2, say) fail in a second here rather than after minutes of start-up.
        sampling = self._sampling_params(request, settings.token_timing)
        # Set in this process before vLLM reads it; its engine-core and worker processes inherit it.
        self._skipped_kernels = vllm_unused_kernels(request.decoding) if request.skip_unused_kernels else {}
        started = time.perf_counter()
        self._llm = LLM(**kwargs)
        self._start_time_s = time.perf_counter() - started
        self._kwargs = kwargs
        self._request = request
        self._settings = settings
        self._gpus = gpus
        self._sampling = sampling

    @staticmethod
    def _sampling_params(request: LoadRequest, token_timing: bool) -> Any:
        decoding = request.decoding
        params: dict[str, Any] = {
            "max_tokens": request.max_output_tokens,
            "ignore_eos": request.ignore_eos,
            "stop_token_ids": [] if request.ignore_eos else list(request.eos_token_ids),
            "repetition_penalty": decoding.repetition_penalty,
            "detokenize": False,
            "n": 1,
        }
        if decoding.temperature > 0:
            params.update(
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                top_k=decoding.top_k if decoding.top_k is not None else 0,  # 0: no top-k in vLLM
            )
        else:
            params["temperature"] = 0.0
        if token_timing:
            params["output_kind"] = RequestOutputKind.DELTA
        return SamplingParams(**params)

    # -- what the loop asks about ------------------------------------------------------------

    @property
    def gpus(self) -> list[GpuInfo]:
        """Every GPU the cell's ranks run on (tensor x pipeline parallel, one per rank)."""
        return list(self._gpus) if self._llm is not None else []

    @property
    def device_description(self) -> str:
        return describe_gpus_in_words(self.gpus)

    def parameter_count(self) -> int:
        """From the model's config on the meta device: vLLM's weights live in worker processes."""
        if self._parameters is None:
            self._parameters = parameter_count_from_config(self._loaded_request().model)
        return self._parameters

    def plan_batches(self, prompts: list[list[int]]) -> list[list[list[int]]]:
        """One call per pass: vLLM batches the requests itself, up to ``max_num_seqs`` at once."""
        return [list(prompts)] if prompts else []

    def run_batch(self, batch: list[list[int]]) -> BatchResult:
        """Generate for every request of the batch and return what counts as output, in order."""
        request = self._loaded_request()
        if not batch or any(len(ids) == 0 for ids in batch):
            raise LlemError("run_batch needs a non-empty batch of non-empty prompts")
        if self._settings.token_timing:
            return self._run_stepped(batch, request)
        start = time.perf_counter()
        outputs = self._llm.generate(
            [{"prompt_token_ids": list(ids)} for ids in batch], self._sampling, use_tqdm=False
        )
        wall = time.perf_counter() - start
        eos, ignore_eos = request.eos_token_ids, request.ignore_eos
        counted = [count_output_tokens(list(out.outputs[0].token_ids), eos, ignore_eos) for out in outputs]
        return BatchResult.untimed(counted, wall)

    def _run_stepped(self, batch: list[list[int]], request: LoadRequest) -> BatchResult:
        """Step the engine as ``LLM.generate`` does, stamping each request's new tokens."""
        engine = self._llm.llm_engine
        order: dict[str, int] = {}
        # The clock starts before the first request is added: the engine core starts on a
        # request as soon as it arrives, so adding is part of the work being timed.
        start = time.perf_counter()
        for position, ids in enumerate(batch):
            request_id = f"llem-{next(self._ids)}"
            order[request_id] = position  # outputs carry the id given here (vLLM adds a suffix inside)
            # The engine-input form (vllm.inputs.tokens_input): already tokenised, nothing to render.
            internal = engine.add_request(request_id, {"type": "token", "prompt_token_ids": list(ids)}, self._sampling)
            order[str(internal)] = position
        generated: list[list[int]] = [[] for _ in batch]
        times: list[list[float]] = [[] for _ in batch]
        while engine.has_unfinished_requests():
            step_outputs = engine.step()
            now = time.perf_counter()
            for output in step_outputs:
                found = order.get(output.request_id)
                if found is None:
                    continue
                new = list(output.outputs[0].token_ids) if output.outputs else []
                generated[found].extend(new)
                times[found].extend([now] * len(new))
        wall = time.perf_counter() - start
        counted = [count_output_tokens(ids, request.eos_token_ids, request.ignore_eos) for ids in generated]
        lost = [position for position, ids in enumerate(counted) if not ids]
        if lost:
            # Every request that is not aborted produces at least one token: an empty one means
            # outputs were not matched to their requests, and no figure of this batch is sound.
            raise LlemError(f"vLLM returned no tokens for request(s) at position(s) {lost} of the batch")
        return BatchResult.timed(counted, wall, request_latencies(start, times, [len(ids) for ids in counted]))

    def version(self) -> str | None:
        return str(vllm.__version__)

    def effective_settings(self) -> dict[str, Any]:
        """What vLLM resolved, read back from its config (defaults included), and what was passed."""
        request = self._loaded_request()
        config = getattr(self._llm.llm_engine, "vllm_config", None)

        def read(section: str, attribute: str) -> Any:
            value = getattr(getattr(config, section, None), attribute, None)
            return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)

        sampling = self._sampling
        requested_backend = getattr(getattr(config, "attention_config", None), "backend", None)
        return {
            "passed_to_llm": {
                key: value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
                for key, value in self._kwargs.items()
            },
            "resolved": {
                "dtype": read("model_config", "dtype"),
                "max_model_len": read("model_config", "max_model_len"),
                "enforce_eager": read("model_config", "enforce_eager"),
                "quantization": read("model_config", "quantization"),
                "max_num_seqs": read("scheduler_config", "max_num_seqs"),
                "max_num_batched_tokens": read("scheduler_config", "max_num_batched_tokens"),
                "enable_chunked_prefill": read("scheduler_config", "enable_chunked_prefill"),
                "async_scheduling": read("scheduler_config", "async_scheduling"),
                "gpu_memory_utilization": read("cache_config", "gpu_memory_utilization"),
                "block_size": read("cache_config", "block_size"),
                "kv_cache_dtype": read("cache_config", "cache_dtype"),
                "enable_prefix_caching": read("cache_config", "enable_prefix_caching"),
                "num_gpu_blocks": read("cache_config", "num_gpu_blocks"),
                "tensor_parallel_size": read("parallel_config", "tensor_parallel_size"),
                "pipeline_parallel_size": read("parallel_config", "pipeline_parallel_size"),
                "attention_backend_requested": _backend_name(requested_backend),
                "attention_backend_used": self._attention_backend_used(_backend_name(requested_backend)),
                "load_format": read("load_config", "load_format"),
            },
            "engine_start_s": self._start_time_s,
            "token_timing": self._settings.token_timing,
            "weights": "random (load_format=dummy)" if self._kwargs.get("load_format") == "dummy" else "pretrained",
            "cuda_visible_devices": cuda_visible_devices(),
            "vllm_environment": vllm_environment(),
            "skipped_kernels": dict(self._skipped_kernels),
            "gpus": [g.uuid for g in self._gpus],
            "sampling": {
                "max_tokens": sampling.max_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k,
                "repetition_penalty": sampling.repetition_penalty,
                "seed": sampling.seed,
                "ignore_eos": sampling.ignore_eos,
                "stop_token_ids": list(sampling.stop_token_ids or []),
                "detokenize": sampling.detokenize,
                "eos_handling": (
                    "ignore_eos: every request runs max_tokens steps"
                    if request.ignore_eos
                    else "stop at any EOS id (stop_token_ids); counted up to and including it"
                ),
            },
        }

    @staticmethod
    def _attention_backend_used(requested: str | None) -> str | None:
        """The backend the workers run: the requested one (vLLM fails at start if it cannot use it),
        else the one their log names."""
        if requested is not None:
            return requested
        logged = logged_attention_backends(os.environ.get(CELL_LOG_VARIABLE))
        return ", ".join(logged) if logged else None

    def peak_memory_bytes(self) -> int | None:
        """Not known: vLLM reserves ``gpu_memory_utilization`` of the GPU up front (NVML has it)."""
        return None

    def release(self) -> None:
        """Shut the engine's processes down and drop it."""
        llm, self._llm = self._llm, None
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(engine_core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()

    def _loaded_request(self) -> LoadRequest:
        if self._llm is None or self._request is None:
            raise LlemError("the vllm engine has no model loaded; call load() first")
        return self._request
