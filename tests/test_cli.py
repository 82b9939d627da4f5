"""``python -m pytest_llem``: ls, show, compare, doctor and schema on study directories built without models.

The studies are written as a run writes them (``Manifest`` and ``build_result`` records), so the
commands read what they will meet on disk; most tests call :func:`pytest_llem.cli.main` in this
process, a few the module through a subprocess, as a user does.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pytest_llem.cli import doctor as doctor_module
from pytest_llem.cli import main
from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.report.terminal import summary_sections
from pytest_llem.results.loader import load_results
from pytest_llem.results.manifest import Manifest
from pytest_llem.results.writer import write_json_atomic
from pytest_llem.verdicts.finalize import FinalizedStudy
from pytest_llem.verdicts.statistics import SUMMARY_CSV, SUMMARY_JSON, summarise_groups
from tests.results.test_record import build, measurement

ROOT = Path(__file__).resolve().parents[1]
FAKES_DIR = ROOT / "tests" / "fakes"
PROTOCOL = {"n_cycles": 3, "experiment_order": "interleave", "shuffle_seed": 0}
TOKENS = 2000
IDLE_W = 50.0  # with a 10 s window: 500 J of idle energy subtracted from each cell's total
#: Energy (J) per cycle of each configuration: "fp16" steady, "bf16" steady.
BASE = {"fp16": [1500.0, 1510.0, 1490.0], "bf16": [1000.0, 1006.0, 994.0]}
WARNING = "GPU clocks were capped by the power limit in 27 % of the window's samples"
STUDY_WARNING = (
    "demo.llem.yaml: the study expands to 2400 cells (800 configurations x 3 cycles); check the sweep is what you meant"
)


def _precision(config_id: str) -> str:
    return config_id if config_id in ("fp32", "fp16", "bf16") else "fp32"


def make_study(
    root: Path, name: str = "demo", energies: dict[str, list[float]] | None = None, *,
    dir_name: str | None = None, start_time: str = "2026-11-01T10:00:00+00:00",
    failed: bool = False, pending: bool = False, warn: bool = False,
) -> Path:  # fmt: skip
    """A study directory as a run leaves it: one cell per configuration and cycle, in interleaved order."""
    energies = BASE if energies is None else energies
    study_dir = root / (dir_name or f"{name}_{start_time[:19].replace(':', '-')}")
    study_dir.mkdir(parents=True)
    header = {
        "schema_version": "3.0",
        "study_name": name,
        "study_design_hash": "feedfacecafebeef",
        "measurement_protocol": PROTOCOL,
    }
    entries: list[dict[str, Any]] = []
    n_cycles = max(len(v) for v in energies.values())
    for cycle in range(n_cycles):
        for config_id, values in energies.items():
            if cycle < len(values):
                entries.append(
                    {"experiment_id": f"{config_id}::c{cycle}", "config_id": config_id, "cycle": cycle,
                     "position": len(entries) + 1, "measurement_config_hash": f"{config_id:0>16}",
                     "config": {"model": "stub-ok", "engine": "transformers", "precision": _precision(config_id)}}
                )  # fmt: skip
    extra = [("broken", "failed")] if failed else []
    extra += [("later", "pending")] if pending else []
    for config_id, _ in extra:
        entries.append(
            {"experiment_id": f"{config_id}::c0", "config_id": config_id, "cycle": 0, "position": len(entries) + 1,
             "measurement_config_hash": "b" * 16, "config": {"model": "stub-ok", "precision": "fp32"}}
        )  # fmt: skip
    manifest = Manifest(study_dir, header, entries, warnings=[STUDY_WARNING] if warn else None)
    manifest.data["start_time"] = start_time
    manifest.flush()
    for entry in entries:
        eid, config_id, cycle = entry["experiment_id"], entry["config_id"], entry["cycle"]
        if config_id == "broken":
            manifest.update(eid, "failed", error="CellCrashed: RuntimeError: stub model refuses to load\ntraceback...")
            continue
        if config_id == "later":
            continue
        energy = energies[config_id][cycle]
        m = measurement(
            output_tokens=TOKENS, baseline_power_w=IDLE_W, energy={"total_j": energy, "per_device_j": [energy]},
            warnings=[WARNING] if warn and cycle == 0 else [],
        )  # fmt: skip
        record = build(
            m, config=ExperimentConfig.model_validate(entry["config"]), experiment_id=eid,
            config_hash=entry["measurement_config_hash"], study_name=name, config_id=config_id, cycle=cycle,
            position=entry["position"],
        )  # fmt: skip
        cell = f"{entry['position']:03d}_c{cycle}_stub-ok-transformers_{entry['measurement_config_hash']}"
        write_json_atomic(study_dir / cell / "result.json", record)
        for warning in record["warnings"]:  # as the run repeats them in the manifest
            manifest.warn(f"{eid}: {warning}")
        manifest.update(eid, "completed", result_path=f"{cell}/result.json", total_energy_j=record["total_energy_j"])
    manifest.finish(12.5)
    return study_dir


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    status, out, _ = run_cli(capsys, *argv, "--json")
    return status, json.loads(out)


# -- the dispatcher ------------------------------------------------------------------------


def test_help_is_plain_text_and_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "--help")
    assert status == 0
    assert "``" not in out and ":func:" not in out
    for command in ("ls", "show", "compare", "doctor", "schema"):
        assert f"\n    {command} " in out


def test_no_or_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys)[0] == 2
    status, _, err = run_cli(capsys, "frobnicate")
    assert status == 2 and "invalid choice" in err


def test_schema_still_prints_the_study_schema(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "schema")
    assert status == 0 and json.loads(out)["$schema"].startswith("https://json-schema.org/")


# -- ls ------------------------------------------------------------------------------------


def test_ls_lists_studies_newest_first_with_their_status_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = make_study(tmp_path, "old", start_time="2026-10-01T08:00:00+00:00", failed=True)
    new = make_study(tmp_path, "new", start_time="2026-11-02T09:30:00+00:00", pending=True)
    (tmp_path / "not-a-study").mkdir()
    status, out, _ = run_cli(capsys, "ls", str(tmp_path))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["study", "started", "completed", "failed", "skipped", "pending", "running", "directory"]
    assert lines[2].split() == ["new", "2026-11-02T09:30:00+00:00", "6", "0", "0", "1", "0", new.name]
    assert lines[3].split() == ["old", "2026-10-01T08:00:00+00:00", "6", "1", "0", "0", "0", old.name]
    assert lines[-1] == f"2 studies under {tmp_path}"

    status, data = run_json(capsys, "ls", str(tmp_path))
    assert status == 0 and data["results_dir"] == str(tmp_path)
    assert [s["study_name"] for s in data["studies"]] == ["new", "old"]
    first = data["studies"][0]
    assert set(first) == {"study_dir", "study_name", "start_time", "end_time", "cells", "counts", "readable"}
    assert first["counts"] == {"completed": 6, "failed": 0, "skipped": 0, "pending": 1, "running": 0}
    assert first["study_dir"] == str(new) and first["cells"] == 7 and first["end_time"]


def test_ls_defaults_to_results_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_study(tmp_path / "results", "here")
    monkeypatch.chdir(tmp_path)
    status, data = run_json(capsys, "ls")
    assert status == 0 and [s["study_name"] for s in data["studies"]] == ["here"]


def test_ls_of_an_empty_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "ls", str(tmp_path))
    assert status == 0 and out.startswith(f"no study directories under {tmp_path}")
    assert run_json(capsys, "ls", str(tmp_path)) == (0, {"results_dir": str(tmp_path), "studies": []})


def test_ls_of_a_missing_directory_is_a_usage_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    status, out, err = run_cli(capsys, "ls", str(missing))
    assert status == 2 and out == ""
    assert err == f"python -m pytest_llem ls: error: results directory {missing} does not exist\n"


# -- show ----------------------------------------------------------------------------------


def test_show_prints_what_the_run_printed_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study_dir = make_study(tmp_path, failed=True, warn=True)
    status, out, _ = run_cli(capsys, "show", str(study_dir))
    assert status == 0
    result = load_results(study_dir)
    ((title, body),) = summary_sections([FinalizedStudy(result, summarise_groups(result.experiments))], [])
    lines = out.splitlines()
    assert lines[0] == f" {title} ".center(80, "-") and title == "llem: demo"
    assert lines[1 : 1 + len(body)] == body  # the session's own table, statistics and warnings
    assert any(line.startswith("fp16::c0") for line in body) and f"results: {study_dir}" in body
    assert any("across cycles" in line for line in body)
    assert WARNING in out
    assert lines[len(body) + 1 :] == [
        "",
        "cells without a result:",
        "  broken::c0: CellCrashed: RuntimeError: stub model refuses to load",
        "",
        "study warnings:",
        f"  {STUDY_WARNING}",  # the cells' own warnings, repeated in the manifest, are in the table's section only
    ]
    assert not (study_dir / SUMMARY_JSON).exists() and not (study_dir / SUMMARY_CSV).exists()


def test_show_json_has_cells_statistics_and_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study_dir = make_study(tmp_path, failed=True, warn=True)
    status, data = run_json(capsys, "show", str(study_dir))
    assert status == 0
    keys = {"study_name", "study_dir", "study_design_hash", "start_time", "end_time", "summary", "cells", "statistics", "lines"}
    assert set(data) == keys
    assert data["study_name"] == "demo" and data["study_dir"] == str(study_dir)
    assert data["summary"]["completed"] == 6 and data["summary"]["failed"] == 1
    cells = {c["experiment_id"]: c for c in data["cells"]}
    assert cells["fp16::c0"]["mj_per_tok_total"] == 750.0 and cells["fp16::c0"]["mj_per_tok_adjusted"] == 500.0
    assert cells["fp16::c0"]["warnings"] == [WARNING] and cells["fp16::c1"]["warnings"] == []
    assert cells["broken::c0"]["status"] == "failed" and "refuses to load" in cells["broken::c0"]["error"]
    assert [g["config_ids"] for g in data["statistics"]] == [["fp16"], ["bf16"]]
    fp16 = data["statistics"][0]["metrics"]["mj_per_tok_total"]
    assert fp16["n"] == 3 and fp16["median"] == 750.0 and fp16["ci_method"] == "student-t"
    assert data["lines"][0].strip("- ") == "llem: demo"


def test_show_of_a_results_directory_shows_its_newest_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_study(tmp_path, "old", start_time="2026-10-01T08:00:00+00:00")
    make_study(tmp_path, "new", start_time="2026-11-01T08:00:00+00:00")
    assert run_json(capsys, "show", str(tmp_path))[1]["study_name"] == "new"


def test_show_of_a_missing_or_unreadable_study_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_cli(capsys, "show", str(tmp_path / "gone"))
    assert status == 2 and f"study directory {tmp_path / 'gone'} does not exist" in err
    (tmp_path / "empty").mkdir()
    status, _, err = run_cli(capsys, "show", str(tmp_path / "empty"))
    assert status == 2 and f"no manifest.json in {tmp_path / 'empty'}" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    status, _, err = run_cli(capsys, "show", str(broken))
    assert status == 2 and "is not valid JSON" in err and "Traceback" not in err


# -- compare -------------------------------------------------------------------------------


def _two_studies(tmp_path: Path) -> tuple[Path, Path]:
    """B uses 20 % more energy than A on fp16, the same on bf16; each side has a configuration of its own."""
    a = make_study(tmp_path / "a", "demo", {**BASE, "int8": [800.0, 805.0, 795.0]})
    worse = [e * 1.2 for e in BASE["fp16"]]
    b = make_study(tmp_path / "b", "demo", {"fp16": worse, "bf16": BASE["bf16"], "fp32": [3000.0, 3010.0, 2990.0]})
    return a, b


def test_compare_finds_the_regression_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_studies(tmp_path)
    status, out, _ = run_cli(capsys, "compare", str(a), str(b))
    assert status == 1
    lines = out.splitlines()
    assert lines[0].startswith("A (baseline): demo, started 2026-11-01T10:00:00+00:00") and lines[0].endswith(str(a))
    header = next(i for i, line in enumerate(lines) if line.startswith("configuration"))
    columns = ["configuration", "metric", "A median", "A 95% CI", "B median", "B 95% CI", "change"]
    assert re.split(r"\s{2,}", lines[header]) == columns
    fp16 = re.split(r"\s{2,}", lines[header + 2])
    # adjusted: (1500 - 500) J / 2000 tokens = 500 mJ/token, then (1800 - 500) / 2000 = 650
    assert fp16 == ["fp16", "mj_per_tok_adjusted", "500", "[487.6, 512.4]", "650", "[635.1, 664.9]", "+30.0%"]
    assert lines[header + 3].split()[0] == "mj_per_tok_total" and lines[header + 3].split()[-1] == "+20.0%"
    assert lines[header + 4].split()[0] == "avg_tokens_per_second" and lines[header + 4].split()[-1] == "+0.0%"
    assert "only in A: int8" in lines and "only in B: fp32" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("verdicts ("))
    assert lines[start] == "verdicts (mj_per_tok_adjusted.median:5%; Holm over 2 tests):"
    verdicts = [line.strip() for line in lines[start + 1 : start + 3]]
    assert lines[start + 3] == ""
    assert verdicts[0].startswith("fp16: mj_per_tok_adjusted.median 500 -> 650 (+30.00%") and verdicts[0].endswith("REGRESSED")
    assert "Holm" in verdicts[0]
    assert verdicts[1].startswith("bf16: mj_per_tok_adjusted.median") and verdicts[1].endswith("PASS")
    assert lines[-1] == "1 regression(s): fp16"


def test_compare_json_and_repeated_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _two_studies(tmp_path)
    status, data = run_json(
        capsys, "compare", str(a), str(b), "--rule", "mj_per_tok_total.median:25%", "--rule", "avg_tokens_per_second.mean:5%"
    )
    assert status == 0  # +20 % is inside a 25 % tolerance, and throughput did not move
    assert set(data) == {"a", "b", "rules", "configurations", "only_in_a", "only_in_b", "regressed", "notes"}
    assert data["a"] == {"study_name": "demo", "study_dir": str(a), "start_time": "2026-11-01T10:00:00+00:00"}
    assert data["rules"] == ["mj_per_tok_total.median:25%", "avg_tokens_per_second.mean:5%"]
    assert data["only_in_a"] == ["int8"] and data["only_in_b"] == ["fp32"] and data["regressed"] == []
    assert [c["config_id"] for c in data["configurations"]] == ["fp16", "bf16"]
    fp16 = data["configurations"][0]
    assert set(fp16["metrics"]) == {"mj_per_tok_adjusted", "mj_per_tok_total", "avg_tokens_per_second"}
    total = fp16["metrics"]["mj_per_tok_total"]
    assert total["a"]["median"] == 750.0 and total["b"]["median"] == pytest.approx(900.0)
    assert total["change"] == pytest.approx(0.2)
    assert total["a"]["ci_low"] < 750.0 < total["a"]["ci_high"] and total["a"]["n"] == 3
    assert [v["rule"] for v in fp16["verdicts"]] == ["mj_per_tok_total.median:25%", "avg_tokens_per_second.mean:5%"]
    verdict = fp16["verdicts"][0]
    keys = {"config_id", "rule", "metric", "status", "baseline", "current", "change", "p_value", "p_adjusted",
            "upper_bound", "tolerance", "cycles_needed", "reason", "line"}  # fmt: skip
    assert set(verdict) == keys
    assert verdict["status"] == "pass" and verdict["p_adjusted"] >= verdict["p_value"]


def test_compare_applies_holm_over_every_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A change just beyond the tolerance in one of many configurations: significant alone, not after Holm."""
    noisy_a = [1000.0, 1040.0, 960.0]
    noisy_b = [e * 1.22 for e in noisy_a]  # adjusted: (1000 - 500) -> (1220 - 500): +44 %, noisy
    configs_a = {f"c{i}": list(BASE["bf16"]) for i in range(9)}
    configs_b = dict(configs_a)
    configs_a["edge"], configs_b["edge"] = noisy_a, noisy_b
    a = make_study(tmp_path / "a", "demo", configs_a)
    b = make_study(tmp_path / "b", "demo", configs_b)
    status, data = run_json(capsys, "compare", str(a), str(b), "--rule", "mj_per_tok_adjusted.median:20%")
    (edge,) = [c["verdicts"][0] for c in data["configurations"] if c["config_id"] == "edge"]
    assert edge["p_value"] < 0.05 < edge["p_adjusted"]
    assert edge["p_adjusted"] == pytest.approx(min(1.0, 10 * edge["p_value"]))
    assert edge["status"] == "inconclusive" and status == 0


