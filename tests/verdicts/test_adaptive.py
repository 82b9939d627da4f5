"""Which configurations adaptive cycles give another cycle, and which they stop, with why."""

from __future__ import annotations

import pytest

from pytest_llem.verdicts.adaptive import headline, needs, relative_half_width
from pytest_llem.verdicts.statistics import GroupSummary, summarise

TIGHT = [10.0, 10.1, 9.9, 10.0]  # +-1.3 % (Student t, n = 4)
WIDE = [10.0, 13.0, 8.0]  # +-60 % (n = 3)


def group(config_id: str, values: list[float | None], metric: str = "mj_per_tok_adjusted") -> GroupSummary:
    return GroupSummary(
        key={"config_id": config_id}, config_ids=[config_id], n_records=len(values), metrics={metric: summarise(values, metric)}
    )


def test_the_relative_half_width_is_half_the_interval_over_the_mean() -> None:
    summary = summarise(WIDE, "mj_per_tok_adjusted")
    assert summary.ci_low is not None and summary.ci_high is not None and summary.mean is not None
    assert relative_half_width(summary) == pytest.approx((summary.ci_high - summary.ci_low) / 2 / summary.mean)
    assert relative_half_width(summarise([3.0], "x")) is None  # one value: no interval


def test_a_wide_interval_gets_another_cycle_and_a_tight_one_none() -> None:
    found = needs([group("a", WIDE), group("b", TIGHT)], {"a": 3, "b": 4}, target_ci_pct=5, cap=10)
    assert [(n.config_id, n.more) for n in found] == [("a", True)]
    assert "interval +-" in found[0].reason and "> target 5 %" in found[0].reason and "n=3" in found[0].reason


def test_the_cap_stops_a_configuration_and_says_so() -> None:
    (need,) = needs([group("a", WIDE)], {"a": 3}, target_ci_pct=5, cap=3)
    assert not need.more and need.reason.startswith("cap of 3 cycles reached")


def test_the_headline_falls_back_to_the_raw_figure_without_an_idle_baseline() -> None:
    raw = group("a", WIDE, metric="mj_per_tok_total")
    raw.metrics["mj_per_tok_adjusted"] = summarise([None, None, None], "mj_per_tok_adjusted")
    chosen = headline(raw)
    assert chosen is not None and chosen.metric == "mj_per_tok_total"
    (need,) = needs([raw], {"a": 3}, target_ci_pct=5, cap=10)
    assert need.more and need.reason.startswith("mj_per_tok_total:")


def test_no_energy_at_all_stops_instead_of_running_to_the_cap() -> None:
    (need,) = needs([group("a", [None, None], metric="mj_per_tok_total")], {"a": 2}, target_ci_pct=5, cap=10)
    assert not need.more and "no headline figure" in need.reason


def test_a_configuration_with_a_failed_cell_gets_no_more_cycles() -> None:
    (need,) = needs([group("a", WIDE)], {"a": 3}, target_ci_pct=5, cap=10, failed=["a"])
    assert not need.more and "failed" in need.reason


def test_an_inconclusive_gate_verdict_asks_for_cycles_without_an_interval_target() -> None:
    found = needs(
        [group("a", TIGHT), group("b", TIGHT)], {"a": 4, "b": 4}, target_ci_pct=None, cap=8,
        inconclusive={"b": "mj_per_tok_adjusted.median worse by more than 5%"},
    )  # fmt: skip
    assert [(n.config_id, n.more) for n in found] == [("b", True)]
    assert "regression gate inconclusive (mj_per_tok_adjusted.median worse by more than 5%)" in found[0].reason


def test_needs_keep_the_order_of_the_study() -> None:
    cycles = {"z": 3, "a": 3, "m": 3}
    found = needs([group(c, WIDE) for c in ("a", "m", "z")], cycles, target_ci_pct=1, cap=10)
    assert [n.config_id for n in found] == ["z", "a", "m"]
