"""Hostile study files: every one is refused with a StudyError naming the file, never a hang or a traceback.

The cases come from a red-team of the reader and the grammar (issue 16). Each is a parametrized
case with an id, grouped by what it attacks:

* ``READER_CASES``: the YAML reader (alias bombs, deep nesting, encodings, size), run on both
  parsers (libyaml's and PyYAML's pure-Python one);
* ``DUPLICATE_KEY_CASES``: a key written twice, refused at its second occurrence;
* ``STRICT_TYPE_CASES``: a bool or a string where the grammar wants a number or a flag, for every
  numeric and boolean field of the grammar (generated from the models, so none is forgotten);
* ``NON_FINITE_CASES`` and ``OUT_OF_BOUNDS_CASES``: NaN, infinities and numbers past each
  field's bound, for every numeric field;
* ``EMPTY_VALUE_CASES``: an empty list where a value is expected;
* one pytester run: ``pytest bomb.llem.yaml`` fails collection with the message, promptly.
"""

from __future__ import annotations

import itertools
import time
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pytest_llem.config.base import MAX_PROMPTS
from pytest_llem.errors import StudyError
from pytest_llem.study import loader
from pytest_llem.study.loader import MAX_DEPTH, MAX_STUDY_BYTES, MAX_VALUES, load_study_yaml
from pytest_llem.study.schema import StudyDocument
from pytest_llem.study.study import load_study
from tests.plugin.conftest import write_study
from tests.timing import scaled


