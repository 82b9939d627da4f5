"""Cell ids, the two hashes, and the order cells run in."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.naming import sanitise
from pytest_llem.study import ids
from pytest_llem.study.hashing import (
    canonical_json,
    measurement_config_hash,
    measurement_fields,
    study_design_hash,
)
from pytest_llem.study.ordering import ORDERS, run_order

HEX16 = re.compile(r"^[0-9a-f]{16}$")
SAFE_ID = re.compile(r"^[\w.+-]+$")


def ids_of(study):
    return [c.config_id for c in study.configurations]


def assert_safe(config_id: str) -> None:
    assert SAFE_ID.match(config_id), config_id
    assert ".." not in config_id
    for bad in ("/", "\\", " ", "::", ":", "=", "[", "]"):
        assert bad not in config_id
    assert not config_id.startswith((".", "-", "_"))


# --------------------------------------------------------------------------- ids: sanitising


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("meta-llama/Llama-3.1-8B", "meta-llama--Llama-3.1-8B"),
        ("../../x", "x"),
        ("../../../etc/passwd", "etc--passwd"),
        ("/abs/path/model", "abs--path--model"),
        ("C:\\models\\m", "C_--models--m"),
        ("a b::c=d[e]", "a_b_c_d_e"),
        ("name with  spaces", "name_with_spaces"),
        ("a..b", "a_b"),
        ("..", "x"),
        ("", "x"),
        ("/", "x"),
        ("fp16", "fp16"),
        ("Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct"),
    ],
)
def test_sanitise(text, expected):
    assert sanitise(text) == expected
    assert_safe(sanitise(text))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("transformers.batch_size", 8, "bs8"),
        ("vllm.max_num_seqs", 64, "seqs64"),
        ("tensorrt.max_batch_size", 16, "bs16"),
        ("vllm.tensor_parallel_size", 2, "tp2"),
        ("max_output_tokens", 32, "out32"),
        ("max_input_tokens", 128, "in128"),
        ("decoding.temperature", 0.7, "temp0.7"),
        ("decoding.temperature", 1.0, "temp1"),
        ("decoding.top_p", 0.95, "top_p0.95"),
        ("vllm.gpu_memory_utilization", 0.85, "gmu0.85"),
        ("vllm.enforce_eager", True, "eager"),
        ("vllm.enforce_eager", False, "no-eager"),
        ("transformers.use_cache", False, "no-use_cache"),
        ("transformers.torch_compile", True, "torch_compile"),
        ("vllm.max_num_seqs", None, "seqs-none"),
        ("precision", "bf16", "bf16"),
        ("model", "meta-llama/Llama-3.1-8B", "meta-llama--Llama-3.1-8B"),
        ("model", "/abs/m", "abs--m"),
    ],
)
def test_id_piece(path, value, expected):
    assert ids.id_piece(path, value) == expected


def test_id_piece_of_a_structured_value_is_a_short_stable_digest():
    piece = ids.id_piece("vllm.engine_args", {"b": 1, "a": [1, 2]})
    assert re.match(r"^engine_args-[0-9a-f]{6}$", piece)
    assert piece == ids.id_piece("vllm.engine_args", {"a": [1, 2], "b": 1})
    assert piece != ids.id_piece("vllm.engine_args", {"a": [1, 2], "b": 2})


def test_unsafe_model_names_never_survive_into_ids(load):
    study = load(
        """
        model: llem-tiny
        sweep:
          model: [meta-llama/Llama-3.1-8B, ../../x, /abs/path/m, "a b::c=d[e]"]
        """
    )
    assert ids_of(study) == ["meta-llama--Llama-3.1-8B", "x", "abs--path--m", "a_b_c_d_e"]
    for config_id in ids_of(study):
        assert_safe(config_id)


def test_explicit_ids_are_sanitised(load):
    study = load(
        """
        model: llem-tiny
        experiments:
          - {id: "../../evil path", precision: fp16}
          - {id: "a::b=c[d]", precision: fp32}
          - {id: "/etc/x", precision: bf16}
        """
    )
    assert ids_of(study) == ["evil_path", "a_b_c_d", "etc--x"]


def test_numbers_get_short_keys_so_axes_cannot_be_confused(load):
    study = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        dataset: {n_prompts: 64}
        sweep:
          transformers.batch_size: [8, 64]
          vllm.max_num_seqs: [8, 64]
        """
    )
    assert ids_of(study) == ["transformers-bs8", "transformers-bs64", "vllm-seqs8", "vllm-seqs64"]


