"""A stand-in for vLLM's offline API, for tests on machines without a GPU or vLLM.

Tests put ``tests/fakes/engines`` on ``PYTHONPATH`` so the cell's child imports this as
``vllm``; product code has no switch for it. It mimics vLLM 0.26's surface that
``pytest_llem.engines.vllm`` uses, with the real names and keyword rules:

* ``LLM(model, *, <its own keywords>, **kwargs)`` passes ``kwargs`` to ``EngineArgs``, which
  raises ``TypeError`` for a name it does not have, as the real dataclass does.
* ``llm.llm_engine``: ``add_request``, ``step``, ``has_unfinished_requests`` and a
  ``vllm_config`` with the real section and attribute names; continuous batching with at most
  ``max_num_seqs`` running requests, one token per running request per step.
* ``llm.generate`` steps the same engine to the end (final outputs only), in request order.

Generated ids are deterministic: token ``k`` of a request is ``(sum(prompt) + 7 * k) % 97 + 3``
(so never one of the small special ids), except that ``LLEM_FAKE_VLLM_EMIT`` makes requests
emit a given token at a given step (to test stopping at EOS): comma-separated
``[INDEX@]STEP:TOKEN``, where ``INDEX`` is the request's place in the batch it was added with
(the requests added while the engine was idle), and no ``INDEX@`` means every request.
Like vLLM 0.26, ``add_request`` takes the engine-input form ``{"type": "token", ...}``, returns
an internal id with a random suffix while outputs carry the id given, and ``SamplingParams``
refuses a temperature above 2 or a top-p outside (0, 1]. A ``finished`` log event gives each
request's generated ids, so tests see where the engine itself stopped.
``LLEM_FAKE_VLLM_STEP_SLEEP`` (seconds) makes each step take time. ``LLEM_FAKE_VLLM_LOG`` names
a file that receives one JSON line per constructor call and per sampling parameters seen.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace
from typing import Any

from vllm.engine.arg_utils import EngineArgs
from vllm.sampling_params import RequestOutputKind, SamplingParams

FAKE = True
__version__ = "0.0.0-fake"
__all__ = ["LLM", "SamplingParams"]


def _log(event: str, **payload: Any) -> None:
    path = os.environ.get("LLEM_FAKE_VLLM_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"event": event, **payload}, default=repr) + "\n")


class AttentionBackendEnum(Enum):
    """vLLM keeps the resolved backend as an enum member on ``attention_config.backend``."""

    FLASH_ATTN = "FLASH_ATTN"
    FLASHINFER = "FLASHINFER"
    TRITON_ATTN = "TRITON_ATTN"
    FLEX_ATTENTION = "FLEX_ATTENTION"


def _log_attention_backend(requested: str | None, ranks: int) -> None:
    """What vLLM 0.26's workers print to stderr (vllm/platforms/cuda.py), one line per worker."""
    for rank in range(ranks):
        prefix = f"(Worker_TP{rank} pid={os.getpid()})" if ranks > 1 else f"(EngineCore pid={os.getpid()})"
        if requested is None:
            message = ("Using FLASH_ATTN attention backend out of potential backends:"
                       " ['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION'].")  # fmt: skip
        else:
            message = f"Using AttentionBackendEnum.{requested} backend."
        print(f"{prefix} INFO 11-23 19:01:52 [cuda.py:482] {message}", file=sys.stderr, flush=True)


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    text: str = ""
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: Any = None


@dataclass
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    index: int = 0
    generated: list[int] = field(default_factory=list)
    sent: int = 0
    finished: bool = False


