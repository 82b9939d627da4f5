"""Expanding sweep:, groups and experiments: into configurations."""

from __future__ import annotations

import pytest

from pytest_llem.study.study import LARGE_STUDY_CELLS


def ids_of(study):
    return [c.config_id for c in study.configurations]


def value(configuration, dotted):
    node = configuration.config
    assert node is not None, configuration.skip_reason
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# --------------------------------------------------------------------------- axes


def test_axes_are_crossed_in_declaration_order(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          precision: [fp16, bf16]
          transformers.batch_size: [1, 8]
        """
    )
    assert ids_of(study) == ["fp16-bs1", "fp16-bs8", "bf16-bs1", "bf16-bs8"]
    got = [(value(c, "precision"), value(c, "transformers.batch_size")) for c in study.configurations]
    assert got == [("fp16", 1), ("fp16", 8), ("bf16", 1), ("bf16", 8)]
    assert [c.index for c in study.configurations] == [0, 1, 2, 3]
    assert study.configurations[1].swept == {"precision": "fp16", "transformers.batch_size": 8}
    assert all(c.line == 3 for c in study.configurations)  # the line of the first axis


def test_three_axes_product(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          precision: [fp32, fp16, bf16]
          max_output_tokens: [8, 16]
          max_input_tokens: [32, 64]
        """
    )
    assert len(study.configurations) == 12
    assert ids_of(study)[:3] == ["fp32-out8-in32", "fp32-out8-in64", "fp32-out16-in32"]
    assert len(set(ids_of(study))) == 12


def test_engine_scoped_axes_are_never_crossed_with_other_engines(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          transformers.batch_size: [1, 8]
          vllm.max_num_seqs: [64, 256]
        """
    )
    assert ids_of(study) == ["transformers-bs1", "transformers-bs8", "vllm-seqs64", "vllm-seqs256"]
    assert [c.engine for c in study.configurations] == ["transformers"] * 2 + ["vllm"] * 2
    for configuration in study.configurations[:2]:
        assert value(configuration, "vllm.max_num_seqs") is None  # never set on transformers cells
    assert [value(c, "transformers.batch_size") for c in study.configurations] == [1, 8, 1, 1]
    assert [value(c, "vllm.max_num_seqs") for c in study.configurations[2:]] == [64, 256]
    assert study.configurations[2].swept == {"engine": "vllm", "vllm.max_num_seqs": 64}
    assert all(c.runnable for c in study.configurations)


def test_a_shared_axis_is_crossed_with_each_engine_family(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          transformers.batch_size: [1, 8]
          vllm.max_num_seqs: [64, 256]
          precision: [fp16, bf16]
        """
    )
    assert ids_of(study) == [
        "transformers-bs1-fp16",
        "transformers-bs1-bf16",
        "transformers-bs8-fp16",
        "transformers-bs8-bf16",
        "vllm-seqs64-fp16",
        "vllm-seqs64-bf16",
        "vllm-seqs256-fp16",
        "vllm-seqs256-bf16",
    ]


def test_a_shared_axis_alone_with_two_engines(load):
    study = load("model: llem-tiny\nengine: [transformers, vllm]\nsweep:\n  precision: [fp16, bf16]\n")
    assert ids_of(study) == ["transformers-fp16", "transformers-bf16", "vllm-fp16", "vllm-bf16"]


def test_engine_as_a_sweep_axis(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          engine: [transformers, vllm]
          precision: [fp16]
          vllm.enforce_eager: [true, false]
        """
    )
    assert ids_of(study) == ["transformers-fp16", "vllm-fp16-eager", "vllm-fp16-no-eager"]


def test_engine_list_without_a_sweep(load):
    study = load("model: llem-tiny\nengine: [transformers, vllm]\n")
    assert ids_of(study) == ["llem-tiny-transformers", "llem-tiny-vllm"]
    assert [c.engine for c in study.configurations] == ["transformers", "vllm"]


def test_a_repeated_engine_is_one_family(load):
    study = load("model: llem-tiny\nengine: [vllm, vllm]\nsweep:\n  precision: [fp16, bf16]\n")
    assert ids_of(study) == ["fp16", "bf16"]


def test_engine_without_scoped_axes_gets_one_cell_per_shared_combination(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          transformers.batch_size: [1, 2, 4]
        """
    )
    assert ids_of(study) == ["transformers-bs1", "transformers-bs2", "transformers-bs4", "llem-tiny-vllm"]


