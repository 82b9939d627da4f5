"""The fake's ``SamplingParams`` and ``RequestOutputKind`` (vLLM 0.26 names and defaults)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class RequestOutputKind(Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class SamplingParams:
    n: int = 1
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    detokenize: bool = True
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE

    def clone(self) -> SamplingParams:
        return copy.deepcopy(self)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["output_kind"] = self.output_kind.name
        return values
