"""Kernels an engine compiles at start-up that a cell can never call: ``execution.skip_unused_kernels``.

An engine does not know which requests will come, so at its first start on a machine it compiles
and warms up every kernel any request could need. vLLM 0.26 builds its FlashInfer top-k/top-p
sampler with nvcc then (83.5 s of a 154 s first start on an H200, BENCHMARKS.md), yet samples
with it only for a batch in which every request uses top-k or top-p, none decodes greedily and
none carries its own seed. A study knows its requests: a cell that decodes greedily, or with
neither top_k nor top_p, runs the same code in its window whether the sampler was built or not,
so the engine is told not to build it. A variable the user set is left alone: their choice.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from pytest_llem.config.experiment import DecodingConfig

#: vLLM's switch for its FlashInfer top-k/top-p sampler (read when the engine starts).
FLASHINFER_SAMPLER = "VLLM_USE_FLASHINFER_SAMPLER"


def never_top_k_top_p(decoding: DecodingConfig) -> bool:
    """Whether no request of the cell can be sampled with top-k or top-p."""
    return decoding.temperature == 0.0 or (decoding.top_k is None and decoding.top_p >= 1.0)


def vllm_unused_kernels(decoding: DecodingConfig, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Switch off, in ``environ`` (the process's own by default), what vLLM would build for nothing.

    Returns what was switched off, each with why, for the record; empty where nothing was (a
    cell that samples with top-k or top-p, or a switch the user set themselves).
    """
    env = os.environ if environ is None else environ
    if FLASHINFER_SAMPLER in env or not never_top_k_top_p(decoding):
        return {}
    env[FLASHINFER_SAMPLER] = "0"
    why = "greedy decoding" if decoding.temperature == 0.0 else "neither top_k nor top_p"
    return {
        "flashinfer_sampler": f"{FLASHINFER_SAMPLER}=0: {why}, so vLLM would never sample with its FlashInfer"
        " top-k/top-p sampler; not building it shortens a first start and leaves the window as it is"
    }
