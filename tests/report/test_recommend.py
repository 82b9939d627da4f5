"""report/recommend.py: the query grammar, and a recommendation that says why every other configuration lost."""

from __future__ import annotations

import pytest

from pytest_llem.errors import LimitSyntaxError
from pytest_llem.report.recommend import parse_query, recommend, recommend_groups, render
from tests.report.records import cycles

#: bsA: least energy but slow (ITL 0.05 s); bsB: fast and a little hungrier, indistinguishable from
#: bsC in energy; bsD: fast, much hungrier, and slower than bsB: dominated by it; bsE: no energy figure.
RECORDS = [
    *cycles("bsA", [10.0, 10.2, 9.8], [0.050, 0.051, 0.049], [1000, 1010, 990]),
    *cycles("bsB", [20.0, 20.2, 19.8], [0.010, 0.0101, 0.0099], [5000, 5050, 4950]),
    *cycles("bsC", [20.5, 19.0, 22.0], [0.008, 0.0081, 0.0079], [5100, 5150, 5050]),
    *cycles("bsD", [30.0, 30.3, 29.7], [0.020, 0.0202, 0.0198], [3000, 3030, 2970]),
    *cycles("bsF", [40.0, 40.3, 39.7], [0.005, 0.0051, 0.0049], [6000, 6030, 5970]),
    *cycles("bsE", [None, None], [0.03, 0.03], [2000, 2000]),
]


def test_the_issue_example_parses() -> None:
    q = parse_query("minimize mj_per_tok_adjusted where itl_s.p50 <= 0.1 and ttft_s.p95 <= 1")
    assert (q.metric, q.sense) == ("mj_per_tok_adjusted", "min")
    assert [(c.metric, c.op, c.bound) for c in q.constraints] == [("itl_s.median", "<=", 0.1), ("ttft_s.p95", "<=", 1.0)]
    assert parse_query("MAXIMISE avg_tokens_per_second").sense == "max"
    assert parse_query("itl_s.p95 < 2e-1").describe() == "minimize mj_per_tok_adjusted where itl_s.p95 < 0.2 s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("minimize mj_per_tok_adjustd", r"character 10: unknown metric 'mj_per_tok_adjustd' \(did you mean 'mj_per_tok_adjusted'\?\); known metrics: .*itl_s.median"),
        ("itl_s.p50 <= 0.1 and ttft_s.mediam <= 1", r"character 22: unknown metric 'ttft_s.mediam' \(did you mean 'ttft_s.median'\?\)"),
        ("itl_s.p50 = 0.1", r"'=' cannot bound a measured figure"),
        ("itl_s.p50 <= fast", r"expected a number after '<=', found 'fast'"),
        ("itl_s.p50 <= 0.1 or ttft_s.p95 <= 1", r"expected 'and' between conditions, found 'or'"),
        ("minimize mj_per_tok_adjusted itl_s.p50 <= 1", r"expected 'where' after the objective"),
        ("minimize mj_per_tok_adjusted where", r"expected a metric, found the end of the query"),
        ("", r"the query is empty"),
    ],
)  # fmt: skip
def test_a_bad_query_names_the_problem_and_where(text: str, message: str) -> None:
    with pytest.raises(LimitSyntaxError, match=message):
        parse_query(text)


def test_best_runners_up_and_why_each_other_lost() -> None:
    answer = recommend(RECORDS, "minimize mj_per_tok_adjusted where itl_s.p50 <= 0.03")
    assert answer.best is not None and answer.best.label == "bsB"
    assert [c.label for c in answer.runners_up] == ["bsC"]  # its energy interval overlaps bsB's
    reasons = {o.candidate.label: [r.code for r in o.reasons] for o in answer.others}
    assert reasons == {"bsD": ["dominated"], "bsF": ["worse"], "bsA": ["violates"], "bsE": ["missing"]}
    messages = {o.candidate.label: o.reasons[0].message for o in answer.others}
    assert messages["bsA"].startswith("violates itl_s.median <= 0.03 s: median 0.05 [")
    assert messages["bsD"].startswith("dominated by bsB")
    assert "worse than the best beyond uncertainty: mj_per_tok_adjusted 40 [" in messages["bsF"]
    assert "no value of mj_per_tok_adjusted" in messages["bsE"]
    text = "\n".join(render(answer))
    assert "best: bsB (3 cycle(s))" in text and "not distinguishable from the best at 95 % confidence" in text


def test_maximizing_throughput_and_no_feasible_candidate() -> None:
    assert recommend(RECORDS, "maximize avg_tokens_per_second").best.label == "bsF"  # type: ignore[union-attr]
    none = recommend(RECORDS, "itl_s.p50 <= 0.001")
    assert none.best is None and all(o.reasons[0].code in ("violates", "missing") for o in none.others)
    assert "best: none" in "\n".join(render(none))


def test_a_marginal_condition_is_noted() -> None:
    answer = recommend(RECORDS, "minimize mj_per_tok_adjusted where itl_s.p50 <= 0.0101")
    assert answer.best is not None and answer.best.label == "bsB"
    assert any(n.startswith("marginal: itl_s.median <= 0.0101 s") for n in answer.notes["bsB"])


def test_flagged_records_are_noted_or_left_out() -> None:
    flagged = [dict(r, validity=[{"code": "power_capped", "message": "m"}]) if r["config_id"] == "bsB" else r for r in RECORDS]
    noted = recommend(flagged, "itl_s.p50 <= 0.03")
    assert noted.best is not None and noted.best.label == "bsB" and noted.best.validity_codes == ("power_capped",)
    assert "validity flags on its records: power_capped" in noted.notes["bsB"]
    left_out = recommend(flagged, "itl_s.p50 <= 0.03", exclude_flagged=True)
    assert left_out.best is not None and left_out.best.label == "bsC" and left_out.excluded_flagged == 3


def test_one_answer_per_group() -> None:
    h100 = cycles("bsA", [5.0, 5.1, 4.9], [0.02, 0.021, 0.019], [800, 810, 790], gpu="NVIDIA H100")
    answers = recommend_groups(RECORDS + h100, "itl_s.p50 <= 0.03", ["gpu_name"])
    assert [(a.group["gpu_name"], a.best.label if a.best else None) for a in answers] == [("NVIDIA H200", "bsB"), ("NVIDIA H100", "bsA")]
