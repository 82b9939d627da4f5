"""Which kernels a cell's decoding settings can never call (execution.skip_unused_kernels)."""

from __future__ import annotations

import pytest

from pytest_llem.config.experiment import DecodingConfig
from pytest_llem.engines.unused_kernels import FLASHINFER_SAMPLER, never_top_k_top_p, vllm_unused_kernels


@pytest.mark.parametrize(
    ("decoding", "never"),
    [
        (DecodingConfig(), True),
        (DecodingConfig(temperature=1.0), True),
        (DecodingConfig(temperature=1.0, top_p=1.0, top_k=None), True),
        (DecodingConfig(temperature=1.0, top_p=0.95), False),
        (DecodingConfig(temperature=1.0, top_k=1), False),
        (DecodingConfig(temperature=0.2, top_p=0.5, top_k=20), False),
    ],
)
def test_top_k_top_p_is_never_used_only_when_greedy_or_unset(decoding: DecodingConfig, never: bool) -> None:
    assert never_top_k_top_p(decoding) is never
    environ: dict[str, str] = {}
    skipped = vllm_unused_kernels(decoding, environ)
    assert (environ == {FLASHINFER_SAMPLER: "0"}) is never
    assert bool(skipped) is never


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_the_users_own_switch_wins(value: str) -> None:
    environ = {FLASHINFER_SAMPLER: value}
    assert vllm_unused_kernels(DecodingConfig(), environ) == {}
    assert environ == {FLASHINFER_SAMPLER: value}
