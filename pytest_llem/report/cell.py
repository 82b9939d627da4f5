"""What a finished cell's test report carries: its figures (``report.llem``) and JUnit XML properties."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Figures of a cell's record that its test report carries, under ``report.llem`` (and, with
#: pytest-json-report, under its test's ``metadata.llem``): the headline, not the whole record.
REPORT_FIGURES = (
    "experiment_id", "measurement_config_hash", "total_tokens", "total_inference_time_sec",
    "avg_tokens_per_second", "total_energy_j", "mj_per_tok_total", "mj_per_tok_adjusted",
    "energy_meter", "energy_unavailable_reason",
)  # fmt: skip

#: Figures written into JUnit XML as ``llem_<figure>`` user properties, for CI dashboards.
JUNIT_FIGURES = ("mj_per_tok_total", "mj_per_tok_adjusted", "avg_tokens_per_second", "total_energy_j")


def cell_figures(record: dict[str, Any], cell_dir: Path | None) -> dict[str, Any]:
    """The figures of ``report.llem``: plain builtins only, since pytest-xdist sends them across processes."""
    figures = {key: record.get(key) for key in REPORT_FIGURES}
    figures["cell_dir"] = str(cell_dir)
    return figures


def junit_properties(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(name, value)`` pairs for the item's ``user_properties``."""
    # A figure the cell could not make is left out: JUnit XML would write None as the text "None".
    return [(f"llem_{key}", record[key]) for key in JUNIT_FIGURES if record.get(key) is not None]
