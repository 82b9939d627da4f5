"""Hashes that say when two experiments, or two studies, are the same.

``measurement_config_hash``: the first 16 hex digits of SHA-256 over the canonical JSON of a
resolved experiment, leaving out only what cannot change a figure (the output settings, and the
settings sections of engines the cell does not use). Equal hash = logically identical
experiment, whatever file or sweep produced it.

``study_design_hash``: the same digest over the list of experiments of a study, in declaration
order, execution block left out: the same YAML gives the same hash however often it is run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pytest_llem.config.engines import ENGINE_NAMES
from pytest_llem.config.experiment import NON_MEASUREMENT_FIELDS, ExperimentConfig


def canonical_json(data: Any) -> str:
    """Key-sorted, whitespace-free JSON: one text for one logical value."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest16(data: Any) -> str:
    return text_digest16(canonical_json(data))


def text_digest16(text: str) -> str:
    """The digest of a canonical JSON text already made (see :func:`digest16`)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def measurement_fields(config: ExperimentConfig) -> dict[str, Any]:
    """The part of a resolved experiment that can change its measurement."""
    other_engines = {name for name in ENGINE_NAMES if name != config.engine}
    return config.model_dump(mode="json", exclude=set(NON_MEASUREMENT_FIELDS) | other_engines)


def measurement_json(config: ExperimentConfig) -> str:
    """The canonical JSON of :func:`measurement_fields`: what both hashes are taken over."""
    return canonical_json(measurement_fields(config))


def measurement_config_hash(config: ExperimentConfig) -> str:
    return text_digest16(measurement_json(config))


def design_hash_of(measurement_texts: list[str]) -> str:
    """:func:`study_design_hash` from the configurations' :func:`measurement_json` texts.

    The canonical JSON of a list is its items' canonical JSON joined by commas in brackets, so
    this is the same digest without dumping and encoding every configuration a second time
    (a loader that already hashed each configuration passes the texts it made).
    """
    return text_digest16("[" + ",".join(measurement_texts) + "]")


def study_design_hash(configs: list[ExperimentConfig]) -> str:
    return design_hash_of([measurement_json(c) for c in configs])
