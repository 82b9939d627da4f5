"""Study directories for the report's tests: real GPU studies from benchmarks/results, copied, and made-up ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

#: An H200 study of two engines, one cycle each, with each cell's timeseries.parquet.
TIMELINE = RESULTS / "2026-11-30-h200-timeline" / "res" / "engines-llama3-8b_2026-11-30T07-13-18"
#: An H200 study of two batch sizes, three cycles each (no timeseries kept).
ADAPTIVE = RESULTS / "2026-11-30-h200x2-session2" / "a" / "adaptive" / "adaptive_2026-11-30T03-03-53"


def copy_study(source: Path, into: Path) -> Path:
    """A copy of a study directory (the originals are read-only evidence), without any report already there."""
    target = into / source.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("report.html", "plots"))
    return target


@pytest.fixture
def timeline_study(tmp_path: Path) -> Path:
    return copy_study(TIMELINE, tmp_path)


@pytest.fixture
def adaptive_study(tmp_path: Path) -> Path:
    return copy_study(ADAPTIVE, tmp_path)
