"""Energy, carbon and cost per million output tokens, each figure naming the inputs it came from.

From a configuration's energy per output token (mJ/token) and throughput (tokens/s):

* ``kwh_per_mtok``: energy per million output tokens, kWh = mJ/token / 3600 x PUE. The energy is
  the baseline-adjusted figure (``mj_per_tok_adjusted``: the GPU's energy above idle) where it
  exists, else the raw one (``mj_per_tok_total``); the figure says which. PUE (the facility's
  overhead: cooling, power conversion) is 1.0 unless given, and the figure says so.
* ``gco2e_per_mtok``: kWh x the grid's carbon intensity (gCO2e/kWh), given, or a country's yearly
  average from :data:`GRID_TABLE` (Our World in Data / Ember, CC BY 4.0; the file names its
  source, licence and years).
* ``electricity_cost_per_mtok``: kWh x an electricity price per kWh.
* ``gpu_time_cost_per_mtok``: the GPU-hours a million tokens take at the measured throughput x
  a price per GPU-hour (a cloud price usually includes the electricity: do not add the two).

No figure appears whose input is missing: without a grid intensity there is no carbon figure,
without a price no cost, without an energy figure (a CPU cell) no kWh.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from pytest_llem.errors import LlemError
from pytest_llem.naming import suggest
from pytest_llem.report.pareto import Candidate

#: The packaged table of grid carbon intensity by country (``pytest_llem/data/``).
GRID_TABLE = "grid_intensity.csv"
MJ_PER_TOK_TO_KWH_PER_MTOK = 1.0 / 3600.0  # 1 mJ/token x 1e6 tokens = 1000 J = 1/3600 kWh


@dataclass(frozen=True)
class GridIntensity:
    """A grid's carbon intensity and where the number comes from."""

    gco2e_per_kwh: float
    source: str
    region: str | None = None
    year: int | None = None


@dataclass(frozen=True)
class CostInputs:
    """What the figures are computed from; every field optional except the PUE (1.0 unless stated)."""

    grid: GridIntensity | None = None
    pue: float = 1.0
    pue_stated: bool = False
    electricity_price_per_kwh: float | None = None
    gpu_hour_price: float | None = None
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("electricity_price_per_kwh", "gpu_hour_price"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise LlemError(f"{name} must be a number at least 0, got {value!r}")
        if not self.pue >= 1.0:
            raise LlemError(f"pue must be at least 1.0 (facility energy over IT energy), got {self.pue!r}")
        if self.grid is not None and not self.grid.gco2e_per_kwh >= 0:
            raise LlemError(f"grid intensity must be at least 0 gCO2e/kWh, got {self.grid.gco2e_per_kwh!r}")


@dataclass(frozen=True)
class Figure:
    """One derived figure: its name, value, unit and the inputs it came from (name -> value or words)."""

    name: str
    value: float
    unit: str
    inputs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        used = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.inputs.items())
        return f"{self.name} = {self.value:.4g} {self.unit} (from {used})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "unit": self.unit, "inputs": dict(self.inputs)}


@cache
def _grid_text() -> str:
    return resources.files("pytest_llem").joinpath("data").joinpath(GRID_TABLE).read_text(encoding="utf-8")


@cache
def _grid_rows() -> tuple[tuple[str, str, float, int], ...]:
    text = _grid_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(
        (row["iso_code"], row["country"], float(row["gco2e_per_kwh"]), int(row["year"]))
        for row in csv.DictReader(io.StringIO("\n".join(lines)))
    )


def grid_source() -> str:
    """The table's own header: its source, licence and years, as the file states them."""
    text = _grid_text()
    return "\n".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))


def grid_regions() -> dict[str, str]:
    """The table's regions: ISO 3166 alpha-3 code -> country name."""
    return {code: name for code, name, _, _ in _grid_rows()}


