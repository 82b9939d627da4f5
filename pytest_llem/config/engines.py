"""Each engine's own section of an experiment, declared once.

The study grammar validates these from YAML; the cell's child hands the very same object to
the engine (``LoadRequest.settings``), so no engine validates its settings a second time. A new
engine adds its section here and one entry to :data:`ENGINE_SECTIONS`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, model_validator

from pytest_llem.config.base import StrictModel

EngineName = Literal["transformers", "vllm", "tensorrt"]

#: Every engine pytest-llem knows, in the order documentation and errors list them.
ENGINE_NAMES: tuple[EngineName, ...] = get_args(EngineName)


class TransformersConfig(StrictModel):
    """Settings of the Hugging Face transformers engine (``model.generate``)."""

    batch_size: int = Field(1, ge=1, description="Prompts per generate() call.")
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


class VllmConfig(StrictModel):
    """Settings of the vLLM engine (offline ``vllm.LLM``); unset ones keep vLLM's defaults."""

    max_num_seqs: int | None = Field(None, ge=1, description="Most requests running at once (vLLM's batch).")
    max_num_batched_tokens: int | None = Field(None, ge=1, description="Token budget of one scheduler step.")
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
    block_size: int | None = Field(None, ge=1)
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per cell; energy is summed over all of them.")
    attention_backend: str | None = Field(None, description="e.g. FLASH_ATTN, FLASHINFER, TRITON_ATTN.")
    token_timing: bool = Field(
        True,
        description="Time every token (TTFT, ITL per request) by stepping the engine; false runs plain"
        " LLM.generate and records end-to-end latency only.",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other vllm.LLM / EngineArgs argument, forwarded as given; an unknown one fails the cell.",
    )

    @model_validator(mode="after")
    def _escape_hatch(self) -> VllmConfig:
        _no_shadowed_settings("vllm", self, self.engine_args)
        return self


class TensorrtConfig(StrictModel):
    """Settings of the TensorRT-LLM engine (its ``LLM`` API); unverified on hardware so far."""

    max_batch_size: int | None = Field(None, ge=1)
    max_num_tokens: int | None = Field(None, ge=1)
    kv_cache_free_gpu_memory_fraction: float = Field(0.9, gt=0.0, le=1.0)
    quantization: str | None = Field(None, description="A QuantAlgo name, e.g. FP8, W4A16_AWQ.")
    tensor_parallel_size: int = Field(1, ge=1)
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other TensorRT-LLM LLM() argument, forwarded as given; an unknown one fails the cell.",
    )

    @model_validator(mode="after")
    def _escape_hatch(self) -> TensorrtConfig:
        _no_shadowed_settings("tensorrt", self, self.engine_args)
        return self


#: The section an engine reads, by engine name: the one place that ties a name to its settings.
ENGINE_SECTIONS: dict[EngineName, type[StrictModel]] = {
    "transformers": TransformersConfig,
    "vllm": VllmConfig,
    "tensorrt": TensorrtConfig,
}

#: Any engine's section, as the engine receives it.
EngineSection = TransformersConfig | VllmConfig | TensorrtConfig
