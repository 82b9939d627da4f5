"""The study grammar: pydantic models of one experiment and of a study file.

A study file holds the fields of :class:`ExperimentConfig` (shared by every cell) plus the
study-only blocks ``sweep``, ``experiments``, ``execution``, ``name`` and ``id``. Every model
forbids unknown keys, so a misspelt key is an error, never a silently ignored setting.

Rules that involve several fields (an "invalid combination") raise
:class:`InvalidCombination` from a model validator: inside a sweep such a cell becomes a
SKIPPED item with the reason, while type errors and unknown keys are errors of the file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pytest_llem.study.metrics import LimitSyntaxError, check_metric

ENGINES: tuple[str, ...] = ("transformers", "vllm", "tensorrt")
EngineName = Literal["transformers", "vllm", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16"]

#: The error type of a cross-field rule: such a cell is skipped, not a file error.
INVALID_COMBINATION = "llem_invalid_combination"


def InvalidCombination(message: str) -> PydanticCustomError:  # noqa: N802 - reads as a class
    """An error for a combination of valid values that cannot be measured together."""
    return PydanticCustomError(INVALID_COMBINATION, message)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatasetConfig(_Strict):
    """Where the prompts come from."""

    source: str = Field(
        "llem-prompts",
        description="'llem-prompts' (built in), or a path to a .txt (one prompt a line) or .jsonl file,"
        " relative to the study file.",
    )
    field: str = Field("text", description="The field holding the prompt in a .jsonl file.")
    n_prompts: int = Field(32, ge=1, description="Prompts per pass; a smaller source is cycled.")


class DecodingConfig(_Strict):
    """Sampling settings, the same for every engine. temperature 0 is greedy decoding."""

    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float = Field(1.0, gt=0.0)
    seed: int = 0

    @model_validator(mode="after")
    def _sampling_knobs_need_sampling(self) -> DecodingConfig:
        if self.temperature == 0.0 and (self.top_p < 1.0 or self.top_k is not None):
            raise InvalidCombination(
                "decoding.top_p / decoding.top_k have no effect with decoding.temperature 0 (greedy)"
            )
        return self


class TransformersConfig(_Strict):
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


class VllmConfig(_Strict):
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


class TensorrtConfig(_Strict):
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


class WarmupConfig(_Strict):
    """Warm-up at the measured batch shapes until per-batch latency is stable."""

    min_batches: int = Field(1, ge=0, description="At least this many batches, and at least one whole pass.")
    max_batches: int = Field(20, ge=0, description="Stop warming up after this many batches, stable or not.")
    cv_threshold: float = Field(0.05, gt=0.0, description="Stable once the CV of the last `window` latencies is below this.")
    window: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _bounds(self) -> WarmupConfig:
        if self.max_batches < self.min_batches:
            raise ValueError("measurement.warmup.max_batches must be at least min_batches")
        return self


class BaselineConfig(_Strict):
    """Idle power per GPU, subtracted to give baseline-adjusted energy."""

    enabled: bool = True
    duration_seconds: float = Field(30.0, ge=1.0, description="How long idle power is sampled.")
    ttl_seconds: float = Field(3600.0, ge=0.0, description="A cached baseline younger than this is reused.")
    drift_threshold: float = Field(
        0.10, gt=0.0, description="A cell's idle spot check further than this (relative) re-measures the baseline."
    )
    spot_check_seconds: float = Field(2.0, ge=0.0, description="Idle sampling in each cell after load; 0 disables.")


class MeasurementConfig(_Strict):
    """How a cell is measured. Part of the measurement_config_hash: it changes the figures."""

    energy: Literal["auto", "nvml", "zeus", "none"] = "auto"
    min_window_seconds: float = Field(10.0, ge=0.0, description="Repeat the workload until the window is this long.")
    max_passes: int = Field(1000, ge=1, description="Upper bound on workload passes in the window.")
    sample_interval_ms: int = Field(100, ge=10, le=10_000)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when present, else CPU.")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    preflight: Literal["warn", "fail", "off"] = Field(
        "warn", description="What a busy GPU before the window does: foreign processes, load, power above idle."
    )
    cross_check_tolerance: float = Field(
        0.05, gt=0.0, description="Counter vs integral of sampled power: a larger relative gap is a warning."
    )


class OutputConfig(_Strict):
    """Where and what to write. Left out of the measurement_config_hash: it cannot change a figure."""

    results_dir: str = Field("results", description="Relative to pytest's rootdir unless absolute.")
    save_timeseries: bool = True


def _known_metric(metric: str) -> str:
    try:
        check_metric(metric)
    except LimitSyntaxError as exc:
        raise ValueError(str(exc)) from None
    return metric


#: A figure of the record that a limit may name (see study/metrics.py).
MetricName = Annotated[str, AfterValidator(_known_metric)]


class ExpectBounds(_Strict):
    """Bounds on one figure of a cell's record; a breach fails the cell."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> ExpectBounds:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class ExperimentConfig(_Strict):
    """One fully resolved experiment: what a single cell measures."""

    model: str = Field("llem-tiny", description="Hub id, local directory, or an embedded model (llem-tiny).")
    engine: EngineName = "transformers"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    prompts: list[str] | None = Field(None, description="Inline prompts; replaces dataset when given.")
    max_input_tokens: int = Field(256, ge=1)
    max_output_tokens: int = Field(64, ge=1)
    ignore_eos: bool = Field(False, description="Generate exactly max_output_tokens per request.")
    precision: Precision = "bf16"
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    transformers: TransformersConfig = Field(default_factory=TransformersConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    tensorrt: TensorrtConfig = Field(default_factory=TensorrtConfig)
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    expect: dict[MetricName, ExpectBounds] = Field(
        default_factory=dict,
        description="Limits per cell, e.g. {mj_per_tok_adjusted: {max: 50}, avg_tokens_per_second: {min: 1000}}.",
    )

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must not be empty")
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not p.strip() for p in value)):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        return value

    @property
    def n_prompts(self) -> int:
        return len(self.prompts) if self.prompts is not None else self.dataset.n_prompts

    @model_validator(mode="after")
    def _combinations(self) -> ExperimentConfig:
        if self.engine == "transformers" and self.transformers.batch_size > self.n_prompts:
            raise InvalidCombination(
                f"transformers.batch_size {self.transformers.batch_size} exceeds the"
                f" {self.n_prompts} prompts of a pass: the batch would never be full"
            )
        if self.engine == "transformers" and self.measurement.device == "cpu" and self.precision == "fp16":
            raise InvalidCombination("precision fp16 is not supported for generation on the CPU; use fp32 or bf16")
        return self