def alias_bomb(levels: int = 9, target: str = "") -> str:
    """The red-team's bomb: nine levels of ``x-`` anchors, each nine aliases of the one before.

    About 400 bytes that expand to 9**9 (387 million) values; ``target`` is a key that uses the
    last level, so the expansion is not only held by an anchor.
    """
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    lines = ["model: llem-tiny", f"x-{names[0]}: &{names[0]} [x,x,x,x,x,x,x,x,x]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"x-{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    if target:
        lines.append(f"{target}: *{names[-1]}")
    return "\n".join(lines) + "\n"


def merge_bomb() -> str:
    """Mappings merged into mappings: each ``<<`` copies every key of the one before, nine times over."""
    lines = ["model: llem-tiny", "x-m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}"]
    for level in range(1, 9):
        merged = ", ".join(f"*m{level - 1}" for _ in range(9))
        entries = ", ".join(f"e{i}: {{<<: [{merged}]}}" for i in range(9))
        lines.append(f"x-m{level}: &m{level} {{{entries}}}")
    return "\n".join(lines) + "\n"


def alias_chain(length: int) -> str:
    """Each anchor a list holding the one before: shallow as written, ``length`` deep as a value."""
    lines = ["model: llem-tiny", "x-0: &a0 [x]"]
    lines += [f"x-{i}: &a{i} [*a{i - 1}]" for i in range(1, length)]
    return "\n".join(lines) + "\n"


def merge_chain(length: int) -> str:
    lines = ["model: llem-tiny", "x-0: &m0 {k0: 0}"]
    lines += [f"x-{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in range(1, length)]
    return "\n".join(lines) + "\n"


def nested_block_mappings(depth: int) -> str:
    return "model: llem-tiny\nx-deep:\n" + "".join("  " * (level + 1) + f"k{level}:\n" for level in range(depth)) + "  " * (depth + 1) + "leaf: 1\n"


#: (id, file content, what the one problem must say). Content is text, or bytes where the bytes matter.
READER_CASES: list[tuple[str, str | bytes, str]] = [
    ("alias-bomb-9-levels", alias_bomb(), f"holds more than {MAX_VALUES:,} values with its aliases expanded"),
    ("alias-bomb-as-prompts", alias_bomb(target="prompts"), f"holds more than {MAX_VALUES:,} values with its aliases expanded"),
    ("alias-bomb-in-sweep", alias_bomb(target="sweep"), "(an alias bomb?)"),
    ("merge-key-bomb", merge_bomb(), f"holds more than {MAX_VALUES:,} values with its aliases expanded"),
    ("alias-chain-deeper-than-bound", alias_chain(MAX_DEPTH + 5), f"nested more than {MAX_DEPTH} deep with its aliases expanded"),
    ("alias-chain-5000", alias_chain(5000), f"nested more than {MAX_DEPTH} deep with its aliases expanded"),
    ("merge-chain-5000", merge_chain(5000), f"nested more than {MAX_DEPTH} deep with its aliases expanded"),
    ("recursive-alias-list", "model: llem-tiny\nx-a: &a [1, *a]\n", "a recursive alias has no end"),
    ("recursive-alias-mapping", "model: llem-tiny\nx-a: &a {k: *a}\n", "a recursive alias has no end"),
    ("recursive-merge", "model: llem-tiny\nx-a: &a {k: [{<<: *a}]}\n", "a recursive alias has no end"),
    ("nested-lists-20000", "model: llem-tiny\nx-deep: " + "[" * 20_000 + "]" * 20_000 + "\n", f"nested more than {MAX_DEPTH} deep"),
    ("nested-flow-mappings-20000", "model: llem-tiny\nx-deep: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n", f"nested more than {MAX_DEPTH} deep"),
    ("nested-block-mappings-200", nested_block_mappings(200), f"nested more than {MAX_DEPTH} deep"),
    ("unclosed-lists-20000", "model: llem-tiny\nx-deep: " + "[" * 20_000 + "\n", f"nested more than {MAX_DEPTH} deep"),
    ("latin-1-bytes", "model: llem-tiny\nprompts: [caf\xe9]\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 (column 14, byte 30"),
    ("invalid-utf8-byte", b"model: llem-tiny\n\xff\xfe\n", "not UTF-8 text: byte 0xff (column 1, byte 17"),
    ("utf-16-file", "model: llem-tiny\n".encode("utf-16"), "not UTF-8 text: byte 0xff (column 1, byte 0"),
    ("control-character", "model: llem-tiny\nprompts: [a\x01b]\n", "invalid YAML: unacceptable character #x0001"),
    ("nul-byte", "model: llem-tiny\nprompts: [a\x00b]\n", "invalid YAML: unacceptable character #x0000"),
    ("over-10-MB", "model: llem-tiny\nx-pad: '" + "a" * MAX_STUDY_BYTES + "'\n", f"larger than 10 MB ({MAX_STUDY_BYTES:,} bytes)"),
]

#: The line each reader case's problem names (None: the file as a whole).
READER_LINES: dict[str, int | None] = {
    "alias-bomb-9-levels": 8, "alias-bomb-as-prompts": 8, "alias-bomb-in-sweep": 8, "merge-key-bomb": 5,
    "alias-chain-deeper-than-bound": 2 + MAX_DEPTH, "alias-chain-5000": 2 + MAX_DEPTH, "merge-chain-5000": 2 + MAX_DEPTH,
    "recursive-alias-list": 2, "recursive-alias-mapping": 2, "recursive-merge": 2, "nested-lists-20000": 2,
    "nested-flow-mappings-20000": 2, "nested-block-mappings-200": 2 + MAX_DEPTH, "unclosed-lists-20000": 2,
    "latin-1-bytes": 2, "invalid-utf8-byte": 2, "utf-16-file": 1, "control-character": 2, "nul-byte": 2, "over-10-MB": None,
}  # fmt: skip

PARSERS = {"libyaml": loader.StudyLoader, "pure-python": loader.PyStudyLoader}


@pytest.fixture(params=sorted(PARSERS))
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the case on each YAML parser the loader may use (libyaml where installed)."""
    name: str = request.param
    if name == "libyaml" and PARSERS[name] is loader.PyStudyLoader:
        pytest.skip("PyYAML here is built without libyaml")
    monkeypatch.setattr(loader, "StudyLoader", PARSERS[name])
    return name


def refused(path: Path) -> str:
    """The one problem of the StudyError that loading ``path`` must raise."""
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    assert excinfo.value.path == str(path)
    assert excinfo.value.__cause__ is None
    assert "Traceback" not in str(excinfo.value)
    (problem,) = excinfo.value.problems
    return problem


def write_raw(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "hostile.llem.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize(("case", "content", "expected"), READER_CASES, ids=[c[0] for c in READER_CASES])
def test_hostile_documents_are_refused_by_the_reader(tmp_path, parser, case, content, expected):
    path = write_raw(tmp_path, content)
    problem = refused(path)
    line = READER_LINES[case]
    assert problem.startswith(f"{path}:{line}: " if line is not None else f"{path}: "), problem
    assert expected in problem


def test_the_alias_bomb_is_small(tmp_path):
    """The red-team's figure: a few hundred bytes, 387 million values."""
    assert len(alias_bomb().encode()) < 420


def test_a_study_device_is_read_no_further_than_the_bound(tmp_path):
    """A study file that is a link to an endless device is refused at the size bound, not read forever."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    path = tmp_path / "zero.llem.yaml"
    path.symlink_to("/dev/zero")
    assert refused(path).startswith(f"{path}: the file is larger than 10 MB")


# --------------------------------------------------------------------------- what must keep working


def test_anchors_used_many_times_within_the_bounds_load(write):
    """Reuse through ``x-`` anchors is what the README advertises: heavy but finite reuse loads."""
    prompts = ", ".join(f"prompt number {i}" for i in range(2000))
    lines = [
        "model: llem-tiny",
        f"x-prompts: &prompts [{prompts}]",
        "x-base: &base {prompts: *prompts, max_output_tokens: 8}",
        "experiments:",
        *(f"  - {{<<: *base, id: e{i}, decoding.seed: {i}}}" for i in range(100)),
    ]
    path = write("\n".join(lines) + "\n")
    study = load_study(path)
    assert len(study.configurations) == 100
    assert all(c.config is not None and len(c.config.prompts or []) == 2000 for c in study.configurations)


def test_a_5_MB_study_loads_whole(tmp_path):
    """A legitimately large file (70,000 inline prompts, 5 MB) is under every bound and loads whole."""
    body = "".join(f'  - "prompt {i}: {"word " * 12}"\n' for i in range(70_000))
    path = tmp_path / "large.llem.yaml"
    path.write_text("model: llem-tiny\nprompts:\n" + body, encoding="utf-8")
    assert 5 * 2**20 < path.stat().st_size < MAX_STUDY_BYTES
    data, lines = load_study_yaml(path)
    assert len(data["prompts"]) == 70_000
    assert lines.line_of(("prompts", 69_999)) == 70_002


def test_lines_under_an_alias_are_the_anchors(write):
    """Two aliases of one mapping: both paths find the anchor's lines (the map is per node, not per path)."""
    path = write(
        """
        x-d: &d
          temperature: 0.5
          top_p: 0.9
        model: llem-tiny
        decoding: *d
        experiments:
          - {id: a, decoding: *d}
        """
    )
    _, lines = load_study_yaml(path)
    assert lines.line_of(("decoding", "top_p")) == 3
    assert lines.line_of(("experiments", 0, "decoding", "top_p")) == 3
    assert lines.line_of(("decoding",)) == 5
    assert lines.exact(("decoding", "nope")) is None
    assert lines.line_of(("decoding", "nope")) == 5


# --------------------------------------------------------------------------- duplicate keys

#: (id, file, line of the second occurrence, dotted key, line of the first).
DUPLICATE_KEY_CASES = [
    ("top-level", "model: llem-tiny\nprecision: fp16\nmodel: other\n", 3, "model", 1),
    ("nested-section", "model: llem-tiny\ndecoding:\n  seed: 1\n  temperature: 0.5\n  seed: 2\n", 5, "decoding.seed", 3),
    ("flow-mapping", "model: llem-tiny\ntransformers: {batch_size: 1, batch_size: 2}\n", 2, "transformers.batch_size", 2),
    ("sweep-axis", "model: llem-tiny\nsweep:\n  precision: [fp16]\n  precision: [bf16]\n", 4, "sweep.precision", 3),
    ("experiments-entry", "model: llem-tiny\nexperiments:\n  - id: a\n    precision: fp16\n    precision: bf16\n", 5, "experiments[0].precision", 4),
    ("expect-metric", "model: llem-tiny\nexpect:\n  ttft_s.p95: {max: 1}\n  ttft_s.p95: {max: 2}\n", 4, "expect.ttft_s.p95", 3),
    ("anchor-holder", "model: llem-tiny\nx-notes: {a: 1, b: 2, a: 3}\n", 2, "x-notes.a", 2),
    ("quoted-and-plain", "model: llem-tiny\n'precision': fp16\nprecision: bf16\n", 3, "precision", 2),
    ("inside-an-anchor-merged-elsewhere", "x-d: &d\n  seed: 1\n  seed: 2\nmodel: llem-tiny\ndecoding:\n  <<: *d\n", 3, "x-d.seed", 2),
    ("dotted-then-nested", "model: llem-tiny\ntransformers.batch_size: 4\ntransformers: {batch_size: 8}\n", 3, "transformers.batch_size", 2),
    ("nested-then-dotted", "model: llem-tiny\ntransformers:\n  batch_size: 8\ntransformers.batch_size: 4\n", 4, "transformers.batch_size", 2),
    ("dotted-twice-deep", "model: llem-tiny\nmeasurement.warmup.window: 3\nmeasurement: {warmup: {window: 4}}\n", 3, "measurement.warmup.window", 2),
    ("section-then-dotted-into-it", "model: llem-tiny\ndecoding: 3\ndecoding.seed: 4\n", 3, "decoding.seed", 2),
    ("dotted-in-experiments-entry", "model: llem-tiny\nexperiments:\n  - id: a\n    decoding.seed: 1\n    decoding: {seed: 2}\n", 5, "experiments[0].decoding.seed", 4),
]


@pytest.mark.parametrize(("text", "line", "key", "first"), [c[1:] for c in DUPLICATE_KEY_CASES], ids=[c[0] for c in DUPLICATE_KEY_CASES])
def test_a_duplicate_key_is_refused_at_its_second_occurrence(write, text, line, key, first):
    path = write(text)
    problem = refused(path)
    assert problem.startswith(f"{path}:{line}: {key}: duplicate key"), problem
    assert f"already set on line {first}" in problem


def test_every_duplicate_of_a_file_is_reported_at_once(write):
    path = write("model: a\nmodel: b\ndecoding: {seed: 1, seed: 2}\n")
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    assert [p.split(": duplicate")[0] for p in excinfo.value.problems] == [f"{path}:2: model", f"{path}:3: decoding.seed"]


@pytest.mark.parametrize(
    "text",
    [
        "x-d: &d {seed: 1, temperature: 0.5}\nmodel: llem-tiny\ndecoding:\n  <<: *d\n  seed: 2\n",
        "x-a: &a {seed: 1}\nx-b: &b {seed: 2}\nmodel: llem-tiny\ndecoding:\n  <<: [*a, *b]\n  seed: 3\n",
        "model: llem-tiny\ndecoding: {seed: 1}\nexperiments:\n  - {id: a, decoding: {seed: 2}}\n",
        "model: llem-tiny\ntransformers: {batch_size: 1}\ntransformers.use_cache: false\n",
        "model: llem-tiny\nexpect: {ttft_s.p95: {max: 1}, ttft_s.p99: {max: 2}}\n",
    ],
    ids=["merge-then-override", "two-merges-then-override", "same-key-in-different-mappings", "dotted-beside-nested-sibling", "metric-names-with-dots"],
)
def test_overrides_and_keys_of_other_mappings_are_not_duplicates(load, text):
    study = load(text)
    assert study.configurations[0].config is not None


# --------------------------------------------------------------------------- strict types, finite bounds


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, set[type]]]:
    """Every scalar field of the grammar with its types (int, float, bool), by dotted path."""
    out: list[tuple[str, set[type]]] = []
    for name, info in model.model_fields.items():
        union = typing.get_origin(info.annotation) in (typing.Union, types.UnionType)
        args = set(typing.get_args(info.annotation)) if union else {info.annotation}
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            out += _fields(nested[0], f"{prefix}{name}.")
        elif scalars := {a for a in args if a in (int, float, bool)}:
            out.append((f"{prefix}{name}", scalars))
    return out


#: Every numeric and boolean field a study may set, and the bounds of an ``expect:`` limit.
GRAMMAR_FIELDS = _fields(StudyDocument) + [(f"expect.avg_tokens_per_second.{bound}", {float}) for bound in ("min", "max")]


def nested(path: str, value: str) -> str:
    """``a.b.c`` = value as nested flow mappings on one line (line 2 of the study)."""
    parts = path.split(".")
    if parts[0] == "expect":  # a metric name holds a dot of its own
        parts = ["expect", ".".join(parts[1:-1]), parts[-1]]
    text = value
    for part in reversed(parts):
        text = f"{{{part}: {text}}}"
    return text[1:-1]


def _strict_cases() -> list[Any]:
    cases = []
    for path, kinds in GRAMMAR_FIELDS:
        if kinds & {int, float}:
            expected = "a valid integer" if int in kinds else "a valid number"
            cases += [pytest.param(path, "true", expected, id=f"{path}=true"), pytest.param(path, "'8'", expected, id=f"{path}='8'")]
        if bool in kinds:
            cases += [
                pytest.param(path, "'on'", "a valid boolean", id=f"{path}='on'"),
                pytest.param(path, "1", "a valid boolean", id=f"{path}=1"),
                pytest.param(path, "'true'", "a valid boolean", id=f"{path}='true'"),
            ]
    return cases


STRICT_TYPE_CASES = _strict_cases()


@pytest.mark.parametrize(("path", "value", "expected"), STRICT_TYPE_CASES)
def test_no_bool_or_string_is_coerced_into_a_number_or_flag(write, path, value, expected):
    file = write(f"model: llem-tiny\n{nested(path, value)}\n")
    problem = refused(file)
    assert problem.startswith(f"{file}:2: {path}: Input should be {expected}"), problem


def test_floats_still_accept_ints(load):
    study = load("model: llem-tiny\ndecoding: {temperature: 1, top_p: 1}\nexecution: {experiment_gap_seconds: 0}\n")
    config = study.configurations[0].config
    assert config is not None and config.decoding.temperature == 1.0


def test_every_numeric_and_boolean_field_is_covered():
    """The generated cases reach the fields the red-team named, and all twenty float fields."""
    paths = {path for path, _ in GRAMMAR_FIELDS}
    assert {"max_output_tokens", "max_input_tokens", "ignore_eos", "dataset.n_prompts", "execution.experiment_gap_seconds"} <= paths
    assert sum(1 for _, kinds in GRAMMAR_FIELDS if float in kinds) == 20


FLOAT_FIELDS = [path for path, kinds in GRAMMAR_FIELDS if float in kinds]
NON_FINITE_CASES = [
    pytest.param(path, value, id=f"{path}={value}") for path in FLOAT_FIELDS for value in (".nan", ".inf", "-.inf")
]


@pytest.mark.parametrize(("path", "value"), NON_FINITE_CASES)
def test_nan_and_infinities_are_refused_in_every_float_field(write, path, value):
    file = write(f"model: llem-tiny\n{nested(path, value)}\n")
    problem = refused(file)
    assert problem.startswith(f"{file}:2: {path}: Input should be a finite number"), problem


def _upper_bound(path: str) -> float | None:
    model: Any = StudyDocument
    parts = path.split(".")
    if parts[0] == "expect":
        return None  # a limit is any finite number
    for part in parts[:-1]:
        model = next(a for a in (model.model_fields[part].annotation, *typing.get_args(model.model_fields[part].annotation)) if isinstance(a, type) and issubclass(a, BaseModel))
    for constraint in model.model_fields[parts[-1]].metadata:
        for attr in ("le", "lt"):
            if getattr(constraint, attr, None) is not None:
                return float(getattr(constraint, attr))
    return None


OUT_OF_BOUNDS_CASES = [
    pytest.param(path, "1e308" if float in kinds else "1000000000000", id=f"{path}-too-large")
    for path, kinds in GRAMMAR_FIELDS
    if kinds & {int, float} and not path.startswith("expect.")
]


@pytest.mark.parametrize(("path", "value"), OUT_OF_BOUNDS_CASES)
def test_every_number_has_a_finite_upper_bound_named_in_the_message(write, path, value):
    bound = _upper_bound(path)
    assert bound is not None, f"{path} has no upper bound"
    file = write(f"model: llem-tiny\n{nested(path, value)}\n")
    problem = refused(file)
    assert problem.startswith(f"{file}:2: {path}: Input should be less than"), problem
    assert f"{bound:g}" in problem or f"{int(bound)}" in problem


def test_a_trillion_prompts_per_pass_is_refused_with_the_bound(write):
    path = write("model: llem-tiny\ndataset: {n_prompts: 1000000000000}\n")
    assert refused(path) == f"{path}:2: dataset.n_prompts: Input should be less than or equal to {MAX_PROMPTS} (got 1000000000000)"


def test_more_inline_prompts_than_a_pass_may_hold_are_refused(write):
    path = write("model: llem-tiny\nprompts: [" + ", ".join(["p"] * (MAX_PROMPTS + 1)) + "]\n")
    problem = refused(path)
    assert problem.startswith(f"{path}:2: prompts: List should have at most {MAX_PROMPTS} items")


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("sweep:\n  measurement.min_window_seconds: [1, .inf]\n", 3, "measurement.min_window_seconds: Input should be a finite number"),
        ("sweep:\n  decoding.temperature: [0.5, .nan]\n", 3, "decoding.temperature: Input should be a finite number"),
        ("sweep:\n  max_output_tokens: [8, true]\n", 3, "max_output_tokens: Input should be a valid integer (got True)"),
        ("experiments:\n  - {id: a, dataset.n_prompts: 1e12}\n", 3, "dataset.n_prompts: Input should be a valid integer"),
        ("engine: vllm\nvllm: {engine_args: {swap_space: .nan}}\n", 3, "vllm.engine_args: swap_space is nan: expected a finite number"),
        ("engine: tensorrt\ntensorrt: {engine_args: {a: {b: [1, -.inf]}}}\n", 3, "tensorrt.engine_args: a.b[1] is -inf: expected a finite number"),
    ],
    ids=["sweep-window-inf", "sweep-temperature-nan", "sweep-bool-as-int", "experiments-float-as-int", "vllm-engine-args-nan", "tensorrt-engine-args-inf"],
)
def test_swept_explicit_and_passed_through_numbers_are_checked_too(write, text, line, expected):
    path = write("model: llem-tiny\n" + text)
    with pytest.raises(StudyError) as excinfo:
        load_study(path)
    assert any(p.startswith(f"{path}:{line}: ") and expected in p for p in excinfo.value.problems), excinfo.value.problems


