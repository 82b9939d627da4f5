"""The order in which cells run.

Orders spread slow drifts (thermal state, background load, clock boosts) over configurations:
``interleave`` (the default) runs cycle by cycle, A B C A B C, so each configuration sees
every period of the session; ``sequential`` runs all cycles of a configuration back to back
(fastest when an engine is expensive to start, most exposed to drift); ``shuffle`` draws a
fresh seeded permutation for every cycle; ``reverse`` alternates direction, A B C C B A, which
cancels a linear drift between pairs; ``latin_square`` rotates the order by one position each
cycle, so every configuration takes every position equally often over n cycles.

Everything depends only on the study and the seed, so every pytest-xdist worker computes the
same order.
"""

from __future__ import annotations

import random

ORDERS = ("sequential", "interleave", "shuffle", "reverse", "latin_square")


def run_order(n_configs: int, n_cycles: int, order: str, seed: int = 0) -> list[tuple[int, int]]:
    """``(config_index, cycle)`` pairs in run order."""
    if order not in ORDERS:
        raise ValueError(f"unknown experiment_order {order!r}; expected one of {', '.join(ORDERS)}")
    configs = list(range(n_configs))
    if order == "sequential":
        return [(i, k) for i in configs for k in range(n_cycles)]
    pairs: list[tuple[int, int]] = []
    for k in range(n_cycles):
        if order == "interleave":
            round_ = configs
        elif order == "reverse":
            round_ = configs if k % 2 == 0 else configs[::-1]
        elif order == "latin_square":
            shift = k % n_configs if n_configs else 0
            round_ = configs[shift:] + configs[:shift]
        else:  # shuffle
            round_ = configs[:]
            random.Random(f"{seed}:{k}").shuffle(round_)
        pairs.extend((i, k) for i in round_)
    return pairs