def test_bools_in_ids(load):
    study = load(
        """
        model: llem-tiny
        engine: vllm
        sweep:
          vllm.enforce_eager: [true, false]
          vllm.enable_prefix_caching: [false, true]
        """
    )
    assert ids_of(study) == [
        "eager-no-prefix-cache",
        "eager-prefix-cache",
        "no-eager-no-prefix-cache",
        "no-eager-prefix-cache",
    ]


# --------------------------------------------------------------------------- ids: templates and clashes


def test_id_template_with_dotted_fields(load):
    study = load(
        """
        model: meta-llama/Llama-3.1-8B
        id: "{model}-{engine}-bs{transformers.batch_size}-{precision}-t{decoding.temperature}-{transformers.use_cache}"
        sweep:
          precision: [fp16, bf16]
          transformers.batch_size: [1, 8]
        """
    )
    assert ids_of(study) == [
        "meta-llama--Llama-3.1-8B-transformers-bs1-fp16-t0.0-true",
        "meta-llama--Llama-3.1-8B-transformers-bs8-fp16-t0.0-true",
        "meta-llama--Llama-3.1-8B-transformers-bs1-bf16-t0.0-true",
        "meta-llama--Llama-3.1-8B-transformers-bs8-bf16-t0.0-true",
    ]


def test_an_explicit_experiment_id_wins_over_the_template(load):
    study = load(
        """
        model: llem-tiny
        id: "p-{precision}"
        experiments:
          - {precision: fp16}
          - {id: special, precision: fp32}
        """
    )
    assert ids_of(study) == ["p-fp16", "special"]


def test_an_unknown_template_field_is_an_error_with_a_suggestion(problems):
    path, found = problems(
        """
        model: llem-tiny
        id: "{engine}-bs{transformers.batch_size}-{precison}"
        sweep:
          transformers.batch_size: [1, 2]
        """
    )
    assert found == [f"{path}:2: id: template field {{precison}} is not an experiment field (did you mean 'precision'?)"]


def test_an_unknown_dotted_template_field(problems):
    path, found = problems('model: llem-tiny\nid: "bs{transformers.batchsize}"\n')
    assert found == [
        (f"{path}:2: id: template field {{transformers.batchsize}} is not an experiment field"
        " (did you mean 'transformers.batch_size'?)")
    ]


def test_duplicate_ids_from_a_template_list_the_clashing_cells(problems):
    path, found = problems(
        """
        model: llem-tiny
        id: "{engine}"
        sweep:
          transformers.batch_size: [1, 2]
        """
    )
    assert found == [
        (f"{path}:4: duplicate cell id 'transformers' for 2 cells (line 4: transformers.batch_size=1;"
        " line 4: transformers.batch_size=2); give them distinct `id:` values or an `id:` template")
    ]


def test_duplicate_explicit_ids(problems):
    path, found = problems(
        """
        model: llem-tiny
        experiments:
          - {id: same, precision: fp16}
          - {id: other, precision: fp32}
          - {id: same, precision: bf16}
        """
    )
    assert found == [
        (f"{path}:3: duplicate cell id 'same' for 2 cells (line 3: precision='fp16'; line 5: precision='bf16');"
        " give them distinct `id:` values or an `id:` template")
    ]


def test_duplicate_ids_of_experiments_with_only_an_id_name_their_lines(problems):
    path, found = problems("model: llem-tiny\nexperiments:\n  - {id: a}\n  - {id: a}\n")
    assert found == [
        (f"{path}:3: duplicate cell id 'a' for 2 cells (line 3: (shared fields only); line 4: (shared fields only));"
        " give them distinct `id:` values or an `id:` template")
    ]


def test_duplicate_ids_between_sweep_and_experiments(problems):
    path, found = problems(
        """
        model: llem-tiny
        sweep:
          precision: [fp16, bf16]
        experiments:
          - {precision: fp16}
        """
    )
    assert len(found) == 1
    assert found[0].startswith(f"{path}:3: duplicate cell id 'fp16' for 2 cells (line 3: precision='fp16'; line 5:")


def test_sanitising_can_make_ids_clash_and_that_is_caught(problems):
    _path, found = problems("model: llem-tiny\nsweep:\n  model: ['a b', 'a:b']\n")
    assert len(found) == 1
    assert "duplicate cell id 'a_b' for 2 cells" in found[0]


# --------------------------------------------------------------------------- measurement_config_hash