class ExecutionConfig(_Strict):
    """How cells are repeated and ordered. Left out of the study_design_hash."""

    n_cycles: int = Field(3, ge=1, le=1000)
    experiment_order: Literal["sequential", "interleave", "shuffle", "reverse", "latin_square"] = Field(
        "interleave",
        description="sequential: all cycles of a config back to back; interleave: A B C A B C;"
        " shuffle: a seeded permutation per cycle; reverse: A B C C B A; latin_square: rotated per cycle.",
    )
    shuffle_seed: int = 0
    experiment_gap_seconds: float = Field(0.0, ge=0.0, description="Pause between cells.")
    cycle_gap_seconds: float = Field(0.0, ge=0.0, description="Extra pause when a new cycle begins.")
    experiment_timeout_seconds: float = Field(3600.0, gt=0.0)
    startup_timeout_seconds: float = Field(
        300.0, gt=0.0, description="Time allowed for the child's imports and device setup (handshake)."
    )


class ExplicitExperiment(BaseModel):
    """One entry of ``experiments:``: any experiment fields (nested or dotted) plus an optional id."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None


class StudyDocument(ExperimentConfig):
    """The whole study file. Used for the JSON Schema; validation goes cell by cell."""

    name: str | None = Field(None, description="Study name; defaults to the file name.")
    id: str | None = Field(None, description="Template of cell ids, e.g. '{engine}-bs{transformers.batch_size}'.")
    engine: EngineName | list[EngineName] = "transformers"  # type: ignore[assignment]
    sweep: dict[str, Any] = Field(default_factory=dict, description="Axes (dotted path -> list) and groups (name -> list of dicts).")
    experiments: list[dict[str, Any]] = Field(default_factory=list, description="Extra cells, merged over the shared fields.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _combinations(self) -> StudyDocument:
        return self  # combinations are judged per cell, after the sweep is expanded


#: Keys of a study file that are not experiment fields.
STUDY_ONLY_KEYS: frozenset[str] = frozenset({"name", "id", "sweep", "experiments", "execution"})

#: Fields that cannot change a measurement, left out of every hash.
NON_MEASUREMENT_FIELDS: frozenset[str] = frozenset({"output", "expect"})