def test_a_scoped_axis_for_an_engine_not_in_the_study_is_an_error(problems):
    path, found = problems(
        """
        model: llem-tiny
        engine: transformers
        sweep:
          vllm.max_num_seqs: [64, 256]
        """
    )
    assert found == [
        f"{path}:4: sweep.vllm.max_num_seqs: applies to vllm cells, but the study has no vllm cells (engine: transformers)"
    ]


def test_a_scoped_axis_for_a_missing_engine_among_several(problems):
    path, found = problems(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          tensorrt.max_batch_size: [8]
          transformers.batch_size: [1]
        """
    )
    assert len(found) == 1
    assert found[0].startswith(f"{path}:4: sweep.tensorrt.max_batch_size: applies to tensorrt cells")
    assert "(engine: transformers, vllm)" in found[0]


# --------------------------------------------------------------------------- groups


def test_a_group_is_a_list_of_alternatives_not_a_product(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          shape:
            - {max_input_tokens: 128, max_output_tokens: 32}
            - {max_input_tokens: 512, max_output_tokens: 8}
        """
    )
    assert ids_of(study) == ["in128-out32", "in512-out8"]
    assert [(value(c, "max_input_tokens"), value(c, "max_output_tokens")) for c in study.configurations] == [
        (128, 32),
        (512, 8),
    ]
    assert [c.line for c in study.configurations] == [4, 5]


def test_an_empty_entry_is_no_override(load):
    study = load(
        """
        model: llem-tiny
        decoding: {seed: 5}
        sweep:
          decoding:
            - {}
            - {temperature: 0.7}
        """
    )
    assert len(study.configurations) == 2
    baseline, sampled = study.configurations
    assert baseline.swept == {}
    assert (value(baseline, "decoding.temperature"), value(baseline, "decoding.seed")) == (0.0, 5)
    assert (value(sampled, "decoding.temperature"), value(sampled, "decoding.seed")) == (0.7, 5)
    assert ids_of(study) == ["llem-tiny-transformers", "temp0.7"]


def test_a_list_inside_an_entry_is_a_small_grid(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          transformers:
            - {batch_size: [1, 2], use_cache: [true, false]}
            - {batch_size: 4}
        """
    )
    assert ids_of(study) == ["bs1-use_cache", "bs1-no-use_cache", "bs2-use_cache", "bs2-no-use_cache", "bs4"]
    assert [value(c, "transformers.use_cache") for c in study.configurations] == [True, False, True, False, True]


def test_a_group_key_naming_a_section_makes_entry_keys_relative(load):
    relative = load(
        """
        model: llem-tiny
        sweep:
          decoding:
            - {temperature: 0.7, top_p: 0.9}
            - {temperature: 1.0, top_k: 50}
        """,
        name="relative.yaml",
    )
    absolute = load(
        """
        model: llem-tiny
        sweep:
          sampling:
            - {decoding.temperature: 0.7, decoding.top_p: 0.9}
            - {decoding: {temperature: 1.0, top_k: 50}}
        """,
        name="absolute.yaml",
    )
    assert ids_of(relative) == ids_of(absolute) == ["temp0.7-top_p0.9", "temp1-top_k50"]
    assert [c.config_hash for c in relative.configurations] == [c.config_hash for c in absolute.configurations]
    assert value(relative.configurations[1], "decoding.top_k") == 50


def test_a_group_not_named_after_a_section_takes_full_paths(problems):
    path, found = problems(
        """
        model: llem-tiny
        sweep:
          sampling:
            - {temperature: 0.7}
        """
    )
    assert len(found) == 1
    assert found[0].startswith(f"{path}:4: temperature: unknown key")


def test_a_group_is_crossed_with_the_axes(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          precision: [fp16, bf16]
          decoding:
            - {}
            - {temperature: 0.7}
            - {temperature: 1.0}
        """
    )
    assert ids_of(study) == ["fp16", "fp16-temp0.7", "fp16-temp1", "bf16", "bf16-temp0.7", "bf16-temp1"]


