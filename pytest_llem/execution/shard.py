"""Sharding a study over machines: which cells shard K of N runs.

One machine is not always enough: a 60-configuration study on one GPU takes a night, on a
Slurm array of 8 an hour. Each shard is an ordinary pytest run of the whole study file with the
cells of other shards deselected (as ``-k`` deselects), writing a study directory of its own;
``python -m pytest_llem merge`` joins the directories afterwards (results/merge.py).

The assignment is a function of the study alone (and of an earlier run's durations, when given),
never of the machine or of ``-k``: every shard computes the same plan, so the shards are
disjoint and their union is every cell exactly once, without talking to each other.

* A configuration stays whole by default: its cycles share a machine, so they share its GPU,
  its idle baseline and its thermal state, and the spread across cycles measures the
  configuration rather than the machines. ``by="cell"`` splits cycles too (more balance, but a
  configuration's figures then mix machines).
* Shards are balanced by expected cost with the longest-processing-time greedy rule (LPT: the
  costliest unit first, each onto the least-loaded shard; ties go to the lower shard and the
  earlier unit), which is within 4/3 of the best balance and deterministic.
* The cost of a cell is an estimate (the engine's start-up, warm-up and the measured window),
  or, from an earlier run's manifest, the configuration's mean recorded cell time.

Knows nothing of pytest: the session parses the option, asks for the plan and deselects.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_llem.results.merge import SHARD_FILE
from pytest_llem.results.writer import write_json_atomic
from pytest_llem.study.study import Configuration, Study

ShardBy = Literal["config", "cell"]

#: Rough seconds from spawning a cell to its first measured batch, per engine (CUDA
#: initialisation, weights, the engine's own start-up and warm-up). Only the ratios matter: they
#: weigh a vLLM configuration against a transformers one when no earlier run says better.
ENGINE_START_S: dict[str, float] = {"transformers": 15.0, "vllm": 90.0, "tensorrt": 180.0}
DEFAULT_START_S = 30.0
#: What a cell that cannot run (an invalid or skipped configuration) costs: nearly nothing.
UNRUNNABLE_COST_S = 0.01


class ShardError(ValueError):
    """A shard option that cannot be read, or an environment that does not say what it names."""


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` (1-based, as users count) of ``count``, and where that was read."""

    index: int
    count: int
    source: str

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def _int(text: str, what: str, source: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ShardError(f"{source}: {what} must be a whole number, got {text!r}") from None


def _slurm(env: Mapping[str, str], count_given: str | None, source: str) -> ShardSpec:
    """The shard of this Slurm array task: its place among the array's indices, which need not start at 0.

    ``--array=3-8`` gives task ids 3..8 (MIN 3), ``--array=0-10:2`` ids 0,2,..10 (STEP 2): the
    shard is the task's rank in the array, and the count is the array's size.
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        raise ShardError(
            f"{source}: SLURM_ARRAY_TASK_ID is not set: this is not a Slurm array task (submit with sbatch --array=0-N)"
        )
    task = _int(env["SLURM_ARRAY_TASK_ID"], "SLURM_ARRAY_TASK_ID", source)
    low = _int(env.get("SLURM_ARRAY_TASK_MIN", "0"), "SLURM_ARRAY_TASK_MIN", source)
    step = _int(env.get("SLURM_ARRAY_TASK_STEP", "1") or "1", "SLURM_ARRAY_TASK_STEP", source) or 1
    if "SLURM_ARRAY_TASK_COUNT" in env:
        count = _int(env["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_COUNT", source)
    elif "SLURM_ARRAY_TASK_MAX" in env:
        count = (_int(env["SLURM_ARRAY_TASK_MAX"], "SLURM_ARRAY_TASK_MAX", source) - low) // step + 1
    else:
        raise ShardError(f"{source}: neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is set")
    if count_given is not None and _int(count_given, "the shard count", source) != count:
        raise ShardError(f"{source}: the Slurm array has {count} tasks, not {count_given}")
    if (task - low) % step:
        raise ShardError(f"{source}: task {task} is not in the array {low}..:{step}")
    return _checked((task - low) // step + 1, count, f"{source} (SLURM_ARRAY_TASK_ID={task})")


def _k8s(env: Mapping[str, str], count_given: str | None, source: str) -> ShardSpec:
    """A Kubernetes Indexed Job's pod: ``JOB_COMPLETION_INDEX`` (0-based); the count is the Job's completions."""
    if count_given is None:
        raise ShardError(f"{source}: give the Job's completions as the shard count, e.g. k8s/4")
    if "JOB_COMPLETION_INDEX" not in env:
        raise ShardError(f"{source}: JOB_COMPLETION_INDEX is not set: this is not a pod of an Indexed Job")
    index = _int(env["JOB_COMPLETION_INDEX"], "JOB_COMPLETION_INDEX", source)
    return _checked(index + 1, _int(count_given, "the shard count", source), f"{source} (JOB_COMPLETION_INDEX={index})")


def _checked(index: int, count: int, source: str) -> ShardSpec:
    if count < 1:
        raise ShardError(f"{source}: the shard count must be at least 1, got {count}")
    if not 1 <= index <= count:
        raise ShardError(f"{source}: shard {index} is not between 1 and {count}")
    return ShardSpec(index, count, source)


def parse_shard(text: str, source: str, env: Mapping[str, str] | None = None, *, plan_only: bool = False) -> ShardSpec:
    """``K/N`` (1 <= K <= N), ``slurm`` (or ``slurm/N``), or ``k8s/N``, read where ``source`` says.

    ``plan_only`` (``--llem-shard-plan``, on a login node before submitting): a bare ``N`` is
    enough, and gives shard 0, none in particular.
    """
    env = os.environ if env is None else env
    kind, _, count = text.strip().partition("/")
    where = f"{source}={text}"
    if plan_only and not count and kind.strip().isdigit():
        return ShardSpec(0, _checked(1, _int(kind, "N", where), where).count, where)
    if kind.lower() == "slurm":
        return _slurm(env, count or None, where)
    if kind.lower() in ("k8s", "kubernetes"):
        return _k8s(env, count or None, where)
    if not count:
        raise ShardError(f"{where}: expected K/N (shard K of N, counting from 1), slurm, or k8s/N")
    return _checked(_int(kind, "K", where), _int(count, "N", where), where)


def parse_shard_by(text: str, source: str) -> ShardBy:
    if text == "config":
        return "config"
    if text == "cell":
        return "cell"
    raise ShardError(f"{source}={text}: expected config (a configuration's cycles stay on one shard) or cell")


# -- costs ------------------------------------------------------------------------------------


def estimated_cell_s(configuration: Configuration) -> float:
    """What one cycle of a configuration is expected to take, before any run says better."""
    if not configuration.runnable or configuration.config is None:
        return UNRUNNABLE_COST_S
    measurement = configuration.config.measurement
    return ENGINE_START_S.get(configuration.engine, DEFAULT_START_S) + measurement.min_window_seconds


def recorded_cell_s(source: Path) -> dict[str, float]:
    """config id -> mean seconds of its cells in an earlier run (a study directory or its manifest.json).

    A cell's time is its entry's ``timeline`` total, else its record's ``cell_wall_time_s``;
    cells without either (never run, cut off) say nothing.
    """
    path = source / "manifest.json" if source.is_dir() else source
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShardError(f"--llem-shard-costs={source}: cannot read {path}: {exc}") from None
    entries = data.get("experiments") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ShardError(f"--llem-shard-costs={source}: {path} has no experiments list (is it a study's manifest.json?)")
    seconds: dict[str, list[float]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("config_id"), str):
            continue
        value = _entry_seconds(entry)
        if value is not None:
            seconds.setdefault(entry["config_id"], []).append(value)
    return {config_id: sum(v) / len(v) for config_id, v in seconds.items()}


def _entry_seconds(entry: dict[str, Any]) -> float | None:
    timeline = entry.get("timeline")
    if isinstance(timeline, list):
        total = sum(p.get("seconds", 0.0) for p in timeline if isinstance(p, dict) and isinstance(p.get("seconds"), (int, float)))
        if total > 0 and math.isfinite(total):
            return float(total)
    wall = entry.get("cell_wall_time_s")
    return float(wall) if isinstance(wall, (int, float)) and wall > 0 and math.isfinite(wall) else None


# -- the plan ---------------------------------------------------------------------------------


@dataclass
class Unit:
    """What goes to one shard whole: a configuration's cycles, or one cell."""

    config_id: str
    cycles: list[int]
    cost_s: float
    first_position: int  # where it first runs in the study's order: the tie-break
    recorded: bool  # the cost came from an earlier run


@dataclass
class ShardPlan:
    """Every cell of a study, assigned to one of ``count`` shards."""

    study: Study
    count: int
    by: ShardBy
    units: list[Unit]
    shard_of: dict[tuple[str, int], int] = field(default_factory=dict)  # (config id, cycle) -> 1-based shard
    loads_s: list[float] = field(default_factory=list)

    def cells_of(self, index: int) -> list[str]:
        """Experiment ids of shard ``index``, in the study's run order."""
        return [
            f"{configuration.config_id}::{self.study.cycle_name(cycle)}"
            for configuration, cycle in self.study.run_order()
            if self.shard_of[(configuration.config_id, cycle)] == index
        ]

    def holds(self, index: int, config_id: str, cycle: int) -> bool:
        """Whether shard ``index`` runs the cell; an adaptive cycle (beyond the plan) goes with its configuration."""
        found = self.shard_of.get((config_id, cycle))
        if found is None:
            found = min((s for (c, _), s in self.shard_of.items() if c == config_id), default=None)
        return found == index

    def table(self) -> list[str]:
        """The plan as ``--llem-shard-plan`` prints it: per shard its expected seconds and its units."""
        recorded = "from an earlier run where recorded, else " if any(u.recorded for u in self.units) else ""
        lines = [
            (
                f"llem shard plan: {self.study.name} ({self.study.path.name}), {len(self.shard_of)} cells in"
                f" {self.count} shards, by {'configuration' if self.by == 'config' else 'cell'}; expected seconds"
                f" per shard ({recorded}estimated: cycles x engine start-up and window)"
            ),
        ]
        width = max([len(u.config_id) for u in self.units] + [13])
        lines.append(f"{'shard':<5}  {'cells':>5}  {'expected s':>10}  {'configuration':<{width}}  cycles")
        lines.append(f"{'-' * 5}  {'-' * 5}  {'-' * 10}  {'-' * width}  ------")
        for index in range(1, self.count + 1):
            units = [u for u in self.units if self.shard_of[(u.config_id, u.cycles[0])] == index]
            cells = sum(len(u.cycles) for u in units)
            rows = [(u.config_id, ",".join(self.study.cycle_name(k) for k in u.cycles)) for u in units] or [("(no cells)", "")]
            for row, (config_id, names) in enumerate(rows):
                head = f"{index:<5}  {cells:>5}  {self.loads_s[index - 1]:>10.0f}" if row == 0 else " " * 25
                lines.append(f"{head}  {config_id:<{width}}  {names}".rstrip())
        return lines

    def describe(self, index: int) -> dict[str, Any]:
        """What a shard's study directory says of itself (``_study-artefacts/shard.json``)."""
        return {
            "shard": self.label(index),
            "index": index,
            "count": self.count,
            "by": self.by,
            "study_name": self.study.name,
            "study_design_hash": self.study.design_hash,
            "cells": self.cells_of(index),
            "all_cells": [f"{c.config_id}::{self.study.cycle_name(k)}" for c, k in self.study.run_order()],
            "expected_s": self.loads_s[index - 1],
        }

    def label(self, index: int) -> str:
        return f"{index}/{self.count}"


def _units(study: Study, by: ShardBy, recorded: Mapping[str, float]) -> list[Unit]:
    cycles: dict[str, list[int]] = {}
    first: dict[str, int] = {}
    configurations: dict[str, Configuration] = {}
    for position, (configuration, cycle) in enumerate(study.run_order(), start=1):
        cycles.setdefault(configuration.config_id, []).append(cycle)
        first.setdefault(configuration.config_id, position)
        configurations[configuration.config_id] = configuration
    units: list[Unit] = []
    for config_id, its_cycles in cycles.items():
        configuration = configurations[config_id]
        known = config_id in recorded and configuration.runnable
        per_cell = recorded[config_id] if known else estimated_cell_s(configuration)
        if by == "config":
            units.append(Unit(config_id, sorted(its_cycles), per_cell * len(its_cycles), first[config_id], known))
        else:
            places = {k: study.position(configuration, k) for k in its_cycles}
            units += [Unit(config_id, [k], per_cell, places[k], known) for k in sorted(its_cycles)]
    return units


def plan_shards(study: Study, count: int, by: ShardBy = "config", recorded: Mapping[str, float] | None = None) -> ShardPlan:
    """Assign every cell of ``study`` to one of ``count`` shards by LPT (deterministic)."""
    if count < 1:
        raise ShardError(f"the shard count must be at least 1, got {count}")
    units = _units(study, by, recorded or {})
    loads = [0.0] * count
    plan = ShardPlan(study=study, count=count, by=by, units=units)
    # Costliest first; equal costs in the study's run order. Onto the least-loaded shard, lowest first.
    for unit in sorted(units, key=lambda u: (-u.cost_s, u.first_position)):
        target = min(range(count), key=lambda i: (loads[i], i))
        loads[target] += unit.cost_s
        for cycle in unit.cycles:
            plan.shard_of[(unit.config_id, cycle)] = target + 1
    plan.loads_s = loads
    return plan


def write_shard_file(study_dir: Path, plan: ShardPlan, index: int, source: str) -> None:
    """Say in the study directory which shard it holds, of which plan (read by ``merge``)."""
    write_json_atomic(study_dir / SHARD_FILE, {**plan.describe(index), "source": source, "host": socket.gethostname()})


def read_shard_file(study_dir: Path) -> dict[str, Any] | None:
    """The shard a study directory holds, or None for a directory of a whole (unsharded) run."""
    try:
        data = json.loads((study_dir / SHARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