# --------------------------------------------------------------------------- empty lists where a value is expected

EMPTY_VALUE_CASES = [
    pytest.param("engine: []", 2, "engine", id="engine-empty-list"),
    pytest.param("execution: []", 2, "execution", id="execution-empty-list"),
    pytest.param("engine: [[]]", 2, "engine: unknown engine []", id="engine-list-of-empty-list"),
    pytest.param("precision: []", 2, "precision: expected", id="precision-empty-list"),
    pytest.param("prompts: []", 2, "prompts: prompts must be a non-empty list", id="prompts-empty-list"),
    pytest.param("sweep:\n  precision: []", 3, "sweep.precision: expected a non-empty list of values", id="sweep-axis-empty"),
    pytest.param("sweep:\n  engine: []", 3, "sweep.engine: expected a non-empty list of values", id="sweep-engine-axis-empty"),
    pytest.param("sweep:\n  decoding: []", 3, "sweep.decoding: expected a non-empty list of values", id="sweep-group-empty"),
    pytest.param("sweep:\n  transformers.batch_size: [[]]", 3, "transformers.batch_size: Input should be a valid integer", id="sweep-value-empty-list"),
    pytest.param("experiments: [[]]", 2, "experiments[0]: expected a mapping", id="experiments-entry-empty-list"),
    pytest.param("experiments: [{engine: []}]", 2, "engine: expected", id="experiments-engine-empty-list"),
    pytest.param("transformers: []", 2, "transformers: Input should be a valid dictionary", id="section-empty-list"),
    pytest.param("expect: []", 2, "expect: Input should be a valid dictionary", id="expect-empty-list"),
]