def test_hash_is_16_hex_of_sha256_of_the_measurement_fields(load):
    study = load("model: llem-tiny\nsweep:\n  precision: [fp16, bf16]\n")
    for configuration in study.configurations:
        assert HEX16.match(configuration.config_hash)
        fields = measurement_fields(configuration.config)
        assert "output" not in fields and "vllm" not in fields and "tensorrt" not in fields
        assert fields["transformers"] == {"batch_size": 1, "attn_implementation": None, "use_cache": True, "torch_compile": False}
        expected = hashlib.sha256(canonical_json(fields).encode()).hexdigest()[:16]
        assert configuration.config_hash == expected == measurement_config_hash(configuration.config)
    assert study.configurations[0].config_hash != study.configurations[1].config_hash


def test_hash_is_the_same_for_the_same_config_written_differently(load):
    a = load(
        """
        model: llem-tiny
        precision: fp16
        transformers:
          batch_size: 4
        measurement:
          min_window_seconds: 2
          warmup: {max_batches: 6}
        """,
        name="one/a.llem.yaml",
    )
    b = load(
        """
        measurement.warmup.max_batches: 6
        transformers.batch_size: 4
        measurement.min_window_seconds: 2.0
        precision: fp16
        model: llem-tiny
        engine: transformers
        """,
        name="two/other-name.yaml",
    )
    c = load(
        """
        model: llem-tiny
        sweep:
          precision: [bf16, fp16]
          transformers.batch_size: [4]
        measurement: {min_window_seconds: 2, warmup: {max_batches: 6}}
        """,
        name="three/sweep.llem.yaml",
    )
    d = load(
        """
        model: llem-tiny
        experiments:
          - {precision: fp16, transformers.batch_size: 4, measurement: {min_window_seconds: 2, warmup: {max_batches: 6}}}
        """,
        name="four/exp.llem.yaml",
    )
    target = a.configurations[0].config_hash
    assert b.configurations[0].config_hash == target
    assert c.configurations[1].config_hash == target  # the fp16 cell of the sweep
    assert c.configurations[0].config_hash != target
    assert d.configurations[0].config_hash == target


def test_the_same_file_in_another_directory_has_the_same_hash(write):
    from pytest_llem.study.study import load_study

    text = "model: llem-tiny\nsweep:\n  transformers.batch_size: [1, 2]\n"
    first = load_study(write(text, "x/s.llem.yaml"))
    second = load_study(write(text, "y/z/s.llem.yaml"))
    assert [c.config_hash for c in first.configurations] == [c.config_hash for c in second.configurations]


def test_output_settings_do_not_change_the_hash(load):
    base = load("model: llem-tiny\n", name="a.yaml").configurations[0].config_hash
    moved = load("model: llem-tiny\noutput:\n  results_dir: /elsewhere/results\n  save_timeseries: false\n", name="b.yaml")
    assert moved.configurations[0].config.output.results_dir == "/elsewhere/results"
    assert moved.configurations[0].config_hash == base


def test_other_engines_sections_do_not_change_the_hash(load):
    plain = load("model: llem-tiny\nengine: [transformers, vllm]\n", name="a.yaml")
    tuned = load(
        """
        model: llem-tiny
        engine: [transformers, vllm]
        transformers: {batch_size: 1, attn_implementation: sdpa}
        vllm: {max_num_seqs: 8, enforce_eager: true}
        tensorrt: {max_batch_size: 4}
        """,
        name="b.yaml",
    )
    plain_t, plain_v = plain.configurations
    tuned_t, tuned_v = tuned.configurations
    # transformers cells differ only in their own section's attn_implementation
    assert tuned_t.config_hash != plain_t.config_hash
    only_vllm = load("model: llem-tiny\nvllm: {max_num_seqs: 8, enforce_eager: true}\ntensorrt: {max_batch_size: 4}\n", name="c.yaml")
    assert only_vllm.configurations[0].config_hash == plain_t.config_hash
    # vllm cells: the transformers and tensorrt sections do not count, the vllm one does
    assert tuned_v.config_hash != plain_v.config_hash
    only_transformers = load(
        "model: llem-tiny\nengine: vllm\ntransformers: {batch_size: 4, attn_implementation: eager}\n", name="d.yaml"
    )
    assert only_transformers.configurations[0].config_hash == plain_v.config_hash


