"""The base of every configuration model, and the error type of a cross-field rule."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

#: The error type of a cross-field rule: such a cell is skipped, not a file error.
INVALID_COMBINATION = "llem_invalid_combination"


def InvalidCombination(message: str) -> PydanticCustomError:
    """An error for a combination of valid values that cannot be measured together."""
    return PydanticCustomError(INVALID_COMBINATION, message)


class StrictModel(BaseModel):
    """Unknown keys are errors, never silently ignored settings; defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)
