"""Hostile numbers and names reaching the verdicts: limits, rules, stored baselines, cache keys.

Each case is a piece of input a user (or a hand-edited, truncated or corrupt file) can give;
each must end in one clear message or a failed verdict, never a silent pass or a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest

from pytest_llem.errors import BaselineUnreadable, LimitSyntaxError, ResultsError
from pytest_llem.verdicts import stored
from pytest_llem.verdicts.compare import judge, parse_rule
from pytest_llem.verdicts.gate import CACHE_PREFIX, GateOptions, cache_key, run_gate
from pytest_llem.verdicts.limits import Limit, breaches, parse_cli_limit
from tests.verdicts.test_gate_decision import ENERGY_5, finalized, record, spread

NOT_NUMBERS = {
    "two-points": "1.2.3",
    "double-point": "1..5",
    "nan": "nan",
    "NaN-capitals": "NaN",
    "inf": "inf",
    "minus-inf": "-inf",
    "infinity": "Infinity",
    "overflows-to-inf": "1e999",
    "empty": "",
    "lone-point": ".",
    "lone-exponent": "e5",
    "word": "fast",
    "hex": "0x10",
    "underscore": "1_000",
    "space-inside": "1 0",
}


# ----------------------------------------------------------------------------- --llem-limit


@pytest.mark.parametrize("value", list(NOT_NUMBERS.values()), ids=list(NOT_NUMBERS))
def test_a_limit_that_is_not_a_finite_number_is_refused(value: str) -> None:
    text = f"mj_per_tok_adjusted.max:{value}"
    with pytest.raises(LimitSyntaxError) as caught:
        parse_cli_limit(text, "--llem-limit")
    message = str(caught.value)
    assert message.startswith(f"--llem-limit {text!r}: ")
    assert "finite number" in message and "e.g. mj_per_tok_adjusted.max:50" in message


@pytest.mark.parametrize(
    ("text", "bound", "value"),
    [
        ("mj_per_tok_adjusted.max:50", "max", 50.0),
        ("avg_tokens_per_second.min:1e3", "min", 1000.0),
        ("request_latency_s.max.max:.5", "max", 0.5),
        ("ttft_s.p95.MAX:+2.", "max", 2.0),
        ("total_energy_j.min:-1.5E-2", "min", -0.015),
        ("mj_per_tok_adjusted.max: 50 ", "max", 50.0),
    ],
    ids=["plain", "exponent", "metric-named-max", "upper-case-bound", "negative-exponent", "blanks-around"],
)
def test_well_formed_limits_still_parse(text: str, bound: str, value: float) -> None:
    limit = parse_cli_limit(text)
    assert (limit.bound, limit.value) == (bound, value)


# ----------------------------------------------------------------------------- --llem-compare-fail


RULE_NOT_NUMBERS = {
    **{name: f"median:{value}" for name, value in NOT_NUMBERS.items()},
    "double-point-percent": "median:1..5%",
    "minus-inf-percent": "mj_per_tok_adjusted.median:-inf%",
    "nan-percent": "median:nan%",
    "overflow-percent": "median:1e999%",
    "percent-alone": "median:%",
    "two-percents": "median:5%%",
    "two-signs": "median:--5",
    "plus-minus-then-minus": "median:\u00b1-5%",
}


@pytest.mark.parametrize("text", list(RULE_NOT_NUMBERS.values()), ids=list(RULE_NOT_NUMBERS))
def test_a_rule_whose_tolerance_is_not_a_finite_number_is_refused(text: str) -> None:
    with pytest.raises(LimitSyntaxError) as caught:
        parse_rule(text)
    message = str(caught.value)
    assert message.startswith(f"--llem-compare-fail {text!r}: ")
    assert "finite number" in message and "e.g. mj_per_tok_adjusted.median:5%" in message


@pytest.mark.parametrize(
    ("text", "threshold", "relative"),
    [
        ("median:5%", 5.0, True),
        ("avg_tokens_per_second.mean:-2.5", 2.5, False),
        ("max:\u00b11e1%", 10.0, True),
        ("min:0", 0.0, False),
    ],
    ids=["percent", "signed-absolute", "plus-minus-exponent", "zero"],
)
def test_well_formed_rules_still_parse(text: str, threshold: float, relative: bool) -> None:
    rule = parse_rule(text)
    assert (rule.threshold, rule.relative) == (threshold, relative)


# ----------------------------------------------------------------------------- judging a limit


MAX_50 = Limit("mj_per_tok_adjusted", "max", 50.0, "s.llem.yaml:3")
MIN_10 = Limit("avg_tokens_per_second", "min", 10.0, "--llem-limit")


@pytest.mark.parametrize(
    "figure",
    [math.nan, math.inf, -math.inf, "12", True, [1.0]],
    ids=["nan", "inf", "minus-inf", "string", "bool", "list"],
)
@pytest.mark.parametrize("limit", [MAX_50, MIN_10], ids=["max", "min"])
def test_a_figure_that_is_not_a_finite_number_breaks_every_limit(figure: Any, limit: Limit) -> None:
    (found,) = breaches({limit.metric: figure}, [limit])
    assert "not a finite number" in found and limit.source in found and limit.describe() in found


@pytest.mark.parametrize("limit", [MAX_50, MIN_10], ids=["max", "min"])
def test_a_missing_figure_still_breaks_a_limit_and_says_why(limit: Limit) -> None:
    (found,) = breaches({limit.metric: None}, [limit])
    assert "not measured" in found and limit.source in found


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "minus-inf"])
@pytest.mark.parametrize("bound", ["min", "max"])
def test_a_limit_that_is_not_finite_is_never_met(value: float, bound: str) -> None:
    # An ``expect:`` bound is parsed by the study grammar; whatever it lets through, judging must not pass it.
    limit = Limit("mj_per_tok_adjusted", bound, value, "s.llem.yaml:7")  # type: ignore[arg-type]
    (found,) = breaches({"mj_per_tok_adjusted": 10.0}, [limit])
    assert "limit is not a finite number" in found and "s.llem.yaml:7" in found


def test_finite_figures_are_judged_as_before() -> None:
    assert breaches({"mj_per_tok_adjusted": 50.0, "avg_tokens_per_second": 10}, [MAX_50, MIN_10]) == []
    (found,) = breaches({"mj_per_tok_adjusted": 50.5}, [MAX_50])
    assert found.startswith("mj_per_tok_adjusted = 50.5, breaks mj_per_tok_adjusted <= 50")


# ----------------------------------------------------------------------------- judging a rule


@pytest.mark.parametrize("current", [[math.nan, 10.0, 10.0], [math.inf, 10.0, 10.0]], ids=["nan", "inf"])
def test_a_current_figure_that_is_not_finite_against_a_baseline_fails(current: list[float]) -> None:
    verdict = judge("c", ENERGY_5, [10.0, 10.1, 9.9], current)
    assert verdict.status == "missing" and "non-finite" in (verdict.reason or "")


# ----------------------------------------------------------------------------- stored baselines


def _baseline_path(tmp_path: Path) -> Path:
    """Where the gate looks for study ``s`` of the CPU records below."""
    return stored.baseline_file(tmp_path / "baselines", stored.fingerprint([record("a", 0, 1.0)]), "s")


def _good_baseline() -> dict[str, Any]:
    return {
        "format": 1, "study_name": "s", "fingerprint": "cpu-x", "software": {},
        "configs": {"a": {"mj_per_tok_adjusted": [10.0, 10.1, 9.9], "measurement_config_hash": "h"}},
    }  # fmt: skip


def _with(**changes: Any) -> str:
    data = _good_baseline()
    data.update(changes)
    return json.dumps(data)


def _with_values(values: Any) -> str:
    data = _good_baseline()
    data["configs"]["a"]["mj_per_tok_adjusted"] = values
    return json.dumps(data)


CORRUPT_BASELINES: dict[str, tuple[str | bytes, str]] = {
    # id: (file content, what the message must name besides the file)
    "empty-file": ("", "empty"),
    "truncated": (_with()[:-20], "not valid JSON"),
    "not-utf8": (b"\xff\xfe{\x00", "not valid JSON"),
    "a-list": ("[1, 2, 3]", "a JSON object"),
    "a-number": ("3", "a JSON object"),
    "null": ("null", "a JSON object"),
    "no-configs": (json.dumps({"format": 1, "software": {}}), "configs"),
    "configs-a-list": (_with(configs=[1, 2]), "configs"),
    "config-a-number": (_with(configs={"a": 5}), "configs.a"),
    "values-a-string": (_with_values("fast"), "configs.a.mj_per_tok_adjusted"),
    "values-a-number": (_with_values(10.0), "configs.a.mj_per_tok_adjusted"),
    "values-empty": (_with_values([]), "configs.a.mj_per_tok_adjusted"),
    "values-null": (_with_values(None), "configs.a.mj_per_tok_adjusted"),
    "value-nan": (_with_values([10.0, math.nan, 9.9]), "configs.a.mj_per_tok_adjusted[1]"),
    "value-inf": (_with_values([10.0, 10.1, math.inf]), "configs.a.mj_per_tok_adjusted[2]"),
    "value-overflow": (_with_values([10.0, 10.1, 9.9]).replace("9.9", "1e999"), "configs.a.mj_per_tok_adjusted[2]"),
    "value-string": (_with_values([10.0, "10.1", 9.9]), "configs.a.mj_per_tok_adjusted[1]"),
    "value-bool": (_with_values([10.0, True, 9.9]), "configs.a.mj_per_tok_adjusted[1]"),
    "value-null": (_with_values([10.0, None, 9.9]), "configs.a.mj_per_tok_adjusted[1]"),
    "hash-a-number": (
        _with(configs={"a": {"mj_per_tok_adjusted": [1.0, 1.0], "measurement_config_hash": 7}}),
        "measurement_config_hash",
    ),
    "software-a-list": (_with(software=["torch"]), "software"),
    "newer-format": (_with(format=99), "format"),
}


@pytest.mark.parametrize(("content", "expected"), list(CORRUPT_BASELINES.values()), ids=list(CORRUPT_BASELINES))
def test_load_names_the_file_and_what_is_wrong(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = _baseline_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BaselineUnreadable) as caught:
        stored.load(tmp_path / "baselines", path.parent.name, "s")
    assert isinstance(caught.value, ResultsError)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "Traceback" not in message


@pytest.mark.parametrize("content", [c for c, _ in CORRUPT_BASELINES.values()], ids=list(CORRUPT_BASELINES))
@pytest.mark.parametrize("required", [False, True], ids=["default", "baseline-required"])
def test_a_corrupt_baseline_fails_the_session_with_one_clear_line(tmp_path: Path, content: str | bytes, required: bool) -> None:
    path = _baseline_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    options = GateOptions(baseline_root=tmp_path / "baselines", required=required)
    current = [record("a", k, v) for k, v in enumerate(spread(10.0, 0.01, 3))]
    failures, lines = run_gate(options, [finalized(tmp_path, current)], [ENERGY_5])
    assert failures == 1
    assert any(str(path) in line and "unusable" in line for line in lines)
    assert any("REFUSED" in line for line in lines)
    assert not any("PASS" in line for line in lines)


def test_a_corrupt_baseline_of_other_hardware_fails_too(tmp_path: Path) -> None:
    other = tmp_path / "baselines" / "1x-Fake_GPU-700W" / "s.json"
    other.parent.mkdir(parents=True)
    other.write_text(_with_values([10.0, math.nan]))
    options = GateOptions(baseline_root=tmp_path / "baselines", any_hardware=True)
    current = [record("a", k, v) for k, v in enumerate(spread(10.0, 0.01, 3))]
    failures, lines = run_gate(options, [finalized(tmp_path, current)], [ENERGY_5])
    assert failures == 1 and any(str(other) in line and "[1]" in line for line in lines)


def test_a_well_formed_baseline_still_judges(tmp_path: Path) -> None:
    path = _baseline_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(_with())
    current = [record("a", k, v) for k, v in enumerate([10.0, 10.1, 9.9])]
    failures, lines = run_gate(GateOptions(baseline_root=tmp_path / "baselines"), [finalized(tmp_path, current)], [ENERGY_5])
    assert failures == 0 and any(line.endswith("PASS") for line in lines)


def test_updating_replaces_a_corrupt_baseline(tmp_path: Path) -> None:
    path = _baseline_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{")
    current = [record("a", k, v) for k, v in enumerate([10.0, 10.1, 9.9])]
    run_gate(GateOptions(baseline_root=tmp_path / "baselines", update=True), [finalized(tmp_path, current)], [])
    data, note = stored.load(tmp_path / "baselines", path.parent.name, "s")
    assert note is None and data is not None and data["configs"]["a"]["mj_per_tok_adjusted"] == [10.0, 10.1, 9.9]


# ----------------------------------------------------------------------------- names that become paths

TRAVERSALS = {
    "dot-dot": "..",
    "dot": ".",
    "dot-dot-slash": "../x",
    "deep": "../../../../../escape",
    "absolute": "/abs",
    "absolute-etc": "/etc/passwd",
    "inside-then-out": "a/../../b",
    "backslashes": "\\..\\",
    "windows-drive": "C:\\Windows\\x",
    "nul": "a\x00b",
    "nul-dot-dot": "\x00/../x",
    "empty": "",
    "slashes-only": "///",
    "trailing-dot-dot": "x/..",
    "three-dots": "...",
    "newline": "a\n../b",
}


def _stays_inside(key: str) -> None:
    for pure in (PurePosixPath(key), PureWindowsPath(key)):
        assert not pure.is_absolute() and not pure.drive
        assert ".." not in pure.parts and "." not in pure.parts
    assert "\x00" not in key and "\\" not in key and "\n" not in key


@pytest.mark.parametrize("name", list(TRAVERSALS.values()), ids=list(TRAVERSALS))
def test_a_cache_key_from_a_study_name_cannot_leave_its_namespace(name: str, tmp_path: Path) -> None:
    key = cache_key(name)
    assert key.startswith(CACHE_PREFIX) and len(key) > len(CACHE_PREFIX)
    tail = key.removeprefix(CACHE_PREFIX)
    _stays_inside(tail)
    assert "/" not in tail  # one entry, not a tree of them
    values = tmp_path / "v"
    assert (values / key).resolve().is_relative_to((values / CACHE_PREFIX).resolve())


@pytest.mark.parametrize("name", list(TRAVERSALS.values()), ids=list(TRAVERSALS))
def test_a_baseline_file_from_hostile_names_stays_in_the_baseline_dir(name: str, tmp_path: Path) -> None:
    gpu = {"name": name, "power_limit_w": 700.0}
    finger = stored.fingerprint([{"gpu_state_start": [gpu]}])
    path = stored.baseline_file(tmp_path, finger, name)
    _stays_inside(str(path.relative_to(tmp_path)))
    assert path.resolve().parent.parent == tmp_path.resolve()
    # even a fingerprint not made by fingerprint() (a caller's string) is made safe
    raw = stored.baseline_file(tmp_path, name, name)
    assert raw.resolve().parent.parent == tmp_path.resolve()


@pytest.mark.parametrize(
    ("name", "key"),
    [("latency", "llem/last/latency"), ("Qwen/Qwen2.5-0.5B sweep", "llem/last/Qwen--Qwen2.5-0.5B_sweep")],
    ids=["plain", "model-like"],
)
def test_cache_keys_stay_readable(name: str, key: str) -> None:
    assert cache_key(name) == key