def grid_intensity(region: str) -> GridIntensity:
    """The yearly carbon intensity of a country's electricity, by ISO alpha-3 code or name (any case).

    An unknown region raises :class:`~pytest_llem.errors.LlemError` with the closest names.
    """
    wanted = region.strip().lower()
    for code, name, value, year in _grid_rows():
        if wanted in (code.lower(), name.lower()):
            return GridIntensity(
                value, f"Our World in Data / Ember, carbon_intensity_elec {year} (CC BY 4.0)", f"{name} ({code})", year
            )
    names = [n for _, n, _, _ in _grid_rows()] + [c for c, _, _, _ in _grid_rows()]
    raise LlemError(f"unknown grid region {region!r}{suggest(region, names)}: give an ISO alpha-3 code (FRA) or a country name")


def cost_figures(
    *,
    mj_per_tok_adjusted: float | None,
    mj_per_tok_total: float | None,
    tokens_per_second: float | None,
    gpu_count: int | None,
    inputs: CostInputs,
) -> list[Figure]:
    """The figures of the module's docstring that the given inputs allow, in its order."""
    figures: list[Figure] = []
    if mj_per_tok_adjusted is not None:
        energy = {"energy": "mj_per_tok_adjusted (baseline-adjusted: GPU energy above idle)", "mj_per_tok": mj_per_tok_adjusted}
        mj = mj_per_tok_adjusted
    elif mj_per_tok_total is not None:
        energy = {"energy": "mj_per_tok_total (raw GPU energy, idle included: no adjusted figure)", "mj_per_tok": mj_per_tok_total}
        mj = mj_per_tok_total
    else:
        mj = None
    if mj is not None:
        kwh = mj * MJ_PER_TOK_TO_KWH_PER_MTOK * inputs.pue
        pue = inputs.pue if inputs.pue_stated else f"{inputs.pue:g} (default: GPU energy only)"
        kwh_figure = Figure("kwh_per_mtok", kwh, "kWh per million output tokens", {**energy, "pue": pue})
        figures.append(kwh_figure)
        if inputs.grid is not None:
            grid: dict[str, Any] = {"grid_gco2e_per_kwh": inputs.grid.gco2e_per_kwh, "grid_source": inputs.grid.source}
            if inputs.grid.region:
                grid["region"] = inputs.grid.region
            figures.append(Figure("gco2e_per_mtok", kwh * inputs.grid.gco2e_per_kwh, "gCO2e per million output tokens",
                                  {"kwh_per_mtok": kwh, **grid}))  # fmt: skip
        if inputs.electricity_price_per_kwh is not None:
            figures.append(
                Figure(
                    "electricity_cost_per_mtok", kwh * inputs.electricity_price_per_kwh,
                    f"{inputs.currency} per million output tokens",
                    {"kwh_per_mtok": kwh, f"electricity_price_{inputs.currency}_per_kwh": inputs.electricity_price_per_kwh},
                )
            )  # fmt: skip
    if inputs.gpu_hour_price is not None and tokens_per_second and gpu_count:
        hours = 1e6 / tokens_per_second / 3600.0 * gpu_count
        figures.append(
            Figure(
                "gpu_time_cost_per_mtok", hours * inputs.gpu_hour_price, f"{inputs.currency} per million output tokens",
                {"avg_tokens_per_second": tokens_per_second, "gpu_count": gpu_count,
                 f"gpu_hour_price_{inputs.currency}": inputs.gpu_hour_price},
            )
        )  # fmt: skip
    return figures


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def record_figures(record: Mapping[str, Any], inputs: CostInputs) -> list[Figure]:
    """:func:`cost_figures` of one cell's record (its own energy per token and throughput)."""
    gpus = record.get("gpus")
    return cost_figures(
        mj_per_tok_adjusted=record.get("mj_per_tok_adjusted"),
        mj_per_tok_total=record.get("mj_per_tok_total"),
        tokens_per_second=record.get("avg_tokens_per_second"),
        gpu_count=len(gpus) if isinstance(gpus, list) else None,
        inputs=inputs,
    )


def candidate_figures(candidate: Candidate, inputs: CostInputs) -> list[Figure]:
    """:func:`cost_figures` of a configuration, from the medians across its cycles."""
    e = candidate.estimates
    return cost_figures(
        mj_per_tok_adjusted=e["mj_per_tok_adjusted"].point,
        mj_per_tok_total=e["mj_per_tok_total"].point,
        tokens_per_second=e["avg_tokens_per_second"].point,
        gpu_count=_int(candidate.fields.get("gpu_count")),
        inputs=inputs,
    )
