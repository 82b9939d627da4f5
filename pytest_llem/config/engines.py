"""Each engine's own section of an experiment, declared once.

The study grammar validates these from YAML; the cell's child hands the very same object to
the engine (``LoadRequest.settings``), so no engine validates its settings a second time. A new
engine adds its section here and one entry to :data:`ENGINE_SECTIONS`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from pytest_llem.config.base import MAX_PARALLEL, MAX_PROMPTS, MAX_TOKENS, StrictModel, refuse_non_finite

EngineName = Literal["transformers", "vllm", "tensorrt"]

#: Every engine pytest-llem knows, in the order documentation and errors list them.
ENGINE_NAMES: tuple[EngineName, ...] = get_args(EngineName)


class TransformersConfig(StrictModel):
    """Settings of the Hugging Face transformers engine (``model.generate``)."""

    batch_size: int = Field(1, ge=1, le=MAX_PROMPTS, description="Prompts per generate() call.")
    attn_implementation: str | None = Field(None, description="e.g. sdpa, eager, flash_attention_2.")
    use_cache: bool = True
    torch_compile: bool = False


def _no_shadowed_settings(section: str, model: BaseModel, engine_args: dict[str, Any]) -> None:
    """The escape hatch must not restate a setting the section already has a key for.

    Otherwise the record would show one value under ``vllm.max_num_seqs`` while another ran.
    """
    shadowed = sorted(set(engine_args) & (set(type(model).model_fields) - {"engine_args"}))
    if shadowed:
        raise ValueError(
            f"{section}.engine_args repeats {', '.join(shadowed)}: set "
            + ", ".join(f"{section}.{key}" for key in shadowed)
            + " instead"
        )


_DATA_PARALLEL = (
    "not supported: data parallelism runs further engine replicas on GPUs beyond"
    " tensor_parallel_size x pipeline_parallel_size; run one cell per replica instead"
)
_MULTI_NODE = "not supported: a cell meters the GPUs of its own host only"
_CHOSEN_GPUS = (
    "not supported: a cell runs on its first visible GPUs, the ones the meter reads;"
    " choose them with CUDA_VISIBLE_DEVICES"
)

#: vLLM arguments that change how many GPUs (or which) the engine runs on, with what to do
#: instead. From vLLM 0.26's ``EngineArgs`` and ``ParallelConfig``: its world size is
#: TP x PP x PCP per replica, times DP replicas, over ``nnodes`` hosts. The meter and the idle
#: power subtracted cover exactly the GPUs the section's study keys name
#: (:func:`VllmConfig.gpu_count`), so none of these may pass through the escape hatch, where
#: vLLM would use more GPUs than are measured. ``distributed_executor_backend`` only chooses how
#: the same ranks are started, and is not among them.
VLLM_GPU_ARGS: dict[str, str] = {
    "tensor_parallel_size": "set vllm.tensor_parallel_size instead",
    "pipeline_parallel_size": "set vllm.pipeline_parallel_size instead",
    "prefill_context_parallel_size": "not supported: prefill context parallelism adds ranks, each on a GPU of"
    " its own, beyond tensor_parallel_size x pipeline_parallel_size",
    "data_parallel_size": _DATA_PARALLEL,
    "enable_elastic_ep": "not supported: elastic expert parallelism adds and removes data-parallel ranks (GPUs)"
    " while the engine runs",
    "nnodes": _MULTI_NODE,
    "node_rank": _MULTI_NODE,
    "assigned_physical_gpu_ids": _CHOSEN_GPUS,
    "device_ids": _CHOSEN_GPUS,
}
#: Every ``data_parallel_*`` argument (size, rank, start rank, address, port, load balancing,
#: backend) only means something with several replicas, which are not supported.
VLLM_GPU_ARG_PREFIXES: dict[str, str] = {"data_parallel_": _DATA_PARALLEL}

_MOE_LAYOUT = (
    "not supported: the MoE parallel sizes lay the model's ranks out over GPUs in a way that must match"
    " tensor_parallel_size, which pytest-llem neither checks nor records"
)

#: The same for TensorRT-LLM's ``LLM`` arguments (1.x ``BaseLlmArgs``/``TorchLlmArgs``, and the
#: TensorRT backend's ``TrtLlmArgs``): its world size is TP x PP x CP. The MoE sizes divide the
#: tensor-parallel ranks among experts; refused too, since a cell's GPUs must follow from its
#: study keys alone.
TENSORRT_GPU_ARGS: dict[str, str] = {
    "tensor_parallel_size": "set tensorrt.tensor_parallel_size instead",
    "pipeline_parallel_size": "set tensorrt.pipeline_parallel_size instead",
    "context_parallel_size": "not supported: context parallelism adds ranks, each on a GPU of its own",
    "cp_config": "not supported: context parallelism adds ranks, each on a GPU of its own",
    "moe_expert_parallel_size": _MOE_LAYOUT,
    "moe_tensor_parallel_size": _MOE_LAYOUT,
    "moe_cluster_parallel_size": _MOE_LAYOUT,
    "gpus_per_node": _MULTI_NODE,
    "auto_parallel": "not supported: auto parallelism chooses its own number of GPUs",
    "auto_parallel_world_size": "not supported: auto parallelism chooses its own number of GPUs",
}


def gpu_arg_advice(key: str, table: dict[str, str], prefixes: dict[str, str]) -> str | None:
    """What to do instead of passing ``key``, if it changes the number of GPUs; else None."""
    if key in table:
        return table[key]
    return next((advice for prefix, advice in prefixes.items() if key.startswith(prefix)), None)


def _no_gpu_count_args(section: str, engine_args: dict[str, Any], table: dict[str, str], prefixes: dict[str, str]) -> None:
    """Refuse escape-hatch keys that would change how many GPUs run, unseen by the meter.

    Energy is read, and idle power subtracted, on the GPUs the section's study keys name; an
    argument that makes the engine use more would leave their energy out of every figure.
    """
    problems = [
        f"{key} changes the GPUs the engine runs on, and every GPU must be metered: {advice}"
        for key in sorted(engine_args)
        if (advice := gpu_arg_advice(key, table, prefixes)) is not None
    ]
    if problems:
        raise ValueError(f"{section}.engine_args: " + "; ".join(problems))


class VllmConfig(StrictModel):
    """Settings of the vLLM engine (offline ``vllm.LLM``); unset ones keep vLLM's defaults."""

    max_num_seqs: int | None = Field(None, ge=1, le=MAX_PROMPTS, description="Most requests running at once (vLLM's batch).")
    max_num_batched_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS, description="Token budget of one scheduler step.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take (unset: vLLM's default, 0.92 in 0.26)."
    )
    enforce_eager: bool = Field(False, description="No CUDA graphs or torch.compile.")
    enable_prefix_caching: bool = Field(
        False, description="Off for measurement: repeated passes would otherwise skip prefill work."
    )
    enable_chunked_prefill: bool | None = None
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    block_size: int | None = Field(None, ge=1, le=MAX_TOKENS)
    tensor_parallel_size: int = Field(1, ge=1, le=MAX_PARALLEL, description="GPUs per pipeline stage; energy is summed over all GPUs.")
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        le=MAX_PARALLEL,
        description="Pipeline stages, each on tensor_parallel_size GPUs: the cell uses and meters"
        " tensor_parallel_size x pipeline_parallel_size GPUs.",
    )
    attention_backend: str | None = Field(None, description="e.g. FLASH_ATTN, FLASHINFER, TRITON_ATTN.")
    token_timing: bool = Field(
        True,
        description="Time every token (TTFT, ITL per request) by stepping the engine; false runs plain"
        " LLM.generate and records end-to-end latency only.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vllm.LLM / EngineArgs argument, forwarded as given; an unknown one fails the cell."
        " Arguments that change the number of GPUs (data_parallel_size, ...) are refused.",
    )

    @property
    def gpu_count(self) -> int:
        """The GPUs the cell runs on, and the meter reads: one per rank."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @field_validator("engine_args")
    @classmethod
    def _finite_engine_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_non_finite(value)
        return value

    @model_validator(mode="after")
    def _escape_hatch(self) -> VllmConfig:
        _no_shadowed_settings("vllm", self, self.engine_args)
        _no_gpu_count_args("vllm", self.engine_args, VLLM_GPU_ARGS, VLLM_GPU_ARG_PREFIXES)
        return self


class TensorrtConfig(StrictModel):
    """Settings of the TensorRT-LLM engine (its ``LLM`` API); unverified on hardware so far."""

    max_batch_size: int | None = Field(None, ge=1, le=MAX_PROMPTS)
    max_num_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    kv_cache_free_gpu_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)
    quantization: str | None = Field(None, description="A QuantAlgo name, e.g. FP8, W4A16_AWQ.")
    tensor_parallel_size: int = Field(1, ge=1, le=MAX_PARALLEL, description="GPUs per pipeline stage; energy is summed over all GPUs.")
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        le=MAX_PARALLEL,
        description="Pipeline stages, each on tensor_parallel_size GPUs: the cell uses and meters"
        " tensor_parallel_size x pipeline_parallel_size GPUs.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other TensorRT-LLM LLM() argument, forwarded as given; an unknown one fails the cell."
        " Arguments that change the number of GPUs (moe_expert_parallel_size, ...) are refused.",
    )

    @property
    def gpu_count(self) -> int:
        """The GPUs the cell runs on, and the meter reads: one per rank."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @field_validator("engine_args")
    @classmethod
    def _finite_engine_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_non_finite(value)
        return value

    @model_validator(mode="after")
    def _escape_hatch(self) -> TensorrtConfig:
        _no_shadowed_settings("tensorrt", self, self.engine_args)
        _no_gpu_count_args("tensorrt", self.engine_args, TENSORRT_GPU_ARGS, {})
        return self


#: The section an engine reads, by engine name: the one place that ties a name to its settings.
ENGINE_SECTIONS: dict[EngineName, type[StrictModel]] = {
    "transformers": TransformersConfig,
    "vllm": VllmConfig,
    "tensorrt": TensorrtConfig,
}

#: Any engine's section, as the engine receives it.
EngineSection = TransformersConfig | VllmConfig | TensorrtConfig
