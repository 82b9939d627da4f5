"""One fully resolved experiment: :class:`ExperimentConfig` and its shared sections.

A study file holds these fields (shared by every cell) plus study-only blocks, which live in
:mod:`pytest_llem.study.schema`. Rules that involve several fields (an "invalid combination")
raise :func:`~pytest_llem.config.base.InvalidCombination`: inside a sweep such a cell becomes a
SKIPPED item with the reason, while type errors and unknown keys are errors of the file.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, field_validator, model_validator

from pytest_llem.config.base import (
    DAY_S,
    HOUR_S,
    MAX_PROMPTS,
    MAX_RELATIVE,
    MAX_SEED,
    MAX_TOKENS,
    YEAR_S,
    InvalidCombination,
    StrictModel,
)
from pytest_llem.config.engines import (
    EngineName,
    EngineSection,
    TensorrtConfig,
    TransformersConfig,
    VllmConfig,
)
from pytest_llem.config.metrics import check_metric
from pytest_llem.errors import LimitSyntaxError

Precision = Literal["fp32", "fp16", "bf16"]
MeterKind = Literal["auto", "nvml", "zeus", "none"]

#: Every value of ``measurement.energy``.
METER_KINDS: tuple[MeterKind, ...] = get_args(MeterKind)


class DatasetConfig(StrictModel):
    """Where the prompts come from."""

    source: str = Field(
        "llem-prompts",
        description="'llem-prompts' (built in), or a path to a .txt (one prompt a line) or .jsonl file,"
        " relative to the study file.",
    )
    field: str = Field("text", description="The field holding the prompt in a .jsonl file.")
    n_prompts: int = Field(32, ge=1, le=MAX_PROMPTS, description="Prompts per pass; a smaller source is cycled.")


class DecodingConfig(StrictModel):
    """Sampling settings, the same for every engine. temperature 0 is greedy decoding."""

    temperature: float = Field(0.0, ge=0.0, le=100.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, le=MAX_TOKENS)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _sampling_knobs_need_sampling(self) -> DecodingConfig:
        if self.temperature == 0.0 and (self.top_p < 1.0 or self.top_k is not None):
            raise InvalidCombination(
                "decoding.top_p / decoding.top_k have no effect with decoding.temperature 0 (greedy)"
            )
        return self


class WarmupConfig(StrictModel):
    """Warm-up at the measured batch shapes until per-batch latency is stable."""

    min_batches: int = Field(1, ge=0, le=100_000, description="At least this many batches, and at least one whole pass.")
    max_batches: int = Field(20, ge=0, le=100_000, description="Stop warming up after this many batches, stable or not.")
    cv_threshold: float = Field(0.05, gt=0.0, le=MAX_RELATIVE, description="Stable once the CV of the last `window` latencies is below this.")
    window: int = Field(3, ge=2, le=10_000)

    @model_validator(mode="after")
    def _bounds(self) -> WarmupConfig:
        if self.max_batches < self.min_batches:
            raise ValueError("measurement.warmup.max_batches must be at least min_batches")
        return self


class IdlePowerConfig(StrictModel):
    """Idle power per GPU (the idle baseline), subtracted to give baseline-adjusted energy."""

    # "baseline" in the study file and the record (baseline_power_w, the contract); in code it is
    # idle power, named apart from the stored baselines of the regression gate.

    enabled: bool = True
    duration_seconds: float = Field(30.0, ge=1.0, le=HOUR_S, description="How long idle power is sampled.")
    ttl_seconds: float = Field(3600.0, ge=0.0, le=YEAR_S, description="A cached baseline younger than this is reused.")
    drift_threshold: float = Field(
        0.10, gt=0.0, le=MAX_RELATIVE, description="A cell's idle spot check further than this (relative) re-measures the baseline."
    )
    spot_check_seconds: float = Field(2.0, ge=0.0, le=HOUR_S, description="Idle sampling in each cell after load; 0 disables.")


class MeasurementConfig(StrictModel):
    """How a cell is measured. Part of the measurement_config_hash: it changes the figures."""

    energy: MeterKind = "auto"
    min_window_seconds: float = Field(10.0, ge=0.0, le=DAY_S, description="Repeat the workload until the window is this long.")
    max_passes: int = Field(1000, ge=1, le=1_000_000, description="Upper bound on workload passes in the window.")
    sample_interval_ms: int = Field(100, ge=10, le=10_000)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto: CUDA when present, else CPU.")
    baseline: IdlePowerConfig = Field(default_factory=IdlePowerConfig)
    preflight: Literal["warn", "fail", "off"] = Field(
        "warn", description="What a busy GPU before the window does: foreign processes, load, power above idle."
    )
    cross_check_tolerance: float = Field(
        0.05, gt=0.0, le=MAX_RELATIVE, description="Counter vs integral of sampled power: a larger relative gap is a warning."
    )
    cross_check_fail_tolerance: float = Field(
        0.25,
        gt=0.0,
        le=MAX_RELATIVE,
        description="Counter vs integral of sampled power: a larger relative gap fails the cell (one of the"
        " two is wrong); at least cross_check_tolerance. No power samples: nothing to compare, no failure.",
    )

    @model_validator(mode="after")
    def _cross_check_bounds(self) -> MeasurementConfig:
        # A failing bound below the warning one would fail cells the warning calls acceptable.
        if self.cross_check_fail_tolerance < self.cross_check_tolerance:
            raise ValueError(
                f"measurement.cross_check_fail_tolerance ({self.cross_check_fail_tolerance:g}) must be at least"
                f" measurement.cross_check_tolerance ({self.cross_check_tolerance:g})"
            )
        return self


class OutputConfig(StrictModel):
    """Where and what to write. Left out of the measurement_config_hash: it cannot change a figure."""

    results_dir: str = Field("results", description="Relative to pytest's rootdir unless absolute.")
    save_timeseries: bool = True


def _known_metric(metric: str) -> str:
    try:
        check_metric(metric)
    except LimitSyntaxError as exc:
        raise ValueError(str(exc)) from None
    return metric


#: A figure of the record that a limit may name (see config/metrics.py).
MetricName = Annotated[str, AfterValidator(_known_metric)]


class ExpectBounds(StrictModel):
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


class ExperimentConfig(StrictModel):
    """One fully resolved experiment: what a single cell measures."""

    model: str = Field("llem-tiny", description="Hub id, local directory, or an embedded model (llem-tiny).")
    engine: EngineName = "transformers"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    prompts: list[str] | None = Field(
        None, max_length=MAX_PROMPTS, description="Inline prompts; replaces dataset when given."
    )
    max_input_tokens: int = Field(256, ge=1, le=MAX_TOKENS)
    max_output_tokens: int = Field(64, ge=1, le=MAX_TOKENS)
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

    @property
    def engine_section(self) -> EngineSection:
        """The settings of this experiment's engine: what the engine receives, as validated here."""
        section: EngineSection = getattr(self, self.engine)
        return section

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


#: Fields that cannot change a measurement, left out of every hash.
NON_MEASUREMENT_FIELDS: frozenset[str] = frozenset({"output", "expect"})