class _Engine:
    """Continuous batching in miniature: waiting requests start as running slots free up."""

    def __init__(self, config: SimpleNamespace) -> None:
        self.vllm_config = config
        self._waiting: list[_Request] = []
        self._running: list[_Request] = []
        self._emit: list[tuple[int | None, int, int]] = []
        for entry in filter(None, os.environ.get("LLEM_FAKE_VLLM_EMIT", "").split(",")):
            index, _, rest = entry.rpartition("@")
            step, token = rest.split(":")
            self._emit.append((int(index) if index else None, int(step), int(token)))
        self._sleep = float(os.environ.get("LLEM_FAKE_VLLM_STEP_SLEEP", "0") or 0)
        self._added_while_busy = 0

    def add_request(self, request_id: str, prompt: Any, params: SamplingParams, **_: Any) -> str:
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a string, got {type(request_id)}")
        if not isinstance(prompt, dict) or prompt.get("type") != "token" or "prompt_token_ids" not in prompt:
            raise ValueError("the fake takes the engine-input form only: {'type': 'token', 'prompt_token_ids': [...]}")
        if not self.has_unfinished_requests():
            self._added_while_busy = 0
        index, self._added_while_busy = self._added_while_busy, self._added_while_busy + 1
        _log("sampling", **params.as_dict())
        _log("prompt", ids=list(prompt["prompt_token_ids"]))
        self._waiting.append(_Request(request_id, list(prompt["prompt_token_ids"]), params, index=index))
        return f"{request_id}-{uuid.uuid4().hex[:8]}"

    def _token(self, request: _Request, step: int) -> int:
        for index, at, token in self._emit:
            if at == step and index in (None, request.index):
                return token
        return (sum(request.prompt) + 7 * step) % 97 + 3

    def has_unfinished_requests(self) -> bool:
        return bool(self._waiting or self._running)

    def step(self) -> list[RequestOutput]:
        limit = self.vllm_config.scheduler_config.max_num_seqs
        while self._waiting and len(self._running) < limit:
            self._running.append(self._waiting.pop(0))
        if self._sleep:
            time.sleep(self._sleep)
        outputs: list[RequestOutput] = []
        for request in list(self._running):
            token = self._token(request, len(request.generated))
            request.generated.append(token)
            params = request.params
            stop = not params.ignore_eos and token in (params.stop_token_ids or [])
            if stop or len(request.generated) >= params.max_tokens:
                request.finished = True
                self._running.remove(request)
                _log("finished", request_id=request.request_id, index=request.index, ids=request.generated)
            kind = params.output_kind
            if kind == RequestOutputKind.DELTA or request.finished:
                if kind == RequestOutputKind.DELTA:
                    ids, request.sent = request.generated[request.sent :], len(request.generated)
                else:
                    ids = list(request.generated)
                outputs.append(
                    RequestOutput(request.request_id, request.prompt, [CompletionOutput(0, ids)], request.finished)
                )
        return outputs


class LLM:
    """The offline entry point: builds EngineArgs from the keywords, then an engine."""

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        skip_tokenizer_init: bool = False,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        quantization: str | None = None,
        seed: int = 0,
        gpu_memory_utilization: float = 0.92,
        enforce_eager: bool = False,
        **kwargs: Any,
    ) -> None:
        if "disable_log_stats" not in kwargs:
            kwargs["disable_log_stats"] = True
        args = EngineArgs(
            model=model, tokenizer=tokenizer, skip_tokenizer_init=skip_tokenizer_init,
            tensor_parallel_size=tensor_parallel_size, dtype=dtype, quantization=quantization, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, **kwargs,
        )  # fmt: skip
        _log("llm", **{k: v for k, v in vars(args).items()})
        # What the engine reads from its environment as it starts (vLLM reads VLLM_* lazily).
        _log("environment", **{k: v for k, v in os.environ.items() if k.startswith("VLLM_")})
        if not os.path.isdir(model):
            raise OSError(f"fake vllm: no model directory {model!r}")
        if args.load_format != "dummy" and not any(
            name.endswith((".safetensors", ".bin")) for name in os.listdir(model)
        ):
            raise RuntimeError(f"fake vllm: no weights in {model!r} (load_format {args.load_format!r})")
        config = SimpleNamespace(
            model_config=SimpleNamespace(
                dtype=args.dtype, max_model_len=args.max_model_len or 2048, enforce_eager=args.enforce_eager,
                quantization=args.quantization,
            ),
            scheduler_config=SimpleNamespace(
                max_num_seqs=args.max_num_seqs or 256, max_num_batched_tokens=args.max_num_batched_tokens or 8192,
                enable_chunked_prefill=True if args.enable_chunked_prefill is None else args.enable_chunked_prefill,
                async_scheduling=False,
            ),
            cache_config=SimpleNamespace(
                gpu_memory_utilization=args.gpu_memory_utilization, block_size=args.block_size or 16,
                cache_dtype=args.kv_cache_dtype,
                enable_prefix_caching=True if args.enable_prefix_caching is None else args.enable_prefix_caching,
                num_gpu_blocks=1000,
            ),
            parallel_config=SimpleNamespace(tensor_parallel_size=args.tensor_parallel_size),
            attention_config=SimpleNamespace(
                backend=AttentionBackendEnum[args.attention_backend] if args.attention_backend else None
            ),
            load_config=SimpleNamespace(load_format=args.load_format),
        )  # fmt: skip
        _log_attention_backend(args.attention_backend, args.tensor_parallel_size)
        self.llm_engine = _Engine(config)
        self.llm_engine.engine_core = SimpleNamespace(shutdown=lambda: _log("shutdown"))

    def generate(self, prompts: list[Any], sampling_params: SamplingParams, *, use_tqdm: bool = True) -> list[RequestOutput]:
        params = sampling_params.clone()
        params.output_kind = RequestOutputKind.FINAL_ONLY  # as the real LLM does
        ids = [f"gen-{i}" for i in range(len(prompts))]
        for request_id, prompt in zip(ids, prompts):  # rendered, as the real LLM does
            self.llm_engine.add_request(request_id, {"type": "token", "prompt_token_ids": prompt["prompt_token_ids"]}, params)
        finished: dict[str, RequestOutput] = {}
        while self.llm_engine.has_unfinished_requests():
            for output in self.llm_engine.step():
                if output.finished:
                    finished[output.request_id] = output
        return [finished[request_id] for request_id in ids]
