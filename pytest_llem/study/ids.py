"""Readable, stable cell ids built from the swept values.

Ids follow pytest's parametrize convention (the values of the swept fields, joined with ``-``,
in declaration order), with a short key before numbers and booleans so that ``bs8`` and
``seqs8`` cannot be confused. Every character outside ``[\\w.+-]`` is replaced, so an id can
never contain ``::``, ``=``, ``[`` or spaces and is safe in node ids and directory names.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pytest_llem.naming import sanitise

#: Short forms of field names that appear before numeric values in ids.
ABBREVIATIONS: dict[str, str] = {
    "batch_size": "bs",
    "max_batch_size": "bs",
    "max_num_seqs": "seqs",
    "max_num_batched_tokens": "mbt",
    "max_num_tokens": "mnt",
    "tensor_parallel_size": "tp",
    "pipeline_parallel_size": "pp",
    "max_output_tokens": "out",
    "max_input_tokens": "in",
    "temperature": "temp",
    "repetition_penalty": "rep",
    "gpu_memory_utilization": "gmu",
    "kv_cache_free_gpu_memory_fraction": "kvfrac",
    "n_prompts": "n",
    "min_window_seconds": "win",
    "enforce_eager": "eager",
    "enable_prefix_caching": "prefix-cache",
    "enable_chunked_prefill": "chunked-prefill",
}

_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


def short_key(dotted_path: str) -> str:
    last = dotted_path.rsplit(".", 1)[-1]
    return ABBREVIATIONS.get(last, last)


def id_piece(dotted_path: str, value: Any) -> str:
    """The part of an id that one swept value contributes."""
    key = short_key(dotted_path)
    if isinstance(value, bool):
        return key if value else f"no-{key}"
    if value is None:
        return f"{key}-none"
    if isinstance(value, (int, float)):
        return f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}"
    if isinstance(value, str):
        return sanitise(value)
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{key}-{digest}"


def join_pieces(pieces: list[str]) -> str:
    return "-".join(p for p in pieces if p)


def template_fields(template: str) -> list[str]:
    return _TEMPLATE_FIELD.findall(template)


def render_template(template: str, lookup: dict[str, Any]) -> str:
    """Fill ``{dotted.path}`` fields from ``lookup`` (a flat dict of dotted paths)."""

    def replace(match: re.Match[str]) -> str:
        value = lookup[match.group(1).strip()]
        return sanitise(str(value)) if not isinstance(value, bool) else str(value).lower()

    return sanitise(_TEMPLATE_FIELD.sub(replace, template))