def test_an_engine_section_group_is_scoped_to_that_engine(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          vllm:
            - {max_num_seqs: 8}
            - {max_num_seqs: 16, enforce_eager: true}
        """
    )
    assert ids_of(study) == ["llem-tiny-transformers", "vllm-seqs8", "vllm-seqs16-eager"]
    assert value(study.configurations[2], "vllm.enforce_eager") is True


def test_a_scoped_group_for_an_engine_not_in_the_study_is_an_error(problems):
    path, found = problems("model: llem-tiny\nsweep:\n  vllm:\n    - {max_num_seqs: 8}\n")
    assert found == [f"{path}:3: sweep.vllm: applies to vllm cells, but the study has no vllm cells (engine: transformers)"]


def test_an_alternative_with_an_engine_section_and_shared_fields_is_scoped_to_that_engine(load):
    # A short variant at small batch: the shared field travels with the transformers alternative.
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          variant:
            - {}
            - {transformers.batch_size: 4, max_output_tokens: 16}
        """
    )
    assert [(c.config_id, c.engine) for c in study.configurations] == [
        ("llem-tiny-transformers", "transformers"),
        ("transformers-bs4-out16", "transformers"),
        ("llem-tiny-vllm", "vllm"),  # vllm cells never get the transformers alternative
    ]
    base, short, vllm = study.configurations
    assert (value(base, "transformers.batch_size"), value(base, "max_output_tokens")) == (1, 64)
    assert (value(short, "transformers.batch_size"), value(short, "max_output_tokens")) == (4, 16)
    assert value(vllm, "max_output_tokens") == 64  # the shared field is not applied to vllm either
    assert short.swept == {"engine": "transformers", "transformers.batch_size": 4, "max_output_tokens": 16}
    assert vllm.swept == {"engine": "vllm"}
    assert [c.line for c in study.configurations] == [3, 6, 3]
    assert all(c.runnable for c in study.configurations)


