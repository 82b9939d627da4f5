"""The example study, run for real on the embedded tiny model on the CPU.

Checks every file and every field of the results contract (shared/spec/results-schema.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pytest_llem.results.record import CONTRACT_FIELDS
from tests.timing import scaled

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.llem.yaml"
SECRET = "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"
MANIFEST_FIELDS = {"study_name", "study_design_hash", "start_time", "end_time", "experiments", "summary"}
SUMMARY_FIELDS = {"total_experiments", "completed", "failed", "total_wall_time_s", "total_energy_j", "unique_configurations", "warnings"}


def _run_example(root: Path) -> subprocess.CompletedProcess[str]:
    """``pytest quickstart.llem.yaml`` in ``root``, with a secret in the environment."""
    shutil.copy(EXAMPLE, root / EXAMPLE.name)
    # About a minute on a quiet 2-core machine; the limit only stops a run that hangs.
    return subprocess.run(
        [sys.executable, "-m", "pytest", EXAMPLE.name, "-p", "no:cacheprovider", "-rA",
         "--json-report", "--json-report-file=report.json"],
        check=False, cwd=root, capture_output=True, text=True, timeout=scaled(1200),
        env={**os.environ, "HF_TOKEN": SECRET},
    )  # fmt: skip


def _shared_example_run(shared: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run for all pytest-xdist workers: the first to take the lock runs the example, the
    others wait for it and read what it printed (two runs at once would only slow both)."""
    shared.mkdir(exist_ok=True)
    done = shared / "example-run.json"
    with open(shared / "example-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not done.exists():
            root = Path(tempfile.mkdtemp(prefix="example", dir=shared))  # a failed attempt's files stay apart
            proc = _run_example(root)
            saved = {"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
            done.write_text(json.dumps({"root": str(root), "proc": saved}))
    saved = json.loads(done.read_text())
    return subprocess.CompletedProcess(**saved["proc"]), Path(saved["root"])


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # The workers' temporary directories share this parent, which is new each session.
        proc, root = _shared_example_run(tmp_path_factory.getbasetemp().parent / "llem-end-to-end")
    else:
        root = tmp_path_factory.mktemp("example")
        proc = _run_example(root)
    (study_dir,) = (root / "results").iterdir()
    return proc, study_dir


def test_statistics_across_cycles_are_written_and_printed(example_run: tuple[object, Path]) -> None:
    proc, study_dir = example_run
    summary = json.loads((study_dir / "summary.json").read_text())
    groups = summary["groups"]
    assert len(groups) == 4 and all(g["n_records"] == 2 for g in groups)
    tps = groups[0]["metrics"]["avg_tokens_per_second"]
    assert tps["n"] == 2 and tps["ci_method"] == "student-t" and tps["ci_low"] <= tps["mean"] <= tps["ci_high"]
    assert groups[0]["metrics"]["mj_per_tok_total"]["n"] == 0  # no energy on the CPU
    rows = (study_dir / "summary.csv").read_text().splitlines()
    assert "metric,n,mean,median,std,cv,ci_low,ci_high,ci_method" in rows[0]  # columns are only ever added
    assert "across cycles (summary.json, summary.csv):" in proc.stdout  # type: ignore[attr-defined]


def test_json_report_carries_cell_figures_and_study_statistics(example_run: tuple[object, Path]) -> None:
    _, study_dir = example_run
    report = json.loads((study_dir.parent.parent / "report.json").read_text())
    cells = [t for t in report["tests"] if t["nodeid"].startswith("quickstart.llem.yaml::")]
    assert len(cells) == 8
    figures = cells[0]["metadata"]["llem"]
    assert figures["total_tokens"] > 0 and figures["energy_meter"] == "none"
    (study,) = report["llem"]["studies"]
    assert study["study_name"] == "quickstart" and Path(study["study_dir"]) == study_dir
    assert len(study["statistics"]) == 4
    # pytest-json-report reads the studies in its own (tryfirst) sessionfinish: the wall time must
    # already be in the manifest then, not set by ours afterwards.
    assert study["summary"]["total_wall_time_s"] > 0


def test_every_cell_passes(example_run: tuple[object, Path]) -> None:
    proc, study_dir = example_run
    assert proc.returncode == 0, proc.stdout[-3000:]  # type: ignore[attr-defined]
    assert "8 passed" in proc.stdout  # type: ignore[attr-defined]
    assert f"results: {study_dir}" in proc.stdout  # type: ignore[attr-defined]
    assert "energy: not measured (inference ran on the CPU" in proc.stdout  # type: ignore[attr-defined]


def test_layout_matches_the_contract(example_run: tuple[object, Path]) -> None:
    _, study_dir = example_run
    assert study_dir.name.startswith("quickstart_20")
    cells = sorted(p.name for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert [c[:7] for c in cells] == ["001_c0_", "002_c0_", "003_c0_", "004_c0_", "005_c1_", "006_c1_", "007_c1_", "008_c1_"]
    # Sibling cycles of one configuration share the tail (model, engine, hash).
    assert cells[0][7:] == cells[4][7:] and cells[0].endswith(cells[4].split("_")[-1])
    for cell in cells:
        assert "llem-tiny-transformers_" in cell
        files = {p.name for p in (study_dir / cell).iterdir()}
        assert {"result.json", "effective_config.json", "child.log"} <= files
        assert "timeseries.parquet" not in files  # no GPU here: no samples to write


def test_result_records_hold_every_contract_field(example_run: tuple[object, Path]) -> None:
    _, study_dir = example_run
    for result_path in sorted(study_dir.glob("*/result.json")):
        record = json.loads(result_path.read_text())
        missing = [f for f in CONTRACT_FIELDS if f not in record]
        assert not missing, f"{result_path}: missing {missing}"
        assert record["schema_version"] == "3.0"
        assert len(record["measurement_config_hash"]) == 16
        assert result_path.parent.name.endswith(record["measurement_config_hash"])
        assert record["engine"] == "transformers" and record["engine_version"]
        assert record["model_name"] == "llem-tiny"
        # ignore_eos: every request yields exactly max_output_tokens (32) tokens, 8 prompts a pass.
        assert record["total_tokens"] == record["passes"] * 8 * 32
        assert record["total_inference_time_sec"] >= 1.0  # min_window_seconds
        assert record["avg_tokens_per_second"] == pytest.approx(record["total_tokens"] / record["total_inference_time_sec"])
        # No GPU: energy figures are null and the record says why.
        for field in ("total_energy_j", "avg_energy_per_token_j", "mj_per_tok_total", "mj_per_tok_adjusted",
                      "baseline_power_w", "energy_adjusted_j", "energy_per_device_j", "timeseries"):  # fmt: skip
            assert record[field] is None, field
        assert record["energy_meter"] == "none"
        assert "CPU" in record["energy_unavailable_reason"]
        params = record["parameter_count"]
        assert params > 100_000
        assert record["total_flops"] == pytest.approx(2 * params * (record["total_tokens"] + record["total_input_tokens"]))
        assert record["flops_per_output_token"] == pytest.approx(record["total_flops"] / record["total_tokens"])
        assert record["warmup_excluded_samples"] == record["warmup"]["batches"] >= 1
        assert record["measurement_methodology"] == "windowed"
        assert record["config"]["precision"] in ("fp32", "bf16")
        assert record["config"]["transformers"]["batch_size"] in (1, 4)


def test_effective_config_has_engine_defaults(example_run: tuple[object, Path]) -> None:
    _, study_dir = example_run
    for path in study_dir.glob("*/effective_config.json"):
        effective = json.loads(path.read_text())
        settings = effective["engine"]["effective_settings"]
        assert settings["padding_side"] == "left"
        assert settings["dtype"] in ("torch.float32", "torch.bfloat16")
        assert settings["batch_size"] == effective["experiment"]["transformers"]["batch_size"]
        assert effective["experiment"]["output"]["results_dir"] == "results"


def test_manifest_is_complete_and_truthful(example_run: tuple[object, Path]) -> None:
    _, study_dir = example_run
    manifest = json.loads((study_dir / "manifest.json").read_text())
    assert MANIFEST_FIELDS <= set(manifest)
    assert SUMMARY_FIELDS <= set(manifest["summary"])
    assert manifest["study_name"] == "quickstart" and len(manifest["study_design_hash"]) == 16
    assert manifest["end_time"] >= manifest["start_time"]
    assert manifest["summary"]["total_experiments"] == 8 and manifest["summary"]["completed"] == 8
    assert manifest["summary"]["unique_configurations"] == 4
    for entry in manifest["experiments"]:
        assert entry["status"] == "completed"
        assert (study_dir / entry["result_path"]).is_file()
        assert entry["config"]["model"] == "llem-tiny"


def test_no_secret_from_the_environment_reaches_any_file(example_run: tuple[object, Path]) -> None:
    _, study_dir = example_run
    for path in study_dir.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
