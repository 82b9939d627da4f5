"""report/pareto.py: frontiers judged on cycle medians, and candidates within their uncertainty kept."""

from __future__ import annotations

import pytest

from pytest_llem.errors import LimitSyntaxError, LlemError
from pytest_llem.report.pareto import build_candidates, canonical_metric, direction, pareto_frontiers
from tests.report.records import cycles

#: Energy (mJ/token) against median ITL (s): A is frugal and slow, B fast and hungry, both on the
#: frontier. C is beaten by A on both medians but its wide interval reaches past A's: within
#: uncertainty. D is beaten by B beyond any doubt: dominated. E has no adjusted energy: missing.
RECORDS = [
    *cycles("bsA", [10.0, 10.2, 9.8], [0.050, 0.051, 0.049], [1000, 1010, 990]),
    *cycles("bsB", [20.0, 20.2, 19.8], [0.010, 0.0101, 0.0099], [5000, 5050, 4950]),
    *cycles("bsC", [9.0, 15.0, 12.0], [0.040, 0.070, 0.055], [900, 1100, 1000]),
    *cycles("bsD", [30.0, 30.3, 29.7], [0.020, 0.0202, 0.0198], [3000, 3030, 2970]),
    *cycles("bsE", [None, None], [0.03, 0.03], [2000, 2000]),
]


def _status(frontier: object) -> dict[str, str]:
    return {p.candidate.label: p.status for p in frontier.points}  # type: ignore[attr-defined]


def test_frontier_within_uncertainty_dominated_and_missing() -> None:
    (frontier,) = pareto_frontiers(RECORDS, "mj_per_tok_adjusted", "itl_s.p50")
    assert frontier.x == "mj_per_tok_adjusted" and frontier.y == "itl_s.median"
    assert _status(frontier) == {"bsA": "frontier", "bsB": "frontier", "bsC": "within_uncertainty", "bsD": "dominated", "bsE": "missing"}
    assert [c.label for c in frontier.frontier] == ["bsA", "bsB"]  # ordered by energy
    by_label = {p.candidate.label: p for p in frontier.points}
    assert by_label["bsD"].dominated_by == ("bsB",) and by_label["bsC"].dominated_by == ("bsA",)
    estimate = by_label["bsC"].candidate.estimates["mj_per_tok_adjusted"]
    assert estimate.point == 12.0 and estimate.ci_method == "student-t"
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low < 9.0 and estimate.high > 15.0  # wider than its values: 3 cycles, Student t


def test_higher_tokens_per_second_is_better() -> None:
    assert direction("avg_tokens_per_second") == "max" and direction("itl_s.median") == "min"
    (frontier,) = pareto_frontiers(RECORDS, "mj_per_tok_adjusted", "avg_tokens_per_second")
    status = _status(frontier)
    assert status["bsA"] == status["bsB"] == "frontier"  # A least energy, B most tokens/s
    assert status["bsD"] == "dominated"  # more energy and fewer tokens/s than B


def test_one_frontier_per_group_and_other_hardware_apart() -> None:
    h100 = cycles("bsA", [5.0, 5.1, 4.9], [0.09, 0.091, 0.089], [800, 810, 790], gpu="NVIDIA H100")
    frontiers = pareto_frontiers(RECORDS + h100, group_by=("gpu_name",))
    assert [f.group for f in frontiers] == [{"gpu_name": "NVIDIA H200"}, {"gpu_name": "NVIDIA H100"}]
    assert [c.label for c in frontiers[1].frontier] == ["bsA"]
    together = build_candidates(RECORDS + h100)
    assert sorted(c.label for c in together if c.label.startswith("bsA")) == ["bsA @ NVIDIA H100", "bsA @ NVIDIA H200"]


def test_a_single_cycle_has_its_value_as_interval() -> None:
    (candidate,) = build_candidates(cycles("bs1", [7.0], [0.02], [100]), ["itl_s.median"])
    e = candidate.estimates["itl_s.median"]
    assert (e.low, e.point, e.high, e.n, e.ci_method) == (0.02, 0.02, 0.02, 1, None)


def test_unknown_metric_and_group_are_named() -> None:
    with pytest.raises(LimitSyntaxError, match=r"unknown metric 'itl_s.p05' \(did you mean 'itl_s.p95'\?\); known metrics: "):
        canonical_metric("itl_s.p05")
    with pytest.raises(LlemError, match="cannot group the frontier by .*no_such_field"):
        pareto_frontiers(RECORDS, group_by=("no_such_field",))