@pytest.mark.parametrize(
    "change",
    [
        "measurement: {min_window_seconds: 3}",
        "measurement: {sample_interval_ms: 50}",
        "measurement: {warmup: {max_batches: 7}}",
        "measurement: {energy: nvml}",
        "precision: fp16",
        "transformers: {batch_size: 2}",
        "max_output_tokens: 65",
        "ignore_eos: true",
        "decoding: {seed: 1}",
        "dataset: {n_prompts: 33}",
        "model: other-model",
        "engine: vllm",
    ],
)
def test_measurement_settings_change_the_hash(load, change):
    base = load("model: llem-tiny\n", name="base.yaml").configurations[0].config_hash
    text = f"{change}\n" if change.startswith("model:") else f"model: llem-tiny\n{change}\n"  # a key appears once
    changed = load(text, name="changed.yaml").configurations[0].config_hash
    assert HEX16.match(changed)
    assert changed != base


def test_every_cell_of_a_sweep_has_its_own_hash(load):
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
    hashes = [c.config_hash for c in study.configurations]
    assert len(set(hashes)) == len(hashes) == 8


def test_measurement_fields_leave_out_only_output_and_other_engines():
    config = ExperimentConfig(engine="vllm")
    assert set(measurement_fields(config)) == set(ExperimentConfig.model_fields) - {"output", "expect", "transformers", "tensorrt"}


# --------------------------------------------------------------------------- study_design_hash

SWEEP = """
name: {name}
model: llem-tiny
sweep:
  precision: [fp16, bf16]
  transformers.batch_size: [1, {bs}]
execution:
{execution}
"""


def design(load, *, bs=8, execution="  n_cycles: 3", name="s", file="s.llem.yaml"):
    return load(SWEEP.format(bs=bs, execution=execution, name=name), name=file).design_hash


def test_design_hash_is_16_hex_and_stable_across_loads(load, write):
    from pytest_llem.study.study import load_study

    first = design(load)
    assert HEX16.match(first)
    assert design(load) == first
    path = write(SWEEP.format(bs=8, execution="  n_cycles: 3", name="s"), "again.llem.yaml")
    assert load_study(path).design_hash == load_study(path).design_hash == first


def test_design_hash_equals_the_digest_of_its_configs(load):
    study = load(SWEEP.format(bs=8, execution="  n_cycles: 3", name="s"))
    assert study.design_hash == study_design_hash([c.config for c in study.configurations])


@pytest.mark.parametrize(
    "execution",
    [
        "  n_cycles: 12",
        "  experiment_order: shuffle\n  shuffle_seed: 9",
        "  experiment_order: latin_square",
        "  experiment_gap_seconds: 5\n  cycle_gap_seconds: 60\n  experiment_timeout_seconds: 10",
    ],
)
def test_design_hash_ignores_the_execution_block(load, execution):
    assert design(load, execution=execution, file="b.yaml") == design(load, file="a.yaml")


def test_design_hash_ignores_the_file_name_and_the_output_dir(load):
    base = design(load, file="a.yaml")
    assert design(load, file="sub/dir/other.yaml") == base
    moved = load(SWEEP.format(bs=8, execution="  n_cycles: 3", name="s") + "output: {results_dir: /tmp/else}\n", name="c.yaml")
    assert moved.design_hash == base


def test_design_hash_changes_with_a_sweep_value(load):
    assert design(load, bs=4, file="b.yaml") != design(load, bs=8, file="a.yaml")


def test_design_hash_depends_on_declaration_order(load):
    a = load("model: llem-tiny\nsweep:\n  precision: [fp16, bf16]\n", name="a.yaml").design_hash
    b = load("model: llem-tiny\nsweep:\n  precision: [bf16, fp16]\n", name="b.yaml").design_hash
    assert a != b


# --------------------------------------------------------------------------- ordering


def test_sequential():
    assert run_order(2, 2, "sequential") == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_interleave():
    assert run_order(2, 2, "interleave") == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_reverse():
    assert [i for i, _ in run_order(3, 2, "reverse")] == [0, 1, 2, 2, 1, 0]
    assert run_order(3, 3, "reverse") == [(0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (0, 1), (0, 2), (1, 2), (2, 2)]


def test_latin_square_rotates_and_every_config_takes_every_position_once():
    n = 4
    pairs = run_order(n, n, "latin_square")
    rounds = [[i for i, k in pairs if k == cycle] for cycle in range(n)]
    assert rounds == [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1], [3, 0, 1, 2]]
    for position in range(n):
        assert sorted(r[position] for r in rounds) == list(range(n))
    # more cycles than configs: the rotation wraps around
    assert [i for i, k in run_order(2, 3, "latin_square")] == [0, 1, 1, 0, 0, 1]


