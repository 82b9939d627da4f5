"""Collection: node ids, selection, ordering, skipped cells and clean errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.plugin.conftest import write_study

SWEEP = """
model: llem-tiny
engine: [transformers, vllm]
sweep:
  precision: [fp16, bf16]
  transformers.batch_size: [1, 8]
  vllm.max_num_seqs: [64]
execution:
  n_cycles: 2
"""


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line and not line.startswith(("=", " "))]


def test_nodeids_follow_config_and_cycle(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "sweep.llem.yaml", SWEEP)
    result = pytester.runpytest("--collect-only", "-q")
    assert collected(result) == [
        "sweep.llem.yaml::transformers-fp16-bs1::c0",
        "sweep.llem.yaml::transformers-fp16-bs8::c0",
        "sweep.llem.yaml::transformers-bf16-bs1::c0",
        "sweep.llem.yaml::transformers-bf16-bs8::c0",
        "sweep.llem.yaml::vllm-fp16-seqs64::c0",
        "sweep.llem.yaml::vllm-bf16-seqs64::c0",
        "sweep.llem.yaml::transformers-fp16-bs1::c1",
        "sweep.llem.yaml::transformers-fp16-bs8::c1",
        "sweep.llem.yaml::transformers-bf16-bs1::c1",
        "sweep.llem.yaml::transformers-bf16-bs8::c1",
        "sweep.llem.yaml::vllm-fp16-seqs64::c1",
        "sweep.llem.yaml::vllm-bf16-seqs64::c1",
    ]
    assert not (pytester.path / "results").exists(), "--collect-only must not write results"


def test_keyword_selection_matches_swept_values(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "sweep.llem.yaml", SWEEP)
    result = pytester.runpytest("--collect-only", "-q", "-k", "vllm and c1")
    assert collected(result) == ["sweep.llem.yaml::vllm-fp16-seqs64::c1", "sweep.llem.yaml::vllm-bf16-seqs64::c1"]
    result = pytester.runpytest("--collect-only", "-q", "-k", "bs8 and bf16")
    assert collected(result) == ["sweep.llem.yaml::transformers-bf16-bs8::c0", "sweep.llem.yaml::transformers-bf16-bs8::c1"]


def test_marker_selection_by_engine_and_cycle(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "sweep.llem.yaml", SWEEP)
    result = pytester.runpytest("--collect-only", "-q", "-m", "llem(engine='vllm', cycle=0)")
    assert collected(result) == ["sweep.llem.yaml::vllm-fp16-seqs64::c0", "sweep.llem.yaml::vllm-bf16-seqs64::c0"]
    result = pytester.runpytest("--collect-only", "-q", "-m", "llem(transformers_batch_size=8, precision='fp16')")
    assert collected(result) == ["sweep.llem.yaml::transformers-fp16-bs8::c0", "sweep.llem.yaml::transformers-fp16-bs8::c1"]


def test_nodeid_of_a_configuration_selects_all_its_cycles(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "sweep.llem.yaml", SWEEP)
    result = pytester.runpytest("--collect-only", "-q", "sweep.llem.yaml::vllm-bf16-seqs64")
    assert collected(result) == ["sweep.llem.yaml::vllm-bf16-seqs64::c0", "sweep.llem.yaml::vllm-bf16-seqs64::c1"]
    result = pytester.runpytest("--collect-only", "-q", "sweep.llem.yaml::vllm-bf16-seqs64::c1")
    assert collected(result) == ["sweep.llem.yaml::vllm-bf16-seqs64::c1"]


def test_cycle_names_are_padded_so_k_c1_is_exact(pytester: pytest.Pytester) -> None:
    write_study(pytester.path, "many.llem.yaml", "model: llem-tiny\nexecution: {n_cycles: 12}\n")
    result = pytester.runpytest("--collect-only", "-q", "-k", "c01")
    assert collected(result) == ["many.llem.yaml::llem-tiny-transformers::c01"]


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("sequential", ["fp16::c0", "fp16::c1", "bf16::c0", "bf16::c1"]),
        ("interleave", ["fp16::c0", "bf16::c0", "fp16::c1", "bf16::c1"]),
        ("reverse", ["fp16::c0", "bf16::c0", "bf16::c1", "fp16::c1"]),
    ],
)
def test_run_order_follows_experiment_order(pytester: pytest.Pytester, order: str, expected: list[str]) -> None:
    write_study(
        pytester.path,
        "order.llem.yaml",
        f"model: llem-tiny\nsweep: {{precision: [fp16, bf16]}}\nexecution: {{n_cycles: 2, experiment_order: {order}}}\n",
    )
    result = pytester.runpytest("--collect-only", "-q")
    assert collected(result) == [f"order.llem.yaml::{e}" for e in expected]


def test_other_tests_keep_their_place(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_one(): pass\ndef test_two(): pass\n")
    write_study(pytester.path, "z.llem.yaml", "model: llem-tiny\nsweep: {precision: [fp16, bf16]}\nexecution: {n_cycles: 1}\n")
    result = pytester.runpytest("--collect-only", "-q")
    assert collected(result) == [
        "test_a.py::test_one",
        "test_a.py::test_two",
        "z.llem.yaml::fp16::c0",
        "z.llem.yaml::bf16::c0",
    ]


def test_invalid_combination_is_a_skipped_item_with_reason(pytester: pytest.Pytester) -> None:
    write_study(
        pytester.path,
        "skip.llem.yaml",
        """
        model: llem-tiny
        dataset: {n_prompts: 4}
        sweep:
          transformers.batch_size: [2, 16]
        execution: {n_cycles: 2}
        """,
    )
    result = pytester.runpytest("-rs", "-k", "bs16")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*invalid combination: transformers.batch_size 16 exceeds the 4 prompts*"])


def test_schema_errors_are_clean_collection_errors(pytester: pytest.Pytester) -> None:
    write_study(
        pytester.path,
        "bad.llem.yaml",
        """
        model: llem-tiny
        precison: bf16
        transformers:
          batch_sise: 4
        execution:
          n_cycles: zero
        """,
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*bad.llem.yaml: 3 problems*",
            "*bad.llem.yaml:2: precison: unknown key (did you mean 'precision'?)*",
            "*bad.llem.yaml:4: transformers.batch_sise: unknown key (did you mean 'batch_size'?)*",
            "*bad.llem.yaml:6: execution.n_cycles: Input should be a valid integer*(got 'zero')*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "pydantic" not in result.stdout.str()


def test_duplicate_ids_are_a_collection_error(pytester: pytest.Pytester) -> None:
    write_study(
        pytester.path,
        "dup.llem.yaml",
        """
        model: llem-tiny
        experiments:
          - {id: same, precision: fp16}
          - {id: same, precision: bf16}
        """,
    )
    result = pytester.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*duplicate cell id 'same' for 2 cells*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_help_lists_the_llem_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["*pytest-llem*", "*--llem-results-dir=DIR*", "*--llem-timeout=SECONDS*", "*--llem-compare-fail=[[]METRIC.[]]STAT:N[[]%[]]*"]
    )


def test_entry_point_module_is_import_light() -> None:
    code = (
        # session.py and xdist.py are imported in every run's pytest_configure: as light as plugin.py.
        "import sys, pytest_llem.plugin, pytest_llem.session, pytest_llem.xdist\n"
        "heavy = ('torch', 'transformers', 'vllm', 'tensorrt_llm', 'zeus', 'pydantic', 'numpy', 'scipy')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_reruns_are_refused_on_studies(pytester: pytest.Pytester) -> None:
    # pytest-rerunfailures' option, declared by a conftest: the plugin's own check is what is tested.
    pytester.makeconftest("def pytest_addoption(parser):\n    parser.addoption('--reruns', type=int, default=0)\n")
    write_study(pytester.path, "s.llem.yaml", "model: llem-tiny\n")
    result = pytester.runpytest("--reruns", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--reruns (pytest-rerunfailures) would rerun failing llem cells" in result.stderr.str()
    pytester.makepyfile(test_plain="def test_ok(): pass\n")
    pytester.runpytest("--reruns", "2", "test_plain.py").assert_outcomes(passed=1)


def test_a_yaml_named_without_the_study_suffix_says_how_to_name_it(pytester: pytest.Pytester) -> None:
    """pytest alone answers "not found ... (no match in any of [<Dir>])", which does not say why."""
    pytester.makefile(".yaml", mystudy="model: llem-tiny\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "mystudy.yaml")
    result.stdout.fnmatch_lines(["*mystudy.yaml: pytest-llem runs study files ending in .llem.yaml*rename it to mystudy.llem.yaml*"])
    assert result.ret != 0
