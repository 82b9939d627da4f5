"""Shards of a study run by pytest, then merged into one study that show, repair, ls and compare read.

The cells use the stub ``transformers`` (tests/fakes): real children, real records, no model.
The Kubernetes and GitHub Actions examples are run as far as they can be here: their own
commands, with the environment their platform would set.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pytest_llem.cli import main
from pytest_llem.results.loader import load_results
from tests.plugin.conftest import STUB_STUDY, write_study

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "cluster"
#: 4 configurations x 2 cycles = 8 cells of a stub model; STUDY_1 has 1 cycle (4 cells), for speed.
STUDY = STUB_STUDY.replace("transformers: {batch_size: 2}\n", "") + (
    "name: sharded\nsweep:\n  precision: [fp32, bf16]\n  transformers.batch_size: [1, 2]\nexecution: {n_cycles: 2}\n"
)
STUDY_1 = STUDY.replace("n_cycles: 2", "n_cycles: 1")
ALL_CELLS = {f"{p}-bs{b}::c{k}" for p in ("fp32", "bf16") for b in (1, 2) for k in (0, 1)}


def _study_dirs(results: Path) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir() and (p / "manifest.json").exists())


def _manifest(study_dir: Path) -> dict[str, object]:
    return json.loads((study_dir / "manifest.json").read_text())  # type: ignore[no-any-return]


def _shard(pytester: pytest.Pytester, spec: str, results: str, *extra: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "s.llem.yaml", f"--llem-shard={spec}", f"--llem-results-dir={results}", *extra)


def test_two_shards_deselect_like_k_and_merge_into_the_whole_study(
    pytester: pytest.Pytester, stub_transformers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_study(pytester.path, "s.llem.yaml", STUDY)
    for k in (1, 2):
        _shard(pytester, f"{k}/2", "shards").assert_outcomes(passed=4, deselected=4)
    shards = _study_dirs(pytester.path / "shards")
    held = [json.loads((d / "_study-artefacts" / "shard.json").read_text()) for d in shards]
    assert sorted(h["shard"] for h in held) == ["1/2", "2/2"]
    for study_dir, shard in zip(shards, held):  # a shard's manifest lists its own cells, and only those
        listed = {e["experiment_id"] for e in _manifest(study_dir)["experiments"]}  # type: ignore[attr-defined]
        assert listed == set(shard["cells"]) and len(listed) == 4
        assert len({c.split("::")[0] for c in listed}) == 2  # whole configurations
    assert set(held[0]["cells"]) | set(held[1]["cells"]) == ALL_CELLS

    out = pytester.path / "merged"
    assert main(["merge", str(out), str(pytester.path / "shards"), "--require-complete"]) == 0
    text = capsys.readouterr().out
    assert "complete: every cell of the study is here and completed" in text and "shard 1/2: 4 cells (4 completed)" in text
    merged = _manifest(out)
    assert merged["summary"]["completed"] == 8 and merged["summary"]["total_experiments"] == 8  # type: ignore[index]
    assert merged["merged"]["complete"] is True and len(merged["shards"]) == 2  # type: ignore[index, arg-type]
    result = load_results(out)
    assert {r["experiment_id"] for r in result.experiments} == ALL_CELLS
    assert all(r["provenance"]["hostname"] == os.uname().nodename for r in result.experiments)
    record = next(out.glob("*/result.json"))
    original = next(p for d in shards for p in d.glob(f"{record.parent.name}/result.json"))
    assert record.read_bytes() == original.read_bytes()  # carried over unchanged (hard-linked here)
    assert os.stat(record).st_ino == os.stat(original).st_ino
    assert main(["repair", str(out)]) == 0 and "already consistent" in capsys.readouterr().out
    assert main(["show", str(out)]) == 0 and "fp32-bs1::c1" in capsys.readouterr().out
    assert main(["ls", str(pytester.path)]) == 0 and "merged" in capsys.readouterr().out
    # The gate on a finished study works on the merged one (no regression against itself).
    assert main(["compare", str(out), str(out), "--rule", "avg_tokens_per_second.median:50%"]) == 0


def test_a_missing_shard_is_listed_and_marks_the_merge_incomplete(
    pytester: pytest.Pytester, stub_transformers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_study(pytester.path, "s.llem.yaml", STUDY_1)
    _shard(pytester, "2/4", "shards").assert_outcomes(passed=1, deselected=3)
    (shard,) = _study_dirs(pytester.path / "shards")
    out = pytester.path / "merged"
    assert main(["merge", str(out), str(shard), "--require-complete"]) == 1
    text = capsys.readouterr().out
    assert "INCOMPLETE:" in text and "in no shard given (3)" in text
    merged = _manifest(out)
    assert merged["merged"]["complete"] is False and len(merged["merged"]["missing_cells"]) == 3  # type: ignore[index, arg-type]
    assert any("merged study incomplete" in w for w in merged["summary"]["warnings"])  # type: ignore[index, union-attr]
    # The same shard twice (a failed run and its re-run), or another study: refused, naming both.
    copy = pytester.path / "copy"
    copy.mkdir()
    os.system(f"cp -a {shlex.quote(str(shard))} {shlex.quote(str(copy / 'again'))}")
    assert main(["merge", str(pytester.path / "m2"), str(shard), str(copy / "again")]) == 2
    assert re.search(r"cell \S+ is in both .*shards.* and .*again", capsys.readouterr().err)
    write_study(pytester.path, "s.llem.yaml", STUDY_1.replace("max_output_tokens: 4", "max_output_tokens: 3"))
    _shard(pytester, "1/4", "other").assert_outcomes(passed=1, deselected=3)
    (other,) = _study_dirs(pytester.path / "other")
    assert main(["merge", str(pytester.path / "m3"), str(shard), str(other)]) == 2
    err = capsys.readouterr().err
    assert "are not shards of one study: study_design_hash" in err and str(shard) in err and str(other) in err


def test_the_shard_plan_prints_and_runs_nothing_and_bad_shards_are_usage_errors(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_study(pytester.path, "s.llem.yaml", STUDY)
    result = pytester.runpytest("-p", "no:cacheprovider", "s.llem.yaml", "--llem-shard=3", "--llem-shard-plan")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["llem shard plan: sharded (s.llem.yaml), 8 cells in 3 shards, by configuration*", "shard*"])
    assert not (pytester.path / "results").exists()
    assert pytester.runpytest("s.llem.yaml", "--llem-shard=4/3").ret == pytest.ExitCode.USAGE_ERROR
    monkeypatch.setenv("LLEM_SHARD", "slurm")  # not inside an array task
    result = pytester.runpytest("s.llem.yaml", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*LLEM_SHARD=slurm: SLURM_ARRAY_TASK_ID is not set*"])
    monkeypatch.setenv("LLEM_SHARD", "2/2")
    pytester.runpytest("s.llem.yaml", "--collect-only").assert_outcomes(deselected=4)
    adaptive = STUDY.replace("execution: {n_cycles: 2}", "execution: {n_cycles: 2, target_ci_pct: 5}")
    write_study(pytester.path, "s.llem.yaml", adaptive)
    result = pytester.runpytest("s.llem.yaml", "--collect-only", "--llem-shard-by=cell")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llem-shard-by=cell would split the cycles*"])


def test_a_shard_resumes_only_its_own_directory(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    write_study(pytester.path, "s.llem.yaml", STUDY_1)
    _shard(pytester, "1/2", "shards").assert_outcomes(passed=2, deselected=2)
    (first,) = _study_dirs(pytester.path / "shards")
    result = _shard(pytester, "2/2", "shards", f"--llem-resume={first}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*holds shard 1/2, and this session runs shard 2/2*"])
    _shard(pytester, "1/2", "shards", f"--llem-resume={first}").assert_outcomes(deselected=4)


def _k8s_command() -> tuple[list[str], int]:
    job = yaml.safe_load((EXAMPLES / "k8s-indexed-job.yaml").read_text())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return list(container["command"]), int(job["spec"]["completions"])


def test_the_kubernetes_indexed_job_example_runs_its_pods_and_merges(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each pod of the Job as Kubernetes starts it: JOB_COMPLETION_INDEX set, the example's own command."""
    command, completions = _k8s_command()
    assert command[:3] == ["python", "-m", "pytest"] and f"--llem-shard=k8s/{completions}" in command
    write_study(pytester.path, "s.llem.yaml", STUDY_1)
    args = ["s.llem.yaml" if a.endswith(".llem.yaml") else a.replace("/results/", "results/") for a in command[3:]]
    for index in range(completions):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        monkeypatch.setenv("POD_NAME", f"llem-sweep-{index}-abcde")
        pytester.runpytest(*args).assert_outcomes(passed=1, deselected=3)
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    assert main(["merge", str(pytester.path / "merged"), str(pytester.path / "results" / "shards"), "--require-complete"]) == 0
    result = load_results(pytester.path / "merged")
    pods = {r["provenance"]["jobs"]["kubernetes"]["POD_NAME"] for r in result.experiments}
    assert len(result.experiments) == 4 and len(pods) == completions


