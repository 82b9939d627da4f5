"""What the user sees while and after cells run: each cell's phases, and every quality warning.

Seen by a new user: minutes with nothing on the screen while a cell ran, and eight passing cells
whose every record warned that its figures were not settled, with no warning in the terminal
and none in the manifest. The cells here are vLLM cells on a fake ``vllm`` and a fake NVML;
the child processes, records and manifest are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llem.report.warnings import group_warnings, is_unreliable, render_warnings, warning_key
from tests.plugin.conftest import write_study
from tests.plugin.test_vllm_cells import GPU, manifest, with_fakes

# One pass at most but a 60 s window asked for: the cell warns that its window fell short.
STUDY = """
model: llem-tiny
precision: fp32
engine: vllm
dataset: {n_prompts: 4}
max_input_tokens: 16
max_output_tokens: 6
vllm: {max_num_seqs: 2, engine_args: {max_model_len: 512}}
measurement:
  min_window_seconds: 60
  max_passes: 1
  warmup: {max_batches: 2}
  baseline: {enabled: false, spot_check_seconds: 0}
execution: {n_cycles: 1}
"""


def test_phases_are_shown_and_warnings_reach_terminal_and_manifest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    write_study(pytester.path, "warned.llem.yaml", STUDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    cell = "warned.llem.yaml::llem-tiny-vllm::c0"
    # Not a terminal here: one plain line per phase, in order.
    result.stdout.fnmatch_lines(
        [f"[[]llem[]] {cell}: ready", f"[[]llem[]] {cell}: load", f"[[]llem[]] {cell}: warmup",
         f"[[]llem[]] {cell}: measure", f"[[]llem[]] {cell}: report"]
    )  # fmt: skip
    result.stdout.fnmatch_lines(
        [
            "llem-tiny-vllm::c0  completed!*",
            "warnings (* distinct; ! = the cell's figures are less reliable, its status ends in !):",
            "  ! measured window * s is shorter than min_window_seconds 60 s (max_passes 1 reached) [[]1 cell: llem-tiny-vllm::c0]",
        ]
    )
    warnings = manifest(pytester.path)["summary"]["warnings"]
    assert any(w.startswith("llem-tiny-vllm::c0: measured window") for w in warnings), warnings


def test_quiet_runs_show_no_progress(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with_fakes(monkeypatch, tmp_path, [{"uuid": "GPU-a", "power_w": 300.0, **GPU}])
    write_study(pytester.path, "quiet.llem.yaml", STUDY.replace("min_window_seconds: 60", "min_window_seconds: 0"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    assert "[llem]" not in result.stdout.str()


def test_one_problem_in_many_cells_is_one_warning_with_its_cells() -> None:
    records = [
        {"experiment_id": f"cfg::c{k}", "warnings": [f"GPU clocks were slowed by power or thermal limits in {20 + k} % of the window's samples"]}
        for k in range(3)
    ]
    records.append({"experiment_id": "other::c0", "warnings": ["warm-up stopped at measurement.warmup.max_batches (12) before latency was stable (CV 0.94)"]})
    groups = group_warnings(records)
    assert [(g.cells, g.unreliable) for g in groups] == [(["cfg::c0", "cfg::c1", "cfg::c2"], False), (["other::c0"], True)]
    lines = render_warnings(groups)
    assert lines[0].startswith("! warm-up stopped") and lines[0].endswith("[1 cell: other::c0]")
    assert lines[1].endswith("[3 cells: cfg::c0, cfg::c1, cfg::c2]")


def test_gpu_uuids_and_figures_do_not_split_a_warning() -> None:
    a = "GPU GPU-36800e99-05c1: energy counter (10.0 J) and integral of sampled power (12.5 J) differ by 25.0 %"
    b = "GPU GPU-a85f5d08-c4f0: energy counter (11.0 J) and integral of sampled power (9.5 J) differ by 13.6 %"
    assert warning_key(a) == warning_key(b)
    assert is_unreliable(a) and not is_unreliable("GPU GPU-x: persistence mode is off (clocks and idle power less stable)")
