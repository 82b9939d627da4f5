"""report/cost.py: energy, carbon and cost per million tokens, each naming its inputs, none without them."""

from __future__ import annotations

import pytest

from pytest_llem.errors import LlemError
from pytest_llem.report.cost import CostInputs, Figure, GridIntensity, cost_figures, grid_intensity, grid_source


def _by_name(
    inputs: CostInputs, mj_per_tok_adjusted: float | None = 36.0, mj_per_tok_total: float | None = 72.0,
    gpu_count: int | None = 2,
) -> dict[str, Figure]:  # fmt: skip
    figures = cost_figures(
        mj_per_tok_adjusted=mj_per_tok_adjusted, mj_per_tok_total=mj_per_tok_total, tokens_per_second=1000.0,
        gpu_count=gpu_count, inputs=inputs,
    )  # fmt: skip
    return {f.name: f for f in figures}


def test_only_the_energy_figure_without_further_inputs_and_it_names_adjusted_energy_and_pue() -> None:
    figures = _by_name(inputs=CostInputs())
    assert list(figures) == ["kwh_per_mtok"]
    kwh = figures["kwh_per_mtok"]
    assert kwh.value == pytest.approx(0.01)  # 36 mJ/token x 1e6 tokens = 36 kJ = 0.01 kWh
    assert kwh.inputs["energy"].startswith("mj_per_tok_adjusted") and kwh.inputs["pue"].startswith("1 (default")


def test_carbon_prices_and_pue() -> None:
    inputs = CostInputs(grid=GridIntensity(400.0, "given"), pue=1.5, pue_stated=True, electricity_price_per_kwh=0.2,
                        gpu_hour_price=3.6)  # fmt: skip
    figures = _by_name(inputs=inputs)
    assert figures["kwh_per_mtok"].value == pytest.approx(0.015) and figures["kwh_per_mtok"].inputs["pue"] == 1.5
    assert figures["gco2e_per_mtok"].value == pytest.approx(6.0)
    assert figures["electricity_cost_per_mtok"].value == pytest.approx(0.003)
    # 1e6 tokens at 1000 tokens/s = 1000 s on 2 GPUs = 0.5556 GPU-hours x 3.6
    assert figures["gpu_time_cost_per_mtok"].value == pytest.approx(2.0)
    assert "gpu_count=2" in figures["gpu_time_cost_per_mtok"].describe()


def test_raw_energy_is_used_and_said_when_there_is_no_adjusted_figure_and_nothing_without_energy() -> None:
    figures = _by_name(mj_per_tok_adjusted=None, inputs=CostInputs(grid=GridIntensity(100.0, "given")))
    assert figures["kwh_per_mtok"].value == pytest.approx(0.02) and figures["kwh_per_mtok"].inputs["energy"].startswith("mj_per_tok_total")
    none = _by_name(mj_per_tok_adjusted=None, mj_per_tok_total=None, gpu_count=None,
                    inputs=CostInputs(grid=GridIntensity(100.0, "given"), gpu_hour_price=1.0))  # fmt: skip
    assert none == {}


def test_the_packaged_grid_table_states_its_source_and_is_looked_up_by_code_or_name() -> None:
    assert "CC BY 4.0" in grid_source() and "ourworldindata.org" in grid_source()
    france = grid_intensity("fra")
    assert france == grid_intensity("France") and france.region == "France (FRA)" and france.year is not None
    assert 0 < france.gco2e_per_kwh < grid_intensity("POL").gco2e_per_kwh  # nuclear grid below a coal-heavy one
    with pytest.raises(LlemError, match=r"unknown grid region 'Frnace' \(did you mean 'France'\?\)"):
        grid_intensity("Frnace")


def test_impossible_inputs_are_refused() -> None:
    with pytest.raises(LlemError, match="pue must be at least 1.0"):
        CostInputs(pue=0.9)
    with pytest.raises(LlemError, match="gpu_hour_price must be a number at least 0"):
        CostInputs(gpu_hour_price=-1.0)