def test_compare_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_study(tmp_path, "demo")
    status, _, err = run_cli(capsys, "compare", str(a), str(tmp_path / "missing"))
    assert status == 2 and f"study directory {tmp_path / 'missing'} does not exist" in err
    status, _, err = run_cli(capsys, "compare", str(a), str(a), "--rule", "median-5")
    assert status == 2 and "--rule 'median-5'" in err and "expected [METRIC.]STAT:N" in err
    status, _, err = run_cli(capsys, "compare", str(a), str(a), "--rule", "joules.median:5%")
    assert status == 2 and "unknown metric 'joules'" in err


def test_compare_without_energy_says_why_it_cannot_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_study(tmp_path / "a", "demo")
    b = make_study(tmp_path / "b", "demo")
    for record_path in b.glob("*/result.json"):  # B ran on a machine with no energy counter
        record = json.loads(record_path.read_text())
        record.update(mj_per_tok_total=None, mj_per_tok_adjusted=None)
        record_path.write_text(json.dumps(record))
    status, out, _ = run_cli(capsys, "compare", str(a), str(b))
    assert status == 0
    assert "fp16: mj_per_tok_adjusted.median: MISSING (no current figure, while the stored baseline has one)" in out
    status, out, _ = run_cli(capsys, "compare", str(b), str(b))
    assert "fp16: mj_per_tok_adjusted.median: UNJUDGEABLE (neither side has a value of mj_per_tok_adjusted)" in out