def test_a_scoped_alternative_is_crossed_with_the_axes_of_its_engine_only(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          precision: [fp16, bf16]
          variant:
            - {max_output_tokens: 32}
            - {transformers.batch_size: 4, max_output_tokens: 16}
            - {vllm: {max_num_seqs: 8}, max_input_tokens: 64}
        """
    )
    assert ids_of(study) == [
        "transformers-fp16-out32",
        "transformers-fp16-bs4-out16",
        "transformers-bf16-out32",
        "transformers-bf16-bs4-out16",
        "vllm-fp16-out32",
        "vllm-fp16-seqs8-in64",
        "vllm-bf16-out32",
        "vllm-bf16-seqs8-in64",
    ]
    by_id = {c.config_id: c for c in study.configurations}
    assert value(by_id["vllm-fp16-seqs8-in64"], "max_input_tokens") == 64
    assert value(by_id["vllm-fp16-seqs8-in64"], "max_output_tokens") == 64
    assert value(by_id["transformers-bf16-bs4-out16"], "max_input_tokens") != 64
    assert value(by_id["transformers-fp16-out32"], "vllm.max_num_seqs") is None


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        # One alternative per engine: each engine gets its own.
        ("- {transformers.batch_size: 1}\n    - {vllm.max_num_seqs: 8}", ["transformers-bs1", "vllm-seqs8"]),
        # A single scoped alternative with a shared field: other engines are not multiplied by the group.
        ("- {transformers.batch_size: 1, precision: fp16}", ["transformers-bs1-fp16", "llem-tiny-vllm"]),
        # A shared alternative next to a scoped one: the shared one applies to every engine.
        ("- {transformers.batch_size: 1}\n    - {precision: fp16}", ["transformers-bs1", "transformers-fp16", "vllm-fp16"]),
    ],
)
def test_a_group_may_mix_scopes_alternative_by_alternative(load, entries, expected):
    study = load(f"model: llem-tiny\nengine: [transformers, vllm]\nsweep:\n  mixed:\n    {entries}\n")
    assert ids_of(study) == expected


@pytest.mark.parametrize(
    "entry",
    [
        "{transformers.batch_size: 4, vllm.max_num_seqs: 8, max_output_tokens: 16}",
        "{transformers: {batch_size: 4}, vllm: {max_num_seqs: 8}, max_output_tokens: 16}",
    ],
)
def test_an_alternative_naming_two_engines_sections_is_an_error(problems, entry):
    path, found = problems(
        f"""
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          precision: [fp16]
          variant:
            - {{}}
            - {entry}
        """
    )
    assert found == [
        (
            f"{path}:7: sweep.variant[1]: an alternative applies to one engine's cells, but this one names the sections"
            " of transformers (transformers.batch_size) and vllm (vllm.max_num_seqs); write one alternative per engine"
        )
    ]


def test_every_alternative_naming_two_engines_is_reported(problems):
    path, found = problems(
        """
        model: llem-tiny
        engine: [transformers, vllm, tensorrt]
        sweep:
          variant:
            - {transformers.batch_size: 4, tensorrt.max_batch_size: 4}
            - {max_output_tokens: 16}
            - transformers.batch_size: 2
              vllm.max_num_seqs: 8
              tensorrt.max_batch_size: 8
        """
    )
    assert [p.split(": ", 2)[:2] for p in found] == [[f"{path}:5", "sweep.variant[0]"], [f"{path}:8", "sweep.variant[2]"]]
    assert "transformers (transformers.batch_size) and tensorrt (tensorrt.max_batch_size)" in found[0]
    assert "transformers (transformers.batch_size), vllm (vllm.max_num_seqs) and tensorrt (tensorrt.max_batch_size)" in found[1]


def test_a_scoped_alternative_for_an_engine_not_in_the_study_is_an_error(problems):
    path, found = problems(
        """
        model: llem-tiny
        engine: transformers
        sweep:
          variant:
            - {}
            - {transformers.batch_size: 4, max_output_tokens: 16}
            - {vllm.max_num_seqs: [8, 16], max_output_tokens: 16}
        """
    )
    assert found == [
        f"{path}:7: sweep.variant[2]: applies to vllm cells, but the study has no vllm cells (engine: transformers)"
    ]


def test_an_empty_list_in_a_group_entry_is_an_error_not_a_silently_dropped_entry(problems):
    path, found = problems(
        """
        model: llem-tiny
        sweep:
          precision: [fp16, bf16]
          transformers:
            - {batch_size: []}
        """
    )
    assert found == [f"{path}:5: sweep.transformers[0].batch_size: expected a non-empty list of values, got []"]


def test_a_bad_value_in_a_scoped_alternative_points_at_its_line(problems):
    path, found = problems(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          variant:
            - {}
            - {transformers.batch_size: 4, max_output_tokens: 0}
        """
    )
    assert found == [f"{path}:6: max_output_tokens: Input should be greater than or equal to 1 (got 0)"]


