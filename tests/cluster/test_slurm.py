"""A study's shards on a real (one-node) Slurm cluster: the sbatch example and the submitit launcher, then merge and gate.

The study is the quickstart's CPU cells cut to what a loaded 2-core machine runs in a minute or
two: the embedded tiny model, transformers, 4 prompts, one cycle, two configurations, so each of
the two array tasks measures one cell.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_llem.cli import main
from pytest_llem.results.loader import load_results
from tests.cluster.conftest import SlurmCluster
from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "cluster" / "slurm-array.sbatch"


def _small_quickstart(directory: Path) -> Path:
    study = yaml.safe_load((ROOT / "examples" / "quickstart.llem.yaml").read_text())
    study["dataset"]["n_prompts"] = 4
    study["max_output_tokens"] = 8
    study["sweep"]["precision"] = ["fp32"]
    study["execution"]["n_cycles"] = 1
    path = directory / "quickstart.llem.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _merged_and_gated(out: Path, shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(out), str(shards), "--require-complete"]) == 0, capsys.readouterr()
    capsys.readouterr()
    result = load_results(out)
    assert sorted(r["experiment_id"] for r in result.experiments) == ["fp32-bs1::c0", "fp32-bs4::c0"]
    jobs = [r["provenance"]["jobs"]["slurm"] for r in result.experiments]
    assert len({j["SLURM_ARRAY_JOB_ID"] for j in jobs}) == 1 and len({j["SLURM_JOB_ID"] for j in jobs}) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(s["shard"] for s in manifest["shards"]) == ["1/2", "2/2"]
    # The gate on the merged study: compare exits 0 with no regression (judged against itself).
    assert main(["compare", str(out), str(out), "--rule", "avg_tokens_per_second.median:50%"]) == 0


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="Slurm is not installed here: apt-get install -y slurm-wlm munge")
def test_the_sbatch_array_example_runs_shards_that_merge_into_the_study(
    slurm_cluster: SlurmCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _small_quickstart(tmp_path)
    env = {**slurm_cluster.env, "LLEM_SHARD_RESULTS": str(tmp_path / "shards"), "PATH": f"{Path(sys.executable).parent}:{slurm_cluster.env['PATH']}"}
    # --array=3-4: an array that does not start at 0 still makes shards 1/2 and 2/2. No GPU here: --gres=none.
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=3-4", "--gres=none", "--cpus-per-task=1", f"--output={tmp_path}/llem-%A_%a.out",
         str(SCRIPT), str(study)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=scaled(60), check=False,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    slurm_cluster.wait(job, timeout=300)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("llem-*.out")))
    assert "1 passed, 1 deselected" in logs, logs
    _merged_and_gated(tmp_path / "merged", tmp_path / "shards", capsys)


def test_the_submitit_launcher_submits_an_array_waits_and_merges(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit", reason="the launcher needs submitit: pip install 'pytest-llem[cluster]'")
    study = _small_quickstart(tmp_path)
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)
    status = main([
        "submit", str(study), "--shards", "2", "--gpus", "0", "--cpus-per-task", "1", "--time", "10",
        "--results-dir", str(tmp_path / "shards"), "--out", str(tmp_path / "merged"),
    ])  # fmt: skip
    text, err = capsys.readouterr()
    assert status == 0, text + err
    assert "merged: " in text and "2 of 2 cells completed" in text
    capsys.readouterr()
    shutil.rmtree(tmp_path / "merged")
    _merged_and_gated(tmp_path / "merged", tmp_path / "shards", capsys)