def test_shuffle_is_seeded_and_each_cycle_is_a_permutation():
    a = run_order(8, 4, "shuffle", seed=1)
    assert a == run_order(8, 4, "shuffle", seed=1)
    assert a != run_order(8, 4, "shuffle", seed=2)
    rounds = [[i for i, k in a if k == cycle] for cycle in range(4)]
    assert [k for _, k in a] == [0] * 8 + [1] * 8 + [2] * 8 + [3] * 8
    for r in rounds:
        assert sorted(r) == list(range(8))
    assert len({tuple(r) for r in rounds}) > 1  # a fresh permutation per cycle


def test_shuffle_does_not_depend_on_the_hash_seed_of_the_process():
    # Every pytest-xdist worker must compute the same order, whatever its PYTHONHASHSEED.
    code = "from pytest_llem.study.ordering import run_order; print(run_order(8, 3, 'shuffle', 5))"
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert outputs == {str(run_order(8, 3, "shuffle", 5)) + "\n"}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("n_configs", "n_cycles"), [(1, 1), (3, 4), (5, 2), (0, 3)])
def test_every_order_runs_every_cell_exactly_once(order, n_configs, n_cycles):
    pairs = run_order(n_configs, n_cycles, order, seed=3)
    assert len(pairs) == n_configs * n_cycles
    assert Counter(pairs) == Counter((i, k) for i in range(n_configs) for k in range(n_cycles))


def test_unknown_order():
    with pytest.raises(ValueError, match="unknown experiment_order 'random'; expected one of sequential"):
        run_order(2, 2, "random")


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("sequential", ["A", "A", "B", "B", "C", "C"]),
        ("interleave", ["A", "B", "C", "A", "B", "C"]),
        ("reverse", ["A", "B", "C", "C", "B", "A"]),
        ("latin_square", ["A", "B", "C", "B", "C", "A"]),
    ],
)
def test_study_run_order(load, order, expected):
    study = load(
        f"""
        model: llem-tiny
        experiments:
          - {{id: A}}
          - {{id: B, precision: fp16}}
          - {{id: C, precision: fp32}}
        execution: {{n_cycles: 2, experiment_order: {order}}}
        """
    )
    run = study.run_order()
    assert [c.config_id for c, _ in run] == expected
    assert sorted(k for _, k in run) == [0, 0, 0, 1, 1, 1]


def test_study_shuffle_order_follows_the_seed(load):
    def order(seed, name):
        study = load(
            f"""
            model: llem-tiny
            sweep:
              transformers.batch_size: [1, 2, 3, 4, 5, 6, 7, 8]
            execution: {{n_cycles: 2, experiment_order: shuffle, shuffle_seed: {seed}}}
            """,
            name=name,
        )
        return [(c.config_id, k) for c, k in study.run_order()]

    assert order(7, "a.yaml") == order(7, "b.yaml")
    assert order(7, "a.yaml") != order(8, "c.yaml")


@pytest.mark.parametrize(
    ("n_cycles", "names"),
    [
        (1, ["c0"]),
        (3, ["c0", "c1", "c2"]),
        (10, [f"c{k}" for k in range(10)]),
        (11, [f"c{k:02d}" for k in range(11)]),
        (12, [f"c{k:02d}" for k in range(12)]),
        (100, [f"c{k:02d}" for k in range(100)]),
        (101, [f"c{k:03d}" for k in range(101)]),
    ],
)
def test_cycle_names_are_zero_padded_to_the_last_cycle(load, n_cycles, names):
    study = load(f"model: llem-tiny\nexecution: {{n_cycles: {n_cycles}}}\n")
    assert [study.cycle_name(k) for k in range(n_cycles)] == names
    if n_cycles == 12:
        assert names[0] == "c00" and names[-1] == "c11"


def test_an_id_template_works_for_skipped_cells_too(load):
    # A skipped cell has no validated config; the template must still find fields it leaves at their defaults.
    study = load(
        """
        model: llem-tiny
        id: "out{max_output_tokens}-p{decoding.top_p}-{engine}"
        sweep:
          decoding.top_p: [0.9, 1.0]
        """
    )
    assert ids_of(study) == ["out64-p0.9-transformers", "out64-p1.0-transformers"]
    assert [c.runnable for c in study.configurations] == [False, True]
