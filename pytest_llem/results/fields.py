"""Reading a record's figures by dotted path (``itl_s.median``), shared by every reader of records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dotted_value(record: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``record``; None where any step is missing or not a mapping."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node
