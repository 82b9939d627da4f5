"""The base of every configuration model, its bounds, and the error type of a cross-field rule."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

#: The error type of a cross-field rule: such a cell is skipped, not a file error.
INVALID_COMBINATION = "llem_invalid_combination"

# Every number of a study has a finite upper bound, far above any real setting and far below
# what would exhaust the machine: one prompt per pass costs memory in the cell's child, so a
# trillion of them is a file error, not an out-of-memory kill an hour later.

#: Prompts in one pass (``dataset.n_prompts``, inline ``prompts``), and so the most any batch holds.
MAX_PROMPTS = 100_000
#: Tokens of one prompt or one generation, or one scheduler step's budget: above any model's context.
MAX_TOKENS = 10_000_000
#: GPUs along one axis of parallelism (tensor, pipeline): one host has a handful.
MAX_PARALLEL = 64
#: A seed: what numpy, torch and vLLM all accept (unsigned 32 bits).
MAX_SEED = 2**32 - 1
#: A relative tolerance or threshold (1.0 is 100%): above ten times the figure it checks nothing.
MAX_RELATIVE = 10.0
HOUR_S = 3600.0
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
YEAR_S = 365 * DAY_S


def InvalidCombination(message: str) -> PydanticCustomError:
    """An error for a combination of valid values that cannot be measured together."""
    return PydanticCustomError(INVALID_COMBINATION, message)


def refuse_non_finite(value: Any) -> None:
    """Refuse NaN and infinities anywhere in a free-form value (an ``engine_args`` mapping).

    Typed fields refuse them through ``allow_inf_nan=False``; a value passed through to an engine
    as given is checked here, since ``.nan`` there would reach the engine unseen.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{at or 'the value'} is {item}: expected a finite number")
        if isinstance(item, dict):
            stack += [(v, f"{at}.{k}" if at else str(k)) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, f"{at}[{i}]") for i, v in enumerate(item)]


class StrictModel(BaseModel):
    """Unknown keys are errors, never silently ignored settings; defaults are validated too.

    Strict: a bool is not a number and a string is neither a number nor a flag (``true`` is not
    1, ``"on"`` is not true); an int is still a float. No float is NaN or infinite: a limit of
    ``.nan`` can never be breached, and a pause of ``.inf`` overflows the clock.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)
