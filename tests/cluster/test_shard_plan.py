"""Which cells shard K of N runs: read from the option or the scheduler, planned deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llem.execution.shard import ShardError, parse_shard, plan_shards, recorded_cell_s
from pytest_llem.study.study import Study, load_study
from tests.plugin.conftest import write_study

SWEEP = """
name: sweep
model: stub-ok
dataset: {n_prompts: 4}
measurement: {min_window_seconds: 0}
sweep:
  engine: [transformers, vllm]
  precision: [fp32, fp16, bf16]
execution: {n_cycles: 3}
"""


def _study(tmp_path: Path, body: str = SWEEP) -> Study:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_study(write_study(tmp_path, "sweep.llem.yaml", body))


def test_k_of_n_counts_from_one_and_says_where_it_was_read() -> None:
    spec = parse_shard("2/3", "--llem-shard", env={})
    assert (spec.index, spec.count, spec.label) == (2, 3, "2/3")
    for bad, expected in (("0/3", "not between 1 and 3"), ("4/3", "not between 1 and 3"), ("x/3", "K must be a whole number"),
                          ("3", "expected K/N"), ("1/0", "at least 1")):  # fmt: skip
        with pytest.raises(ShardError, match=expected) as caught:
            parse_shard(bad, "LLEM_SHARD", env={})
        assert f"LLEM_SHARD={bad}" in str(caught.value)


def test_a_slurm_array_not_starting_at_zero_or_stepping_gives_ranks() -> None:
    """--array=3-5: tasks 3, 4, 5 are shards 1..3; --array=0-10:5: tasks 0, 5, 10 are shards 1..3."""
    base = {"SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "5", "SLURM_ARRAY_TASK_COUNT": "3"}
    labels = [parse_shard("slurm", "--llem-shard", env={**base, "SLURM_ARRAY_TASK_ID": str(t)}).label for t in (3, 4, 5)]
    assert labels == ["1/3", "2/3", "3/3"]
    stepped = {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "10", "SLURM_ARRAY_TASK_STEP": "5"}
    assert [parse_shard("slurm", "x", env={**stepped, "SLURM_ARRAY_TASK_ID": str(t)}).label for t in (0, 5, 10)] == ["1/3", "2/3", "3/3"]
    with pytest.raises(ShardError, match="not a Slurm array task"):
        parse_shard("slurm", "--llem-shard", env={"SLURM_JOB_ID": "7"})
    with pytest.raises(ShardError, match="has 3 tasks, not 4"):
        parse_shard("slurm/4", "--llem-shard", env={**base, "SLURM_ARRAY_TASK_ID": "3"})


def test_a_kubernetes_indexed_job_pod_is_its_index_plus_one() -> None:
    assert parse_shard("k8s/4", "--llem-shard", env={"JOB_COMPLETION_INDEX": "0"}).label == "1/4"
    assert parse_shard("k8s/4", "--llem-shard", env={"JOB_COMPLETION_INDEX": "3"}).label == "4/4"
    with pytest.raises(ShardError, match="give the Job's completions"):
        parse_shard("k8s", "--llem-shard", env={"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(ShardError, match="not between 1 and 4"):
        parse_shard("k8s/4", "--llem-shard", env={"JOB_COMPLETION_INDEX": "4"})


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("by", ["config", "cell"])
def test_the_shards_are_disjoint_and_cover_every_cell_once(tmp_path: Path, count: int, by: str) -> None:
    study = _study(tmp_path)
    plan = plan_shards(study, count, by)  # type: ignore[arg-type]
    shards = [plan.cells_of(k) for k in range(1, count + 1)]
    every = [cell for cells in shards for cell in cells]
    assert sorted(every) == sorted(f"{c.config_id}::{study.cycle_name(k)}" for c, k in study.run_order())
    assert len(every) == len(set(every)) == 18
    if by == "config":  # a configuration's cycles share a shard
        for cells in shards:
            configs = {c.split("::")[0] for c in cells}
            assert all(sum(c.startswith(f"{cfg}::") for c in cells) == 3 for cfg in configs)
    again = plan_shards(_study(tmp_path / "again"), count, by)  # type: ignore[arg-type]
    assert [again.cells_of(k) for k in range(1, count + 1)] == shards  # deterministic


def test_shards_are_balanced_by_expected_cost_with_lpt(tmp_path: Path) -> None:
    """vLLM configurations cost more to start (3 x 90 s) than transformers ones (3 x 15 s): LPT puts two vLLM
    configurations on shard 1 and the third with every transformers one on shard 2 (540 s against 405 s),
    where a round-robin by count would have put 405 s against 540 s the other way or worse."""
    plan = plan_shards(_study(tmp_path), 2)
    assert plan.loads_s == [540.0, 405.0]
    vllm = [sum("vllm" in c for c in plan.cells_of(k)) for k in (1, 2)]
    assert vllm == [6, 3]
    assert len(plan.cells_of(2)) == 12


def test_recorded_durations_from_an_earlier_run_steer_the_plan(tmp_path: Path) -> None:
    study = _study(tmp_path)
    slow = study.configurations[0].config_id
    entries = [
        {"experiment_id": f"{c.config_id}::c0", "config_id": c.config_id,
         "timeline": [{"phase": "window", "seconds": 1000.0 if c.config_id == slow else 10.0}]}
        for c in study.configurations
    ]  # fmt: skip
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "manifest.json").write_text(json.dumps({"experiments": entries}))
    recorded = recorded_cell_s(tmp_path / "earlier")
    assert recorded[slow] == 1000.0
    plan = plan_shards(study, 2, recorded=recorded)
    assert {c.split("::")[0] for c in plan.cells_of(1)} == {slow}  # the slow one alone; the rest together
    table = "\n".join(plan.table())
    assert "from an earlier run" in table and "3000" in table
    with pytest.raises(ShardError, match="cannot read"):
        recorded_cell_s(tmp_path / "nowhere")