def test_an_id_template_names_cells_of_a_scoped_alternative(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        id: "{engine}-bs{transformers.batch_size}-out{max_output_tokens}"
        sweep:
          variant:
            - {}
            - {transformers.batch_size: 4, max_output_tokens: 16}
        """
    )
    assert ids_of(study) == ["transformers-bs1-out64", "transformers-bs4-out16", "vllm-bs1-out64"]


# --------------------------------------------------------------------------- experiments


def test_experiments_are_deep_merged_over_the_shared_fields(load):
    study = load(
        """
        model: llem-tiny
        precision: fp16
        transformers: {batch_size: 2}
        measurement:
          min_window_seconds: 5
          warmup: {max_batches: 6}
        experiments:
          - id: big
            transformers: {batch_size: 4}
          - precision: bf16
          - transformers.use_cache: false
            measurement:
              warmup: {min_batches: 2}
        """
    )
    assert ids_of(study) == ["big", "bf16", "no-use_cache-min_batches2"]
    big, bf16, no_cache = study.configurations
    assert (value(big, "precision"), value(big, "transformers.batch_size"), value(big, "transformers.use_cache")) == (
        "fp16",
        4,
        True,
    )
    assert (value(bf16, "precision"), value(bf16, "transformers.batch_size")) == ("bf16", 2)
    assert (value(no_cache, "transformers.batch_size"), value(no_cache, "transformers.use_cache")) == (2, False)
    assert value(no_cache, "measurement.min_window_seconds") == 5.0
    assert (value(no_cache, "measurement.warmup.max_batches"), value(no_cache, "measurement.warmup.min_batches")) == (6, 2)
    assert [c.line for c in study.configurations] == [9, 10, 11]  # a line inside each entry


def test_experiments_without_a_sweep_are_the_only_cells(load):
    study = load(
        """
        model: llem-tiny
        experiments:
          - {precision: fp16}
          - {precision: fp32}
        """
    )
    assert ids_of(study) == ["fp16", "fp32"]


def test_experiments_are_added_after_the_sweep(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          precision: [fp16, bf16]
        experiments:
          - {id: extra, max_output_tokens: 8}
        """
    )
    assert ids_of(study) == ["fp16", "bf16", "extra"]
    extra = study.configurations[2]
    assert (value(extra, "precision"), value(extra, "max_output_tokens")) == ("bf16", 8)
    assert extra.line == 5


def test_an_experiment_without_an_engine_runs_on_each_study_engine(load):
    study = load("model: llem-tiny\nengine: [transformers, vllm]\nexperiments:\n  - {precision: fp16}\n")
    assert ids_of(study) == ["transformers-fp16", "vllm-fp16"]


def test_an_experiment_naming_an_engine_runs_only_there(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        experiments:
          - {engine: vllm, vllm.max_num_seqs: 8}
          - {transformers.batch_size: 2}
        """
    )
    assert [(c.config_id, c.engine) for c in study.configurations] == [
        ("vllm-seqs8", "vllm"),
        ("transformers-bs2", "transformers"),
        ("vllm-bs2", "vllm"),
    ]


def test_an_experiment_with_only_an_id_is_the_shared_config(load):
    study = load("model: llem-tiny\nprecision: fp32\nexperiments:\n  - id: baseline\n  - {id: half, precision: fp16}\n")
    assert ids_of(study) == ["baseline", "half"]
    assert [value(c, "precision") for c in study.configurations] == ["fp32", "fp16"]
    assert [c.line for c in study.configurations] == [4, 5]


# --------------------------------------------------------------------------- single experiment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: llem-tiny\n", "llem-tiny-transformers"),
        ("model: llem-tiny\nengine: vllm\n", "llem-tiny-vllm"),
        ("model: llem-tiny\nengine: [tensorrt]\n", "llem-tiny-tensorrt"),
        ("model: meta-llama/Llama-3.1-8B\nengine: vllm\n", "Llama-3.1-8B-vllm"),
    ],
)
def test_a_single_experiment_is_one_configuration_named_model_engine(load, text, expected):
    study = load(text)
    assert ids_of(study) == [expected]
    assert study.configurations[0].swept == {}
    assert study.configurations[0].line == 1


# --------------------------------------------------------------------------- invalid combinations


def test_batch_larger_than_the_prompts_is_skipped_not_an_error(load):
    study = load(
        """
        model: llem-tiny
        dataset: {n_prompts: 4}
        sweep:
          transformers.batch_size: [1, 4, 8]
        """
    )
    assert ids_of(study) == ["bs1", "bs4", "bs8"]
    assert [c.runnable for c in study.configurations] == [True, True, False]
    skipped = study.configurations[2]
    assert skipped.skip_reason == (
        "transformers.batch_size 8 exceeds the 4 prompts of a pass: the batch would never be full"
    )
    assert skipped.config is None and skipped.config_hash is None
    assert [c.config_id for c in study.runnable] == ["bs1", "bs4"]


def test_inline_prompts_count_for_the_batch_rule(load):
    study = load("model: llem-tiny\nprompts: [a, b]\nsweep:\n  transformers.batch_size: [2, 3]\n")
    assert [c.skip_reason is None for c in study.configurations] == [True, False]
    assert "exceeds the 2 prompts" in study.configurations[1].skip_reason


def test_sampling_knobs_with_greedy_decoding_are_skipped(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          decoding.top_p: [0.9, 1.0]
        """
    )
    assert ids_of(study) == ["top_p0.9", "top_p1"]
    first, second = study.configurations
    assert first.skip_reason == "decoding.top_p / decoding.top_k have no effect with decoding.temperature 0 (greedy)"
    assert second.runnable


