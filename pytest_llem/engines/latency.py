"""Per-request latency figures from the times at which decoding steps produced their tokens.

Engine-neutral and free of torch: an engine records one timestamp per decoding step (the host
time at which that step's tokens of the whole batch were available) and hands them here with
each request's number of counted output tokens.

For a request with ``n`` counted tokens, generated at steps ``0 .. n-1``:

* time to first token (TTFT): ``step_times[0] - start``;
* inter-token latencies (ITL): ``step_times[i] - step_times[i-1]`` for ``i = 1 .. n-1``;
* end-to-end latency: ``step_times[n-1] - start``, the step of its last counted token (its EOS,
  or its final token). In a static batch a request that meets its EOS early has its result at
  that step, even though the batch goes on and ``generate`` returns later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class BatchLatencies:
    """Latency figures of one batch, requests in batch order."""

    ttft_s: list[float]  # one per request
    itl_s: list[float]  # flat: each request's gaps between consecutive counted tokens, in order
    end_to_end_s: list[float]  # one per request


def batch_latencies(start: float, step_times: Sequence[float], counted_lengths: Sequence[int]) -> BatchLatencies:
    """Turn step timestamps into per-request TTFT, ITL and end-to-end latency.

    ``start`` and ``step_times`` are on one clock (``time.perf_counter``); ``step_times[k]`` is
    when step ``k``'s tokens (position ``k`` of every request's output) were available: a static
    batch, where every request shares the step times.
    """
    if any(later < earlier for earlier, later in pairwise(step_times)):
        raise ValueError("step times must not decrease")
    for length in counted_lengths:
        if length > len(step_times):
            raise ValueError(f"a request counts {length} tokens but only {len(step_times)} steps were timed")
    return request_latencies(start, [step_times] * len(counted_lengths), counted_lengths)


def request_latencies(start: float, token_times: Sequence[Sequence[float]], counted_lengths: Sequence[int]) -> BatchLatencies:
    """Per-request figures where each request has its own token arrival times.

    For engines that schedule requests independently (vLLM's continuous batching): request
    ``r``'s ``k``-th generated token was available at ``token_times[r][k]``. Only the first
    ``counted_lengths[r]`` tokens count, as everywhere else.
    """
    if len(token_times) != len(counted_lengths):
        raise ValueError(f"{len(token_times)} requests timed but {len(counted_lengths)} counted")
    ttft: list[float] = []
    itl: list[float] = []
    end_to_end: list[float] = []
    for times, length in zip(token_times, counted_lengths, strict=True):
        if length < 1:
            raise ValueError(f"a request needs at least one counted token for latency figures, got {length}")
        if length > len(times):
            raise ValueError(f"a request counts {length} tokens but only {len(times)} were timed")
        if any(later < earlier for earlier, later in pairwise(times)):
            raise ValueError("token times must not decrease")
        ttft.append(times[0] - start)
        itl.extend(times[i] - times[i - 1] for i in range(1, length))
        end_to_end.append(times[length - 1] - start)
    return BatchLatencies(ttft_s=ttft, itl_s=itl, end_to_end_s=end_to_end)
