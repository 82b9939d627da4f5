"""The study file's own blocks: ``execution``, ``experiments`` and the whole document.

A study file holds the fields of :class:`~pytest_llem.config.experiment.ExperimentConfig`
(shared by every cell, declared in :mod:`pytest_llem.config`) plus the study-only blocks
``sweep``, ``experiments``, ``execution``, ``report``, ``name`` and ``id`` declared here. Every model
forbids unknown keys, so a misspelt key is an error, never a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pytest_llem.config.base import DAY_S, MAX_SEED, WEEK_S, StrictModel
from pytest_llem.config.engines import EngineName
from pytest_llem.config.experiment import ExperimentConfig

#: The cap on cycles when a study sets ``target_ci_pct`` and no ``max_cycles``.
DEFAULT_ADAPTIVE_CAP = 10


class ExecutionConfig(StrictModel):
    """How cells are repeated and ordered. Left out of the study_design_hash."""

    n_cycles: int = Field(3, ge=1, le=1000)
    experiment_order: Literal["sequential", "interleave", "shuffle", "reverse", "latin_square"] = Field(
        "interleave",
        description="sequential: all cycles of a config back to back; interleave: A B C A B C;"
        " shuffle: a seeded permutation per cycle; reverse: A B C C B A; latin_square: rotated per cycle.",
    )
    shuffle_seed: int = Field(0, ge=0, le=MAX_SEED)
    experiment_gap_seconds: float = Field(0.0, ge=0.0, le=DAY_S, description="Pause between cells.")
    cycle_gap_seconds: float = Field(0.0, ge=0.0, le=DAY_S, description="Extra pause when a new cycle begins.")
    experiment_timeout_seconds: float = Field(3600.0, gt=0.0, le=WEEK_S)
    startup_timeout_seconds: float = Field(
        300.0, gt=0.0, le=DAY_S, description="Time allowed for the child's imports and device setup (handshake)."
    )
    prestart_child: bool = Field(
        True,
        description="Start the next cell's process ahead, while the current cell's engine loads (or while idle"
        " power is measured, before the first cell), so its imports are done when the cell begins; it is"
        " suspended through the current cell's idle check, warm-up and window. It imports libraries only: no"
        " engine, no model, no CUDA context. false: every cell starts its process when it begins.",
    )
    teardown: Literal["kill", "graceful"] = Field(
        "kill",
        description="kill: once the cell's result is with pytest, its processes are killed at once and pytest waits"
        " until the GPU has let go of them. graceful: the engine shuts itself down first (vLLM: a few seconds).",
    )
    compile_cache: str = Field(
        "auto",
        min_length=1,
        max_length=4096,
        description="Where engines keep compiled graphs and kernels across cells and runs. auto: pytest-llem's cache,"
        " one directory per set of library versions; cold: an empty directory per cell (every start is a first"
        " start); engine: each library's own default; else a directory (relative to the study file).",
    )
    skip_unused_kernels: bool = Field(
        True,
        description="Tell an engine not to compile, at its start, kernels that the cell's decoding settings can never"
        " call (vLLM: its FlashInfer top-k/top-p sampler when decoding is greedy or has neither top_k nor top_p)."
        " What the window runs is the same; a first start on a machine is shorter. A variable you set yourself"
        " (VLLM_USE_FLASHINFER_SAMPLER) is left alone. false: the engine prepares every kernel it would.",
    )
    target_ci_pct: float | None = Field(
        None,
        gt=0.0,
        lt=100.0,
        description="Adaptive cycles: after the planned cycles, a configuration whose headline interval"
        " (mj_per_tok_adjusted, else mj_per_tok_total) has a relative half-width above this percentage gets"
        " more cycles, up to max_cycles.",
    )
    max_cycles: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Adaptive cycles: the most cycles a configuration may get (default: max(n_cycles,"
        f" {DEFAULT_ADAPTIVE_CAP}) with target_ci_pct, else n_cycles). Above n_cycles it also gives"
        " configurations the regression gate finds inconclusive more cycles.",
    )

    @model_validator(mode="after")
    def _cap_not_below_plan(self) -> ExecutionConfig:
        if self.max_cycles is not None and self.max_cycles < self.n_cycles:
            raise ValueError(
                f"max_cycles ({self.max_cycles}) is below n_cycles ({self.n_cycles}): it caps the cycles a"
                " configuration may get, planned ones included; raise it or lower n_cycles"
            )
        return self

    @property
    def cycle_cap(self) -> int:
        """The most cycles any configuration can get: the planned ones plus adaptive ones."""
        if self.max_cycles is not None:
            return self.max_cycles
        return max(self.n_cycles, DEFAULT_ADAPTIVE_CAP) if self.target_ci_pct is not None else self.n_cycles

    @property
    def adaptive(self) -> bool:
        """Whether any configuration can get cycles beyond the planned ones."""
        return self.cycle_cap > self.n_cycles


class ReportSettings(StrictModel):
    """What the study's end should answer besides its table. Left out of the study_design_hash."""

    recommend: str | None = Field(
        None,
        min_length=1,
        max_length=4000,
        description="A recommendation query, e.g. 'minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1 and"
        " ttft_s.p95 <= 1': the best configuration under those conditions, printed at the session's end, on"
        " the HTML report and by `python -m pytest_llem recommend DIR` (the default of its --where).",
    )
    by: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="One answer per value of each of these fields (e.g. gpu_name, model_name).",
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
    report: ReportSettings = Field(default_factory=ReportSettings)

    @model_validator(mode="after")
    def _combinations(self) -> StudyDocument:
        return self  # combinations are judged per cell, after the sweep is expanded


#: Keys of a study file that are not experiment fields.
STUDY_ONLY_KEYS: frozenset[str] = frozenset({"name", "id", "sweep", "experiments", "execution", "report"})