def _workflow_steps() -> tuple[list[int], str, list[str]]:
    workflow = yaml.safe_load((EXAMPLES / "github-actions-matrix.yml").read_text())
    shard_job, merge_job = workflow["jobs"]["shard"], workflow["jobs"]["merge-and-gate"]
    (pytest_line,) = [s["run"] for s in shard_job["steps"] if "run" in s and "--llem-shard" in s["run"]]
    gate = [s["run"] for s in merge_job["steps"] if "run" in s and "pytest_llem" in s["run"]]
    return list(shard_job["strategy"]["matrix"]["shard"]), pytest_line, gate


def test_the_github_actions_matrix_example_runs_its_shards_merges_and_gates(
    pytester: pytest.Pytester, stub_transformers: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each matrix job's pytest line, with its shard substituted; the artifacts laid out as download-artifact does."""
    shards, line, gate = _workflow_steps()
    write_study(pytester.path, "s.llem.yaml", STUDY_1)
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")
    for shard in shards:
        monkeypatch.setenv("GITHUB_JOB", f"shard-{shard}")
        command = shlex.split(line.replace("${{ matrix.shard }}", str(shard)).split("||")[0])
        assert command[:3] == ["python", "-m", "pytest"]
        args = ["s.llem.yaml" if a.endswith(".llem.yaml") else a.replace("=shards", f"=shards/shard-{shard}") for a in command[3:]]
        assert pytester.runpytest(*args).ret == 0
    monkeypatch.chdir(pytester.path)
    merge_line, compare_line = gate
    merge_args = shlex.split(merge_line)[3:]
    merge_args = [a for pattern in merge_args for a in (sorted(str(p) for p in Path().glob(pattern)) if "*" in pattern else [pattern])]
    assert main(merge_args) == 0
    (Path("accepted")).symlink_to(Path("merged").resolve())  # an accepted run: here, the same one
    assert main(shlex.split(compare_line)[3:]) == 0
    result = load_results(Path("merged"))
    assert {r["provenance"]["jobs"]["github_actions"]["GITHUB_RUN_ID"] for r in result.experiments} == {"4242"}
    assert len({r["provenance"]["jobs"]["github_actions"]["GITHUB_JOB"] for r in result.experiments}) == len(shards)


def test_a_shard_left_without_cells_succeeds(pytester: pytest.Pytester, stub_transformers: Path) -> None:
    """Five array tasks for a study of four configurations: the fifth has nothing to do, and says so
    with exit status 0 (pytest's "no tests ran" would fail the array task or CI job)."""
    write_study(pytester.path, "sharded.llem.yaml", STUDY_1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llem-shard=5/5")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(deselected=4)
    # Without a shard, a selection that leaves nothing is still pytest's own failure.
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "nothing-matches").ret == 5