def test_fp16_on_cpu_is_skipped(load):
    study = load("model: llem-tiny\nmeasurement: {device: cpu}\nsweep:\n  precision: [fp32, fp16, bf16]\n")
    assert [c.config_id for c in study.runnable] == ["fp32", "bf16"]
    assert "fp16 is not supported for generation on the CPU" in study.configurations[1].skip_reason


def test_a_rule_of_one_engine_does_not_skip_another(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        sweep:
          transformers.batch_size: [1, 64]
          precision: [fp16, bf16]
        """
    )
    skipped = [c.config_id for c in study.configurations if not c.runnable]
    assert skipped == ["transformers-bs64-fp16", "transformers-bs64-bf16"]
    assert [c.config_id for c in study.runnable] == ["transformers-bs1-fp16", "transformers-bs1-bf16", "vllm-fp16", "vllm-bf16"]


def test_a_skipped_experiment_cell(load):
    study = load("model: llem-tiny\nexperiments:\n  - {id: ok}\n  - {id: bad, decoding: {top_k: 5}}\n")
    assert [c.runnable for c in study.configurations] == [True, False]
    assert "temperature 0" in study.configurations[1].skip_reason


def test_a_sweep_whose_cells_are_all_invalid_is_an_error(problems):
    path, found = problems(
        """
        model: llem-tiny
        dataset: {n_prompts: 4}
        sweep:
          transformers.batch_size: [8, 16]
        """
    )
    assert found == [
        (f"{path}: every cell of the study is an invalid combination: "
        "transformers.batch_size 16 exceeds the 4 prompts of a pass: the batch would never be full | "
        "transformers.batch_size 8 exceeds the 4 prompts of a pass: the batch would never be full")
    ]


def test_a_single_invalid_experiment_is_an_error(problems):
    path, found = problems("model: llem-tiny\ndecoding: {top_p: 0.5}\n")
    assert len(found) == 1
    assert found[0].startswith(f"{path}: every cell of the study is an invalid combination:")
    assert "decoding.temperature 0" in found[0]


def test_a_file_error_in_a_cell_is_not_hidden_as_a_skip(problems):
    # The cell is both an invalid combination and carries a bad value: the bad value is reported.
    path, found = problems(
        """
        model: llem-tiny
        dataset: {n_prompts: 4}
        sweep:
          transformers.batch_size: [1, 8]
          precision: [fp16, fp8]
        """
    )
    assert found == [f"{path}:5: precision: expected 'fp32', 'fp16' or 'bf16' (got 'fp8')"]


# --------------------------------------------------------------------------- size


def test_a_study_of_more_than_the_limit_of_cells_warns(load):
    assert LARGE_STUDY_CELLS == 2000
    study = load("model: llem-tiny\nsweep:\n  precision: [fp32, fp16, bf16]\nexecution: {n_cycles: 1000}\n")
    assert len(study.configurations) == 3
    assert len(study.warnings) == 1
    assert "3000 cells (3 configurations x 1000 cycles)" in study.warnings[0]


def test_a_sweep_of_more_than_the_limit_of_configurations_warns(load):
    values = list(range(1, 46))  # 45 x 45 = 2025 configurations
    study = load(f"model: llem-tiny\nsweep:\n  max_output_tokens: {values}\n  max_input_tokens: {values}\nexecution: {{n_cycles: 1}}\n")
    assert len(study.configurations) == 2025
    assert len(study.warnings) == 1 and "2025 cells" in study.warnings[0]


def test_a_study_at_the_limit_does_not_warn(load):
    study = load("model: llem-tiny\nsweep:\n  precision: [fp16, bf16]\nexecution: {n_cycles: 1000}\n")
    assert study.warnings == []