@pytest.mark.parametrize(("text", "line", "expected"), EMPTY_VALUE_CASES)
def test_an_empty_list_where_a_value_is_expected_is_refused(write, text, line, expected):
    path = write(f"model: llem-tiny\n{text}\n")
    problem = refused(path)
    assert problem.startswith(f"{path}:{line}: ") and expected in problem, problem


def test_an_empty_model_list_is_refused(write):
    path = write("model: []\n")
    assert refused(path) == f"{path}:1: model: Input should be a valid string (got [])"


# --------------------------------------------------------------------------- through pytest


def test_pytest_on_an_alias_bomb_fails_collection_with_the_message(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """``pytest bomb.llem.yaml``: a clean collection error, promptly (it used to grow to 4.4 GB and hang)."""
    # Inside an xdist worker, the inner run would look like a worker too (see tests/plugin/conftest.py).
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    write_study(pytester.path, "bomb.llem.yaml", alias_bomb())
    started = time.monotonic()
    result = pytester.runpytest("-p", "no:cacheprovider", "bomb.llem.yaml")
    elapsed = time.monotonic() - started
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*bomb.llem.yaml:8: x-g: holds more than {MAX_VALUES:,} values with its aliases expanded*"])
    assert "Traceback" not in result.stdout.str()
    assert elapsed < scaled(60), f"collection took {elapsed:.0f} s"