# -- doctor --------------------------------------------------------------------------------


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """tests/fakes/pynvml imported as pynvml; the GPUs are set with :func:`_machine`."""
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.syspath_prepend(str(FAKES_DIR))
    module = importlib.import_module("pynvml")
    assert getattr(module, "FAKE", False), f"imported the real pynvml from {module.__file__}"
    monkeypatch.setenv(module.ENV_VAR, json.dumps({"gpus": []}))
    yield module
    sys.modules.pop("pynvml", None)


def _machine(monkeypatch: pytest.MonkeyPatch, fake: ModuleType, *gpus: dict[str, Any], **top: Any) -> None:
    monkeypatch.setenv(fake.ENV_VAR, json.dumps({"gpus": list(gpus), **top}))


def test_doctor_names_each_gpu_and_its_energy_counter(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(doctor_module, "COUNTER_WAIT_S", 0.05)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _machine(
        monkeypatch, fake_nvml,
        {"uuid": "GPU-aaa", "name": "Fake H100", "power_w": 300.0, "power_limit_w": 700.0},
        {"uuid": "GPU-bbb", "name": "Fake K80", "supports_energy": False},
        {"uuid": "GPU-ccc", "name": "Fake stuck", "counter_w": 0.0},
    )  # fmt: skip
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 0
    assert "  OK       NVML: initialised, driver 550.54.15" in out
    assert "  OK       GPU 0: Fake H100 (GPU-aaa), power limit 700 W, energy counter: works (" in out
    assert "  missing  GPU 1: Fake K80 (GPU-bbb)" in out and "not supported (a GPU before Volta)" in out
    assert "  missing  GPU 2: Fake stuck (GPU-ccc)" in out and "did not move" in out
    assert out.rstrip().endswith("energy: measurable with NVML on 2 of 3 GPU(s)")
    assert fake_nvml.init_count() == 0  # every initialisation released

    status, data = run_json(capsys, "doctor")
    assert status == 0 and set(data) == {"checks", "gpus", "energy_measurable", "summary"}
    assert data["energy_measurable"] is True
    assert [g["energy_counter"] for g in data["gpus"]] == ["works", "not supported", "stuck"]
    assert data["gpus"][0]["uuid"] == "GPU-aaa" and data["gpus"][0]["power_limit_w"] == 700.0
    assert all(set(c) == {"section", "name", "ok", "detail", "status"} for c in data["checks"])
    assert {c["status"] for c in data["checks"]} <= {"OK", "missing"}
    names = {c["name"] for c in data["checks"]}
    assert {"python", "pytest", "torch", "transformers", "vllm", "pydantic", "scipy", "zeus", "tensorrt"} <= names


def test_doctor_without_a_driver_says_why_and_still_reports_the_rest(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _machine(monkeypatch, fake_nvml, init_error=True)
    status, data = run_json(capsys, "doctor")
    assert status == 0 and data["gpus"] == [] and data["energy_measurable"] is False
    (nvml,) = [c for c in data["checks"] if c["name"] == "NVML"]
    assert nvml["status"] == "missing" and nvml["detail"] == "NVML could not initialise: Driver Not Loaded"
    assert data["summary"].startswith("energy: not measurable here (NVML could not initialise: Driver Not Loaded)")
    (transformers,) = [c for c in data["checks"] if c["section"] == "engines" and c["name"] == "transformers"]
    assert transformers["status"] == "OK" and "torch" in transformers["detail"]


def test_doctor_never_crashes_on_a_broken_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(report: doctor_module.Report) -> None:
        raise RuntimeError("the bindings segfaulted politely")

    monkeypatch.setattr(doctor_module, "STEPS", (("GPU energy (NVML)", broken), *doctor_module.STEPS[2:]))
    status, out, _ = run_cli(capsys, "doctor")
    assert status == 0
    assert "  missing  check: the check itself failed: RuntimeError: the bindings segfaulted politely" in out
    assert "energy: not measurable here (the check itself failed" in out


def test_doctor_reports_rapl_zones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    readable, locked = tmp_path / "intel-rapl:0", tmp_path / "intel-rapl:1"
    for zone, name in ((readable, "package-0"), (locked, "package-1")):
        zone.mkdir()
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text("123\n")
    locked_file = locked / "energy_uj"
    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == locked_file:
            raise PermissionError(13, "Permission denied")
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    monkeypatch.setattr(doctor_module, "RAPL_GLOB", str(tmp_path / "intel-rapl*"))
    report = doctor_module.Report()
    doctor_module._rapl(report)
    assert [c.line() for c in report.checks] == [
        "  OK       intel-rapl:0: package-0: energy_uj readable",
        "  missing  intel-rapl:1: package-1: energy_uj not readable (Permission denied; usually root only)",
    ]


# -- as a user runs it -----------------------------------------------------------------------


def test_module_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    a, b = _two_studies(tmp_path)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_llem", *argv], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
        )

    helped = cli("--help")
    assert helped.returncode == 0 and "``" not in helped.stdout and "compare" in helped.stdout
    listed = cli("ls", str(tmp_path / "a"), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)["studies"][0]["study_dir"] == str(a)
    compared = cli("compare", str(a), str(b), "--json")
    assert compared.returncode == 1 and json.loads(compared.stdout)["regressed"] == ["fp16"]
    missing = cli("show", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == f"python -m pytest_llem show: error: study directory {tmp_path / 'nope'} does not exist\n"
