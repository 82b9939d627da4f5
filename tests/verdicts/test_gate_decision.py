"""The regression gate's decision: each defect the audit found, reproduced and pinned.

Values are deterministic lists (no random draws): each test states the situation it builds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import mannwhitneyu

from pytest_llem.results.loader import StudyResult
from pytest_llem.verdicts.compare import judge, parse_rule
from pytest_llem.verdicts.decision import holm, holm_adjusted, weigh
from pytest_llem.verdicts.finalize import FinalizedStudy
from pytest_llem.verdicts.gate import GateOptions, run_gate

ENERGY_5 = parse_rule("mj_per_tok_adjusted.median:5%")
TPS_5 = parse_rule("avg_tokens_per_second.median:5%")


def spread(centre: float, cv: float, n: int) -> list[float]:
    """n values around ``centre`` with sample CV close to ``cv`` (evenly spaced, symmetric)."""
    if n == 1:
        return [centre]
    offsets = [(i - (n - 1) / 2) for i in range(n)]
    scale = cv * centre / math.sqrt(sum(o * o for o in offsets) / (n - 1))
    return [centre + o * scale for o in offsets]


def test_three_against_three_can_fail_now() -> None:
    # The old rule (Mann-Whitney, one-sided) could not go below p = 0.05 at 3 vs 3.
    stored, current = spread(100.0, 0.01, 3), spread(130.0, 0.01, 3)
    assert mannwhitneyu(current, stored, alternative="greater").pvalue == pytest.approx(0.05)
    verdict = judge("c", ENERGY_5, stored, current)
    assert verdict.evidence is not None and verdict.evidence.p_value < 0.01
    assert holm([verdict.evidence.p_value]) == [True]


def test_no_change_at_all_passes_and_ties_are_exact() -> None:
    values = [50.0, 50.0, 50.0]
    verdict = judge("c", ENERGY_5, values, list(values))
    assert verdict.status == "pass"
    assert verdict.evidence is not None and verdict.evidence.p_value == 1.0
    worse = judge("c", ENERGY_5, values, [60.0, 60.0, 60.0])  # tied on each side, 20 % worse
    assert worse.evidence is not None and worse.evidence.p_value == 0.0


def test_inside_tolerance_with_noise_is_inconclusive_and_says_what_would_decide() -> None:
    verdict = judge("c", ENERGY_5, spread(100.0, 0.08, 3), spread(103.0, 0.08, 3))
    assert verdict.status == "inconclusive"
    assert verdict.evidence is not None and verdict.evidence.cycles_needed is not None
    assert verdict.evidence.cycles_needed > 3
    assert "cycles a side would decide" in verdict.line()


def test_throughput_down_is_worse() -> None:
    slower = judge("c", TPS_5, spread(1000.0, 0.01, 4), spread(800.0, 0.01, 4))
    faster = judge("c", TPS_5, spread(1000.0, 0.01, 4), spread(1200.0, 0.01, 4))
    assert slower.evidence is not None and slower.evidence.p_value < 0.001
    assert faster.status == "pass"


@pytest.mark.parametrize(
    ("stored", "current", "hashes", "status", "reason"),
    [
        (None, [1.0, 2.0], (None, None), "new", None),
        ([1.0, 1.1], [], (None, None), "missing", "no current figure"),
        ([1.0, 1.1], [1.0, 1.0], ("aaaa", "bbbb"), "unjudgeable", "configuration changed"),
        ([], [1.0, 1.0], (None, None), "unjudgeable", "holds no value"),
        ([float("nan"), 1.0], [1.0, 1.0], (None, None), "unjudgeable", "non-finite"),
        ([0.0, 0.0], [1.0, 1.0], (None, None), "unjudgeable", "values of 0"),
        ([1.0], [1.0, 1.1], (None, None), "unjudgeable", "too few cycles"),
    ],
)
def test_what_cannot_be_judged_says_why(
    stored: list[float] | None, current: list[float], hashes: tuple[str | None, str | None], status: str, reason: str | None
) -> None:
    verdict = judge("c", ENERGY_5, stored, current, stored_hash=hashes[0], current_hash=hashes[1])
    assert verdict.status == status
    if reason:
        assert reason in (verdict.reason or "") and reason in verdict.line()
    assert "%" not in verdict.line().split("(")[0]  # no percentage against nothing


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.001, 0.01, 0.02]) == [True, True, True]
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_a_zero_spread_decides_by_the_values() -> None:
    evidence = weigh([1.0, 1.0], [1.2, 1.2], worse_sign=1.0, tolerance=0.1)
    assert evidence.p_value == 0.0 and not evidence.within_tolerance


# ----------------------------------------------------------------------------- the session


def record(config_id: str, cycle: int, value: float | None, config_hash: str = "h") -> dict[str, Any]:
    return {
        "experiment_id": f"{config_id}::c{cycle}", "config_id": config_id, "cycle": cycle,
        "measurement_config_hash": config_hash, "mj_per_tok_adjusted": value, "gpu_state_start": [],
        "software_versions": {},
    }  # fmt: skip


def finalized(tmp_path: Path, records: list[dict[str, Any]]) -> FinalizedStudy:
    result = StudyResult(
        experiments=records, study_name="s", study_design_hash=None, measurement_protocol={"n_cycles": 3},
        result_files=[], summary={}, skipped_experiments=[], study_dir=tmp_path, manifest={"experiments": []},
    )  # fmt: skip
    return FinalizedStudy(result, [])


def store(tmp_path: Path, records: list[dict[str, Any]]) -> GateOptions:
    options = GateOptions(baseline_root=tmp_path / "baselines", update=True)
    run_gate(options, [finalized(tmp_path, records)], [])
    return GateOptions(baseline_root=tmp_path / "baselines")


def test_a_missing_current_figure_fails_the_session(tmp_path: Path) -> None:
    options = store(tmp_path, [record("a", k, v) for k, v in enumerate([10.0, 10.1, 9.9])])
    failures, lines = run_gate(options, [finalized(tmp_path, [record("a", k, None) for k in range(3)])], [ENERGY_5])
    assert failures == 1
    assert any("MISSING" in line for line in lines)


def test_a_changed_configuration_is_not_compared(tmp_path: Path) -> None:
    options = store(tmp_path, [record("a", k, v) for k, v in enumerate([10.0, 10.1, 9.9])])
    changed = [record("a", k, v, config_hash="other") for k, v in enumerate([20.0, 20.1, 19.9])]
    failures, lines = run_gate(options, [finalized(tmp_path, changed)], [ENERGY_5])
    assert failures == 0 and any("UNJUDGEABLE" in line and "configuration changed" in line for line in lines)
    strict = GateOptions(baseline_root=options.baseline_root, required=True)
    assert run_gate(strict, [finalized(tmp_path, changed)], [ENERGY_5])[0] == 1


def test_a_real_regression_among_many_configurations_fails_and_noise_does_not(tmp_path: Path) -> None:
    base = [record(f"c{i}", k, v) for i in range(8) for k, v in enumerate(spread(100.0, 0.02, 3))]
    options = store(tmp_path, base)
    same = [record(f"c{i}", k, v) for i in range(8) for k, v in enumerate(spread(101.0, 0.02, 3))]
    failures, lines = run_gate(options, [finalized(tmp_path, same)], [ENERGY_5])
    assert failures == 0 and not any("REGRESSED" in line for line in lines)
    worse = [r if r["config_id"] != "c3" else {**r, "mj_per_tok_adjusted": r["mj_per_tok_adjusted"] * 1.3} for r in same]
    failures, lines = run_gate(options, [finalized(tmp_path, worse)], [ENERGY_5])
    assert failures == 1
    assert lines[0] == "1 regression(s): c3"
    assert any(line.startswith("s: c3: mj_per_tok_adjusted.median") and line.endswith("REGRESSED") for line in lines)


def test_inconclusive_fails_only_when_asked(tmp_path: Path) -> None:
    options = store(tmp_path, [record("a", k, v) for k, v in enumerate(spread(100.0, 0.08, 3))])
    noisy = [record("a", k, v) for k, v in enumerate(spread(104.0, 0.08, 3))]
    failures, lines = run_gate(options, [finalized(tmp_path, noisy)], [ENERGY_5])
    assert failures == 0 and any("INCONCLUSIVE" in line for line in lines)
    strict = GateOptions(baseline_root=options.baseline_root, inconclusive="fail")
    assert run_gate(strict, [finalized(tmp_path, noisy)], [ENERGY_5])[0] == 1
