"""A study as it stands on disk at the end of a session, with its statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_llem.results.loader import StudyResult, load_results
from pytest_llem.verdicts.statistics import (
    GroupSummary,
    summarise_groups,
    write_summary,
)


@dataclass
class FinalizedStudy:
    """A study as it stands on disk at the end of a session, with its statistics."""

    result: StudyResult
    groups: list[GroupSummary]


def finalize_study(study_dir: Path) -> FinalizedStudy:
    """Statistics across cycles from what is on disk, written as summary.json and summary.csv.

    Reads the study back (manifest and records) rather than trusting one process's memory, so
    a study run by several pytest-xdist workers is summarised whole, by the controller.
    """
    result = load_results(study_dir)
    groups = summarise_groups(result.experiments) if result.experiments else []
    if groups:
        write_summary(study_dir, groups)
    return FinalizedStudy(result, groups)
