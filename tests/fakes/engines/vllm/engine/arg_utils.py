"""The fake's ``EngineArgs``: a dataclass with a subset of vLLM 0.26's real field names.

Unknown keywords raise ``TypeError`` at construction, as with the real dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    tokenizer: str | None = None
    skip_tokenizer_init: bool = False
    load_format: str = "auto"
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    seed: int = 0
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    block_size: int | None = None
    enable_prefix_caching: bool | None = None
    gpu_memory_utilization: float = 0.92
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    disable_log_stats: bool = False
    quantization: str | None = None
    enforce_eager: bool = False
    enable_chunked_prefill: bool | None = None
    generation_config: str = "auto"
    attention_backend: str | None = None
    async_scheduling: bool | None = None
    max_logprobs: int = 20
    compilation_config: Any = None
