"""The top-level ``llem`` key that pytest-json-report's JSON gets: every study's directory and statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_llem.verdicts.finalize import FinalizedStudy


def studies_json(studies: list[FinalizedStudy]) -> dict[str, Any]:
    return {
        "studies": [
            {
                "study_name": f.result.study_name,
                "study_dir": str(f.result.study_dir),
                "study_design_hash": f.result.study_design_hash,
                "summary": f.result.summary,
                "statistics": [g.to_json() for g in f.groups],
            }
            for f in studies
        ]
    }
