"""The study grammar: what a file may contain, and the errors a person gets when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llem.errors import StudyError
from pytest_llem.study.study import load_study

# --------------------------------------------------------------------------- valid files


def test_minimal_file_is_one_configuration_with_defaults(load):
    study = load("model: llem-tiny\n", name="my-first.llem.yaml")
    assert study.name == "my-first"
    assert [c.config_id for c in study.configurations] == ["llem-tiny-transformers"]
    (only,) = study.configurations
    assert only.runnable and only.skip_reason is None
    assert only.engine == "transformers"
    assert only.config is not None
    assert only.config.precision == "bf16"
    assert only.config.transformers.batch_size == 1
    assert only.config.dataset.n_prompts == 32
    assert study.execution.n_cycles == 3
    assert study.execution.experiment_order == "interleave"
    assert study.warnings == []


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [("energy.llem.yaml", "energy"), ("energy.yaml", "energy"), ("energy.yml", "energy"), ("my study.llem.yml", "my_study")],
)
def test_default_name_is_the_file_name_without_suffixes(load, file_name, expected):
    assert load("model: llem-tiny\n", name=file_name).name == expected


def test_explicit_name_and_execution_block(load):
    study = load(
        """
        name: bs-sweep
        model: llem-tiny
        execution:
          n_cycles: 7
          experiment_order: shuffle
          shuffle_seed: 42
          experiment_gap_seconds: 1.5
          cycle_gap_seconds: 30
          experiment_timeout_seconds: 120
          startup_timeout_seconds: 60
        """
    )
    assert study.name == "bs-sweep"
    ex = study.execution
    assert (ex.n_cycles, ex.experiment_order, ex.shuffle_seed) == (7, "shuffle", 42)
    assert (ex.experiment_gap_seconds, ex.cycle_gap_seconds) == (1.5, 30.0)
    assert (ex.experiment_timeout_seconds, ex.startup_timeout_seconds) == (120.0, 60.0)


def test_nested_and_dotted_keys_are_the_same_setting(load):
    nested = load("model: llem-tiny\ntransformers:\n  batch_size: 4\n  use_cache: false\n", name="a.yaml")
    dotted = load("model: llem-tiny\ntransformers.batch_size: 4\ntransformers.use_cache: false\n", name="b.yaml")
    mixed = load("model: llem-tiny\ntransformers.batch_size: 4\ntransformers: {use_cache: false}\n", name="c.yaml")
    configs = [s.configurations[0].config for s in (nested, dotted, mixed)]
    assert all(c is not None and c.transformers.batch_size == 4 and c.transformers.use_cache is False for c in configs)
    assert configs[0] == configs[1] == configs[2]


def test_shipped_example_loads():
    example = Path(__file__).resolve().parents[2] / "examples" / "quickstart.llem.yaml"
    study = load_study(example)
    # The example is edited by others: only that it loads cleanly is pinned here.
    assert study.name == "quickstart"
    assert study.configurations and all(c.runnable for c in study.configurations)
    assert len({c.config_id for c in study.configurations}) == len(study.configurations)
    assert study.warnings == []


# --------------------------------------------------------------------------- YAML anchors


def test_anchors_and_merge_keys_work_and_anchor_holders_are_ignored(load):
    study = load(
        """
        x-defaults: &defaults
          max_output_tokens: 16
          ignore_eos: true
        _sampling: &sampling
          temperature: 0.7
          top_p: 0.9
        x-sizes: &sizes [1, 2]
        model: llem-tiny
        <<: *defaults
        decoding:
          <<: *sampling
          seed: 3
        sweep:
          transformers.batch_size: *sizes
        """
    )
    assert [c.config_id for c in study.configurations] == ["bs1", "bs2"]
    for configuration in study.configurations:
        config = configuration.config
        assert config is not None
        assert config.max_output_tokens == 16
        assert config.ignore_eos is True
        assert (config.decoding.temperature, config.decoding.top_p, config.decoding.seed) == (0.7, 0.9, 3)
        assert not any(key.startswith(("x-", "_")) for key in configuration.raw)


def test_anchor_holders_may_hold_keys_that_are_not_fields(load):
    # x-/_ keys are never validated: they only hold anchors.
    study = load(
        """
        x-notes: {anything: goes, deeply: {nested: [1, 2]}}
        _scratch: 12
        model: llem-tiny
        """
    )
    assert [c.config_id for c in study.configurations] == ["llem-tiny-transformers"]


def test_anchors_in_experiments(load):
    study = load(
        """
        model: llem-tiny
        x-base: &base
          precision: fp16
          max_output_tokens: 8
        experiments:
          - <<: *base
            id: one
          - <<: *base
            id: two
            max_output_tokens: 16
        """
    )
    got = {c.config_id: (c.config.precision, c.config.max_output_tokens) for c in study.configurations if c.config}
    assert got == {"one": ("fp16", 8), "two": ("fp16", 16)}


def test_a_bad_value_merged_from_an_anchor_points_at_the_anchor(problems):
    path, found = problems(
        """
        x-base: &base
          precision: fp8
          max_output_tokens: 8
        model: llem-tiny
        <<: *base
        """
    )
    assert found == [f"{path}:2: precision: expected 'fp32', 'fp16' or 'bf16' (got 'fp8')"]


def test_a_bad_value_overriding_a_merged_key_points_at_the_override(problems):
    path, found = problems(
        """
        x-base: &base
          precision: fp16
          max_output_tokens: 8
        model: llem-tiny
        <<: *base
        max_output_tokens: -1
        """
    )
    assert found == [f"{path}:6: max_output_tokens: Input should be greater than or equal to 1 (got -1)"]


def test_an_anchor_holder_without_the_prefix_is_an_unknown_key(problems):
    path, found = problems(
        """
        model: llem-tiny
        defaults: &d
          max_output_tokens: 16
        <<: *d
        """
    )
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: defaults: unknown key")


# --------------------------------------------------------------------------- unknown keys, did-you-mean


def test_unknown_top_level_key_with_suggestion(problems):
    path, found = problems("model: llem-tiny\nprecison: fp16\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: precison: unknown key (did you mean 'precision'?)")
    assert "allowed here:" in found[0] and "max_output_tokens" in found[0]


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("sweeps", "sweep"), ("executon", "execution"), ("experiment", "experiments")],
)
def test_misspelt_study_keys_get_a_suggestion(problems, key, suggestion):
    path, found = problems(f"model: llem-tiny\n{key}: {{}}\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: {key}: unknown key (did you mean '{suggestion}'?)")
    assert suggestion in found[0].split("allowed here:")[1]


def test_unknown_nested_key_names_the_full_path_and_line(problems):
    path, found = problems(
        """
        model: llem-tiny
        measurement:
          min_window_seconds: 2
          warmup:
            windw: 3
        """
    )
    assert found == [
        (f"{path}:5: measurement.warmup.windw: unknown key (did you mean 'window'?);"
        " allowed here: cv_threshold, max_batches, min_batches, window")
    ]


def test_unknown_execution_key(problems):
    path, found = problems("model: llem-tiny\nexecution:\n  n_cycle: 5\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:3: execution.n_cycle: unknown key (did you mean 'n_cycles'?)")


def test_unknown_key_in_a_sweep_axis_points_at_the_axis(problems):
    path, found = problems(
        """
        model: llem-tiny
        sweep:
          precision: [fp16, bf16]
          transformers.batchsize: [1, 8]
        """
    )
    assert found == [
        (f"{path}:4: transformers.batchsize: unknown key (did you mean 'batch_size'?);"
        " allowed here: attn_implementation, batch_size, torch_compile, use_cache")
    ]


def test_unknown_key_in_a_group_entry(problems):
    path, found = problems(
        """
        model: llem-tiny
        sweep:
          decoding:
            - {}
            - {tempreature: 0.5}
        """
    )
    assert len(found) == 1
    assert found[0].startswith(f"{path}:5: decoding.tempreature: unknown key (did you mean 'temperature'?)")


def test_unknown_key_in_an_experiment_points_at_the_entry(problems):
    path, found = problems(
        """
        model: llem-tiny
        experiments:
          - id: a
            precison: fp16
          - id: b
            transformers:
              batch_sise: 2
        """
    )
    assert len(found) == 2
    assert found[0].startswith(f"{path}:4: precison: unknown key (did you mean 'precision'?)")
    assert found[1].startswith(f"{path}:6: transformers.batch_sise: unknown key (did you mean 'batch_size'?)")


def test_no_suggestion_when_nothing_is_close(problems):
    path, found = problems("model: llem-tiny\nzzzzqqq: 1\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: zzzzqqq: unknown key; allowed here:")
    assert "did you mean" not in found[0]


# --------------------------------------------------------------------------- bad values


def test_bad_literal_says_what_was_expected(problems):
    path, found = problems("model: llem-tiny\nprecision: fp8\n")
    assert found == [f"{path}:2: precision: expected 'fp32', 'fp16' or 'bf16' (got 'fp8')"]


def test_bad_type_shows_the_value(problems):
    path, found = problems("model: llem-tiny\nmax_output_tokens: lots\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: max_output_tokens: Input should be a valid integer")
    assert found[0].endswith("(got 'lots')")


def test_out_of_range_execution_value(problems):
    path, found = problems("model: llem-tiny\nexecution:\n  n_cycles: 0\n  experiment_order: random\n")
    assert found == [
        f"{path}:3: execution.n_cycles: Input should be greater than or equal to 1 (got 0)",
        (f"{path}:4: execution.experiment_order: expected 'sequential', 'interleave', 'shuffle', 'reverse'"
        " or 'latin_square' (got 'random')"),
    ]


def test_bad_value_from_a_sweep_points_at_that_value(problems):
    path, found = problems(
        """
        model: llem-tiny
        sweep:
          precision:
            - fp16
            - fp8
          max_output_tokens: [8, -1]
        """
    )
    assert sorted(found) == sorted(
        [
            f"{path}:5: precision: expected 'fp32', 'fp16' or 'bf16' (got 'fp8')",
            f"{path}:6: max_output_tokens: Input should be greater than or equal to 1 (got -1)",
        ]
    )


def test_warmup_bounds(problems):
    path, found = problems("model: llem-tiny\nmeasurement:\n  warmup: {min_batches: 5, max_batches: 2}\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:3: measurement.warmup:")
    assert "max_batches must be at least min_batches" in found[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('model: ""\n', ":1: model: model must not be empty (got '')"),
        ("model: llem-tiny\nprompts: []\n", ":2: prompts: prompts must be a non-empty list"),
        ("model: llem-tiny\nname: [a]\n", ":2: name: expected a string, got ['a']"),
        ("model: llem-tiny\nid: 3\n", ":2: id: expected a template string"),
        ("model: llem-tiny\nsweep: 5\n", ":2: sweep: expected a mapping of axes, got int"),
        ("model: llem-tiny\nsweep:\n  precision: []\n", ":3: sweep.precision: expected a non-empty list of values, got []"),
        ("model: llem-tiny\nsweep:\n  precision: fp16\n", ":3: sweep.precision: expected a non-empty list of values, got 'fp16'"),
        (
            "model: llem-tiny\nsweep:\n  decoding: [{temperature: 0.5}, 3]\n",
            ":3: sweep.decoding: mixes mappings and plain values; a group is a list of mappings",
        ),
        ("model: llem-tiny\nexperiments: {a: 1}\n", ":2: experiments: expected a list of mappings"),
        ("model: llem-tiny\nexperiments:\n  - fp16\n", ":3: experiments[0]: expected a mapping of experiment fields, got 'fp16'"),
        ("model: llem-tiny\nexecution: 3\n", ":2: execution: Input should be a valid dictionary"),
        (
            "model: llem-tiny\nengine: [transformers, vllm]\nsweep:\n  engine: [vllm]\n",
            ":4: engine is both a top-level list and a sweep axis; keep one",
        ),
    ],
)
def test_structural_problems(problems, text, expected):
    path, found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}{expected}"), found[0]


def test_unknown_engine_with_suggestion(problems):
    path, found = problems("model: llem-tiny\nengine: vlm\n")
    assert found == [f"{path}:2: engine: unknown engine 'vlm' (did you mean 'vllm'?); expected one of transformers, vllm, tensorrt"]


def test_unknown_engine_in_the_sweep_axis(problems):
    path, found = problems("model: llem-tiny\nsweep:\n  engine: [transformers, tensorrtllm]\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}:3: engine: unknown engine 'tensorrtllm' (did you mean 'tensorrt'?)")


def test_unknown_engine_does_not_hide_the_other_problems(problems):
    path, found = problems(
        """
        model: llem-tiny
        max_output_tokens: lots
        engine: vlm
        execution:
          n_cycles: 0
        """
    )
    assert len(found) == 3
    assert any(p.startswith(f"{path}:3: engine: unknown engine 'vlm'") for p in found)
    assert any(p.startswith(f"{path}:5: execution.n_cycles:") for p in found)
    assert any(p.startswith(f"{path}:2: max_output_tokens:") for p in found)


# --------------------------------------------------------------------------- all at once, readable


def test_every_problem_of_a_file_at_once(problems):
    path, found = problems(
        """
        model: llem-tiny
        tranformers:
          batch_sise: 3
        measurement:
          min_window_secs: 3
        precision: fp8
        execution:
          n_cycle: 3
          experiment_order: random
        sweep:
          transformers.batchsize: [1, 2]
        """
    )
    assert len(found) == 6
    by_key = {p.split(": ")[1]: p for p in found}
    assert set(by_key) == {
        "tranformers",
        "measurement.min_window_secs",
        "precision",
        "execution.n_cycle",
        "execution.experiment_order",
        "transformers.batchsize",
    }
    assert by_key["tranformers"].startswith(f"{path}:2:") and "did you mean 'transformers'?" in by_key["tranformers"]
    assert by_key["measurement.min_window_secs"].startswith(f"{path}:5:")
    assert "did you mean 'min_window_seconds'?" in by_key["measurement.min_window_secs"]
    assert by_key["precision"].startswith(f"{path}:6:")
    assert by_key["execution.n_cycle"].startswith(f"{path}:8:")
    assert by_key["execution.experiment_order"].startswith(f"{path}:9:")
    assert by_key["transformers.batchsize"].startswith(f"{path}:11:")


def test_a_shared_problem_is_reported_once_at_its_own_line(problems):
    # Every cell of the sweep/experiments sees the shared field; the problem is still one line.
    path, found = problems(
        """
        model: llem-tiny
        max_output_tokens: lots
        executon:
          n_cycles: 2
        experiments:
          - id: a
            precision: fp16
          - id: b
            precision: bf16
        """
    )
    assert len(found) == 2
    assert found[0].startswith(f"{path}:2: max_output_tokens:")
    assert found[1].startswith(f"{path}:3: executon: unknown key (did you mean 'execution'?)")


def test_the_error_message_is_for_a_person_not_a_traceback(write):
    path = write(
        """
        model: llem-tiny
        precison: fp16
        max_output_tokens: lots
        sweep:
          transformers.batch_size: [1, "x"]
        """
    )
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    error = excinfo.value
    text = str(error)
    assert text.splitlines()[0] == f"{path}: 3 problems"
    assert text.splitlines()[1:] == error.problems
    for forbidden in ("Traceback", 'File "', "pydantic", "errors.pydantic.dev", "input_value", "validation error", "ValidationError"):
        assert forbidden not in text
    assert all(p.startswith(f"{path}:") for p in error.problems)
    assert error.__cause__ is None


# --------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "model: !!python/object/apply:os.system ['touch {marker}']\n",
        "model: llem-tiny\nprompts:\n  - !!python/object/apply:subprocess.check_call [['touch', '{marker}']]\n",
        "model: !!python/name:os.system\n",
        "model: !!python/object/new:os.system ['touch {marker}']\n",
    ],
)
def test_unsafe_yaml_tags_are_a_clean_error_and_never_run(write, tmp_path, payload):
    marker = tmp_path / "pwned"
    path = write(payload.format(marker=marker))
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    assert not marker.exists()
    (problem,) = excinfo.value.problems
    assert problem.startswith(f"{path}:")
    assert "invalid YAML: could not determine a constructor for the tag" in problem
    assert "python/" in problem
    assert "Traceback" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(write, text):
    path = write(text)
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    assert excinfo.value.problems == [f"{path}: the file is empty; a study needs at least a model"]


@pytest.mark.parametrize(
    ("text", "type_name"), [("- a\n- b\n", "list"), ("just a string\n", "str"), ("42\n", "int")]
)
def test_top_level_must_be_a_mapping(write, text, type_name):
    path = write(text)
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    assert excinfo.value.problems == [f"{path}:1: the top level must be a mapping of keys, got {type_name}"]


def test_invalid_yaml_names_the_line(write):
    path = write("model: llem-tiny\nprecision: fp16\nsweep:\n  precision: [fp16, bf16\nexecution: {}\n")
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    (problem,) = excinfo.value.problems
    assert problem.startswith(f"{path}:5: invalid YAML:")


def test_invalid_yaml_bad_indentation(write):
    path = write("model: llem-tiny\nmeasurement:\n  energy: nvml\n    device: cpu\n")
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    (problem,) = excinfo.value.problems
    # "... here" (PyYAML's own parser) or "... in this context" (libyaml's)
    assert problem.startswith(f"{path}:4: invalid YAML: mapping values are not allowed")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.llem.yaml"
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    (problem,) = excinfo.value.problems
    assert problem.startswith(f"{path}: cannot read the file")
    assert excinfo.value.__cause__ is None


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("max_output_tokens: true", "max_output_tokens", "a valid integer"),
        ('max_input_tokens: "8"', "max_input_tokens", "a valid integer"),
        ('ignore_eos: "on"', "ignore_eos", "a valid boolean"),
        ("dataset: {n_prompts: 2.5}", "dataset.n_prompts", "a valid integer"),
    ],
)
def test_values_are_not_coerced_across_types(write, line, key, expected):
    """A bool is not a number and a string is not a flag: the grammar refuses, naming file, line and key."""
    path = write(f"model: llem-tiny\n{line}\n")
    with pytest.raises(StudyError) as info:
        load_study(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:2: {key}") and expected in problem


# --------------------------------------------------------------------------- measurement validity and GPU counts


def test_cross_check_fail_tolerance_defaults_above_the_warning(load):
    study = load("model: llem-tiny\n")
    measurement = study.configurations[0].config.measurement
    assert measurement.cross_check_tolerance == 0.05 and measurement.cross_check_fail_tolerance == 0.25


def test_cross_check_fail_tolerance_below_the_warning_is_an_error(problems):
    path, found = problems(
        "model: llem-tiny\nmeasurement:\n  cross_check_tolerance: 0.1\n  cross_check_fail_tolerance: 0.05\n"
    )
    assert len(found) == 1
    assert found[0].startswith(f"{path}:2: measurement:")
    assert "cross_check_fail_tolerance (0.05) must be at least measurement.cross_check_tolerance (0.1)" in found[0]


def test_pipeline_parallel_size_is_a_study_key_of_vllm_and_tensorrt(load):
    study = load("model: llem-tiny\nengine: vllm\nvllm: {tensor_parallel_size: 2, pipeline_parallel_size: 3}\n")
    vllm = study.configurations[0].config.vllm
    assert vllm.pipeline_parallel_size == 3 and vllm.gpu_count == 6
    study = load("model: llem-tiny\nengine: tensorrt\ntensorrt.pipeline_parallel_size: 2\n")
    assert study.configurations[0].config.tensorrt.gpu_count == 2


@pytest.mark.parametrize(
    ("section", "key", "advice"),
    [
        ("vllm", "pipeline_parallel_size", "repeats pipeline_parallel_size: set vllm.pipeline_parallel_size instead"),
        ("vllm", "data_parallel_size", "data_parallel_size changes the GPUs the engine runs on, and every GPU must"),
        ("vllm", "data_parallel_size", "must be metered: not supported: data parallelism"),
        ("vllm", "data_parallel_size_local", "data_parallel_size_local changes the GPUs the engine runs on"),
        ("vllm", "data_parallel_rank", "not supported: data parallelism"),
        ("vllm", "prefill_context_parallel_size", "not supported: prefill context parallelism"),
        ("vllm", "nnodes", "not supported: a cell meters the GPUs of its own host only"),
        ("vllm", "enable_elastic_ep", "not supported: elastic expert parallelism"),
        ("tensorrt", "pipeline_parallel_size", "repeats pipeline_parallel_size: set tensorrt.pipeline_parallel_size"),
        ("tensorrt", "moe_expert_parallel_size", "moe_expert_parallel_size changes the GPUs the engine runs on"),
        ("tensorrt", "context_parallel_size", "not supported: context parallelism"),
        ("tensorrt", "gpus_per_node", "not supported: a cell meters the GPUs of its own host only"),
        ("tensorrt", "auto_parallel_world_size", "not supported: auto parallelism"),
    ],
)
def test_engine_args_that_change_the_gpu_count_are_errors_of_the_file(problems, section, key, advice):
    # Once forwarded: vLLM ran on more GPUs than the meter read and the idle baseline covered.
    path, found = problems(f"model: llem-tiny\nengine: {section}\n{section}:\n  engine_args: {{{key}: 2}}\n")
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:3: {section}: {section}.engine_args"), found[0]
    assert advice in found[0], found[0]


def test_engine_args_that_keep_the_gpu_count_still_pass(load):
    study = load(
        "model: llem-tiny\nengine: vllm\nvllm:\n"
        "  engine_args: {distributed_executor_backend: mp, decode_context_parallel_size: 1, max_model_len: 512}\n"
    )
    assert study.configurations[0].config.vllm.engine_args["distributed_executor_backend"] == "mp"


def test_numbers_in_scientific_notation_are_numbers(load):
    """PyYAML's YAML 1.1 reads 1.0e12 as a string; the study grammar reads it as YAML 1.2 does."""
    study = load("model: llem-tiny\nexpect:\n  avg_tokens_per_second: {min: 1.0e12}\n  mj_per_tok_total: {max: 5e2}\n")
    config = study.configurations[0].config
    assert config is not None
    assert config.expect["avg_tokens_per_second"].min == 1.0e12
    assert config.expect["mj_per_tok_total"].max == 500.0


def test_the_report_block_is_read_and_left_out_of_the_design_hash(load):
    plain = load("model: llem-tiny\n", name="a.llem.yaml")
    asked = load(
        "model: llem-tiny\nreport:\n  recommend: 'minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1'\n  by: [model_name]\n",
        name="b.llem.yaml",
    )
    assert plain.report.recommend is None and plain.report.by == []
    assert asked.report.recommend == "minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1"
    assert asked.report.by == ["model_name"]
    assert asked.design_hash == plain.design_hash  # what to recommend changes no measurement


def test_the_report_block_is_strict(problems):
    path, found = problems("model: llem-tiny\nreport:\n  recomend: 'itl_s.p50 <= 0.1'\n")
    assert found[0].startswith(f"{path}:3: report.recomend: unknown key (did you mean 'recommend'?)")
    path, found = problems("model: llem-tiny\nreport:\n  recommend: 5\n")
    assert found[0].startswith(f"{path}:3: report.recommend:"), found
