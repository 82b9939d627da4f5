"""The regression gate on a merged study: shards written as a run writes them, merged, then compared.

The shards are built like tests/test_cli.py's studies (``Manifest`` and ``build_result`` records
with known energies: the GPU is the boundary), so a real regression is there to be found.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_llem.cli import main
from pytest_llem.results.provenance import job_ids, provenance
from tests.test_cli import BASE, make_study, run_cli


def test_compare_finds_a_regression_on_the_merged_study_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    accepted = make_study(tmp_path / "accepted", "demo", BASE)
    worse = [e * 1.2 for e in BASE["fp16"]]
    one = make_study(tmp_path / "shards", "demo", {"fp16": worse}, dir_name="demo_shard1")
    two = make_study(tmp_path / "shards", "demo", {"bf16": BASE["bf16"]}, dir_name="demo_shard2")
    merged = tmp_path / "merged"
    status, out, _ = run_cli(capsys, "merge", str(merged), str(one), str(two))
    assert status == 0 and "6 cells, 6 completed" in out
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["summary"]["completed"] == 6 and manifest["summary"]["total_wall_time_s"] == 25.0  # 12.5 s each
    status, out, _ = run_cli(capsys, "compare", str(accepted), str(merged))
    assert status == 1
    assert out.splitlines()[-1] == "1 regression(s): fp16"
    # Unchanged shards merged the same way pass.
    same = make_study(tmp_path / "again", "demo", {"fp16": BASE["fp16"]}, dir_name="demo_shard1")
    assert main(["merge", str(tmp_path / "merged-ok"), str(same), str(two)]) == 0
    capsys.readouterr()
    assert main(["compare", str(accepted), str(tmp_path / "merged-ok")]) == 0


def test_merge_refuses_an_output_that_holds_something_and_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = make_study(tmp_path / "shards", "demo", {"fp16": BASE["fp16"]}, dir_name="demo_shard1")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    status, _, err = run_cli(capsys, "merge", str(tmp_path / "busy"), str(one))
    assert status == 2 and "already exists and is not empty" in err
    status, _, err = run_cli(capsys, "merge", str(tmp_path / "m"), str(tmp_path / "nowhere"))
    assert status == 2 and "nowhere is not a directory" in err


def test_provenance_names_the_job_the_host_and_never_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2", "GITHUB_RUN_ID": "99",
           "GITHUB_JOB": "shard", "HF_TOKEN": "hf_secret_value"}  # fmt: skip
    found = job_ids(env)
    assert found["slurm"] == {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "10", "SLURM_ARRAY_TASK_ID": "2"}
    assert found["github_actions"] == {"GITHUB_RUN_ID": "99", "GITHUB_JOB": "shard"}
    assert "hf_secret_value" not in json.dumps(found)  # only the named ids, never the environment
    monkeypatch.chdir(tmp_path)  # not a git repository: git is null, nothing raises
    study = tmp_path / "s.llem.yaml"
    study.write_text("")
    record = provenance("s.llem.yaml::a::c0", {"cuda_runtime": "12.8"})
    assert record["git"] is None and record["hostname"] and record["cuda_runtime_version"] == "12.8"
    assert set(record) == {"hostname", "cpu_model", "driver_version", "cuda_driver_version", "cuda_runtime_version", "jobs", "git"}
