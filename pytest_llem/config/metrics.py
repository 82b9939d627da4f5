"""The figures of a cell's record that limits and gates may name.

Declared beside the configuration so that a study naming an unknown figure in ``expect:`` is an
error of the file, found when it is loaded, with a did-you-mean; limits, the regression gate
and stored baselines read the same table.
"""

from __future__ import annotations

from pytest_llem.errors import LimitSyntaxError
from pytest_llem.naming import suggest

#: Figures a limit may name, with their unit, for messages.
LIMIT_METRICS: dict[str, str] = {
    "mj_per_tok_total": "mJ/token",
    "mj_per_tok_adjusted": "mJ/token",
    "avg_energy_per_token_j": "J/token",
    "total_energy_j": "J",
    "energy_adjusted_j": "J",
    "avg_tokens_per_second": "tokens/s",
    "total_inference_time_sec": "s",
    "flops_per_second": "FLOP/s",
    "peak_memory_bytes": "bytes",
    **{f"{group}.{stat}": "s" for group in ("ttft_s", "itl_s", "request_latency_s", "batch_latency_s")
       for stat in ("mean", "median", "p95", "p99", "max")},
}  # fmt: skip


def check_metric(metric: str) -> None:
    if metric not in LIMIT_METRICS:
        hint = suggest(metric, sorted(LIMIT_METRICS))
        known = "" if hint else f"; known: {', '.join(sorted(LIMIT_METRICS))}"
        raise LimitSyntaxError(f"unknown metric {metric!r}{hint}{known}")
