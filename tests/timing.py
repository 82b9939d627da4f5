"""Time limits in tests, scaled to how busy the machine is.

A test that needs a time limit (a subprocess timeout, a cell's time limit, a thread's wait)
writes a generous one, several times what a quiet machine needs, and passes it through
:func:`scaled`. A limit only stops a test that would otherwise hang: the assertions are on
outcomes (which cells passed, which message was printed), never on speed.

``scaled(s)`` is ``s`` times the factor :func:`time_scale` returns, rounded up to whole seconds:

* ``LLEM_TEST_TIME_SCALE`` when it is set (a positive number, e.g. ``LLEM_TEST_TIME_SCALE=4``
  on a slow or crowded machine);
* otherwise the machine's load, ``max(1, 1-minute load average / CPU count)``: 1 on a machine
  with a CPU to spare, 2 when twice as many processes want to run as there are CPUs.

The factor is read at each call, so a long session follows the load as it changes.
"""

from __future__ import annotations

import math
import os

ENV_VAR = "LLEM_TEST_TIME_SCALE"


def time_scale() -> float:
    """The factor every time limit in the tests is multiplied by (see the module's docstring)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if raw:
        try:
            factor = float(raw)
        except ValueError:
            factor = math.nan
        if not factor > 0 or math.isinf(factor):
            raise ValueError(f"{ENV_VAR} must be a positive number of times (got {raw!r})")
        return factor
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """``seconds`` times :func:`time_scale`, rounded up to whole seconds (so ``f"{limit:g}"`` is short)."""
    return float(math.ceil(seconds * time_scale()))
