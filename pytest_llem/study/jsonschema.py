"""The JSON Schema of study files, for editors (completion, inline checks).

Generated from the same pydantic models that validate studies, so it cannot drift from them;
``docs/llem-study.schema.json`` is a committed copy and a test keeps it current. Point an
editor at it, e.g. with a first line ``# yaml-language-server: $schema=<path or URL>``.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_llem.study.schema import StudyDocument

SCHEMA_ID = "https://pytest-llem.invalid/schema/llem-study.schema.json"


def study_json_schema() -> dict[str, Any]:
    schema = StudyDocument.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "pytest-llem study (*.llem.yaml)"
    # Keys starting with x- or _ only hold YAML anchors; dotted keys are shorthand for nesting.
    schema["patternProperties"] = {"^(x-|_)": {}, r"^[a-z_]+\.[a-z_.]+$": {}}
    return schema


def study_json_schema_text() -> str:
    return json.dumps(study_json_schema(), indent=2, sort_keys=True) + "\n"
