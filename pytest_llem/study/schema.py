"""The study file's own blocks: ``execution``, ``experiments`` and the whole document.

A study file holds the fields of :class:`~pytest_llem.config.experiment.ExperimentConfig`
(shared by every cell, declared in :mod:`pytest_llem.config`) plus the study-only blocks
``sweep``, ``experiments``, ``execution``, ``name`` and ``id`` declared here. Every model
forbids unknown keys, so a misspelt key is an error, never a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pytest_llem.config.base import StrictModel
from pytest_llem.config.engines import EngineName
from pytest_llem.config.experiment import ExperimentConfig


class ExecutionConfig(StrictModel):
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
