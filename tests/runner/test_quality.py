"""The rules that judge a cell's conditions: pre-flight, throttling, window warnings, cross-check."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_llem.runner import quality
from pytest_llem.runner.quality import (
    cross_check,
    cross_check_failures,
    preflight_problems,
    spot_summary,
    throttle_summary,
    window_temperatures,
    window_warnings,
)

# --------------------------------------------------------------------------- spot_summary


def test_spot_summary_means_per_gpu_ignoring_nulls() -> None:
    samples: list[dict[str, Any]] = [
        {"gpu_idx": 0, "power_w": 70.0, "utilization_gpu_pct": 0.0},
        {"gpu_idx": 0, "power_w": 74.0, "utilization_gpu_pct": 4.0},
        {"gpu_idx": 0, "power_w": None, "utilization_gpu_pct": None},
        {"gpu_idx": 1, "power_w": 100.0, "utilization_gpu_pct": 30.0},
    ]
    out = spot_summary(samples, ["GPU-a", "GPU-b", "GPU-c"])
    assert out["GPU-a"] == {"power_w": 72.0, "utilization_gpu_pct": 2.0, "n_samples": 3.0}
    assert out["GPU-b"] == {"power_w": 100.0, "utilization_gpu_pct": 30.0, "n_samples": 1.0}
    assert out["GPU-c"] == {"power_w": None, "utilization_gpu_pct": None, "n_samples": 0.0}


# --------------------------------------------------------------------------- preflight


def _state(uuid: str = "GPU-a", **extra: Any) -> dict[str, Any]:
    return {"uuid": uuid, "foreign_compute_processes": 0, **extra}


def _spot(power: float | None = 70.0, util: float | None = 0.0, uuid: str = "GPU-a") -> dict[str, dict[str, float | None]]:
    return {uuid: {"power_w": power, "utilization_gpu_pct": util}}


def test_preflight_clean_gpu_has_no_problem() -> None:
    assert preflight_problems([_state()], _spot(power=71.0, util=3.0), {"GPU-a": 70.0}, 0.10) == []


def test_preflight_foreign_processes_with_memory() -> None:
    problems = preflight_problems(
        [_state(foreign_compute_processes=2, foreign_memory_mib=1536.4)], _spot(), {"GPU-a": 70.0}, 0.10
    )
    assert problems == ["GPU GPU-a: 2 other compute process(es) running, holding 1536 MiB"]


def test_preflight_foreign_processes_without_memory_figure() -> None:
    problems = preflight_problems([_state(foreign_compute_processes=1)], _spot(), {"GPU-a": 70.0}, 0.10)
    assert problems == ["GPU GPU-a: 1 other compute process(es) running"]


@pytest.mark.parametrize(("util", "flagged"), [(10.0, False), (10.5, True), (95.0, True)])
def test_preflight_utilisation_above_ten_percent(util: float, flagged: bool) -> None:
    problems = preflight_problems([_state()], _spot(util=util), {"GPU-a": 70.0}, 0.10)
    assert bool(problems) is flagged
    if flagged:
        assert problems == [f"GPU GPU-a: {util:.0f} % utilisation while this cell was idle"]


@pytest.mark.parametrize(("power", "flagged"), [(77.0, False), (77.5, True), (150.0, True), (40.0, False)])
def test_preflight_idle_power_above_reference(power: float, flagged: bool) -> None:
    problems = preflight_problems([_state()], _spot(power=power), {"GPU-a": 70.0}, 0.10)
    assert bool(problems) is flagged
    if flagged:
        assert "idle power" in problems[0] and "70.0 W" in problems[0] and "10%" in problems[0]


def test_preflight_power_not_judged_without_reference() -> None:
    assert preflight_problems([_state()], _spot(power=500.0), {}, 0.10) == []


def test_preflight_reports_every_problem_of_every_gpu() -> None:
    spot = {**_spot(power=200.0, util=80.0), **_spot(power=70.0, util=0.0, uuid="GPU-b")}
    problems = preflight_problems(
        [_state(foreign_compute_processes=1, foreign_memory_mib=512), _state("GPU-b")],
        spot,
        {"GPU-a": 70.0, "GPU-b": 70.0},
        0.10,
    )
    assert len(problems) == 3 and all(p.startswith("GPU GPU-a:") for p in problems)


# --------------------------------------------------------------------------- throttle_summary


def test_throttle_summary_empty() -> None:
    assert throttle_summary([]) == {"n_samples": 0, "slowed_share": None, "reasons": {}}
    assert throttle_summary([{"throttle_reasons": None}]) == {"n_samples": 0, "slowed_share": None, "reasons": {}}


def test_throttle_summary_shares_and_slowdown() -> None:
    samples: list[dict[str, Any]] = [
        {"throttle_reasons": 0x1},  # idle: not a slowdown
        {"throttle_reasons": 0x1},
        {"throttle_reasons": 0x4},  # power cap
        {"throttle_reasons": 0x4 | 0x20},  # power cap + software thermal
        {"throttle_reasons": 0x10},  # sync boost: not a slowdown
        {"throttle_reasons": 0x2},  # applications clocks: not a slowdown
        {"throttle_reasons": 0x100},  # display clock: not a slowdown
        {"throttle_reasons": 0},
        {"throttle_reasons": None},  # not counted
    ]
    out = throttle_summary(samples)
    assert out["n_samples"] == 8
    assert out["slowed_share"] == pytest.approx(2 / 8)
    assert out["reasons"] == pytest.approx(
        {
            "gpu_idle": 2 / 8,
            "sw_power_cap": 2 / 8,
            "sw_thermal_slowdown": 1 / 8,
            "sync_boost": 1 / 8,
            "applications_clocks_setting": 1 / 8,
            "display_clock_setting": 1 / 8,
        }
    )


@pytest.mark.parametrize("bit", [0x4, 0x8, 0x20, 0x40, 0x80])
def test_every_power_or_thermal_bit_counts_as_slowed(bit: int) -> None:
    out = throttle_summary([{"throttle_reasons": bit}, {"throttle_reasons": 0}])
    assert out["slowed_share"] == 0.5
    assert out["reasons"] == {quality.THROTTLE_BITS[bit]: 0.5}


@pytest.mark.parametrize("bit", [0x1, 0x2, 0x10, 0x100])
def test_other_bits_do_not_count_as_slowed(bit: int) -> None:
    assert throttle_summary([{"throttle_reasons": bit}])["slowed_share"] == 0.0


# --------------------------------------------------------------------------- window_warnings


def _good_window(**override: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "energy_j": 1000.0,
        "error_bound_j": 5.0,  # 0.5 %
        "cross_check": [{"gpu_uuid": "GPU-a", "counter_j": 1000.0, "integral_j": 990.0, "relative_gap": 0.01}],
        "cross_check_tolerance": 0.03,
        "gpu_state_start": [{"uuid": "GPU-a", "persistence_mode": True, "temperature_c": 40.0}],
        "temperatures": [{"gpu_uuid": "GPU-a", "start_c": 52.0, "end_c": 55.0, "max_c": 56.0}],
        "throttle": {"n_samples": 100, "slowed_share": 0.02, "reasons": {}},
        "mean_utilisation_pct": 95.0,
    }
    kwargs.update(override)
    return kwargs


def test_good_window_has_no_warning() -> None:
    assert window_warnings(**_good_window()) == []


def test_unknown_figures_give_no_warning() -> None:
    warnings = window_warnings(
        **_good_window(
            energy_j=None,
            error_bound_j=None,
            cross_check=[{"gpu_uuid": "GPU-a", "counter_j": 0.0, "integral_j": 1.0, "relative_gap": None}],
            gpu_state_start=[{"uuid": "GPU-a", "persistence_mode": None, "temperature_c": None}],
            temperatures=[{"gpu_uuid": "GPU-a", "start_c": None, "end_c": 90.0, "max_c": 90.0}],
            throttle={"n_samples": 0, "slowed_share": None, "reasons": {}},
            mean_utilisation_pct=None,
        )
    )
    assert warnings == []


@pytest.mark.parametrize(("error_bound_j", "fires"), [(10.0, False), (10.1, True), (24.0, True)])
def test_short_window_fires_above_one_percent(error_bound_j: float, fires: bool) -> None:
    warnings = window_warnings(**_good_window(error_bound_j=error_bound_j))
    assert len(warnings) == int(fires)
    if fires:
        assert warnings[0].startswith("short window") and f"{error_bound_j / 10:.1f} %" in warnings[0]


@pytest.mark.parametrize(("gap", "fires"), [(0.03, False), (0.0301, True), (0.2, True)])
def test_cross_check_gap_fires_above_tolerance(gap: float, fires: bool) -> None:
    row = {"gpu_uuid": "GPU-a", "counter_j": 1000.0, "integral_j": 1000.0 * (1 - gap), "relative_gap": gap}
    warnings = window_warnings(**_good_window(cross_check=[row]))
    assert len(warnings) == int(fires)
    if fires:
        assert warnings[0].startswith("GPU GPU-a: energy counter (1000.0 J)") and f"{100 * gap:.1f} %" in warnings[0]


def test_persistence_off_fires() -> None:
    start = [{"uuid": "GPU-a", "persistence_mode": False, "temperature_c": 40.0}]
    warnings = window_warnings(**_good_window(gpu_state_start=start))
    assert warnings == ["GPU GPU-a: persistence mode is off (clocks and idle power less stable)"]


@pytest.mark.parametrize(("end_c", "fires"), [(50.0, False), (50.5, True), (70.0, True), (20.0, False)])
def test_temperature_rise_in_the_window_fires_above_ten_degrees(end_c: float, fires: bool) -> None:
    rows = [{"gpu_uuid": "GPU-a", "start_c": 40.0, "end_c": end_c, "max_c": max(40.0, end_c)}]
    warnings = window_warnings(**_good_window(temperatures=rows))
    assert len(warnings) == int(fires)
    if fires:
        assert "thermal drift" in warnings[0] and f"rose {end_c - 40:.0f} C during the measured window" in warnings[0]


def test_a_gpu_that_warmed_up_before_the_window_gives_no_drift_warning() -> None:
    """As on the H100: idle at 34 C before the cell, 47-50 C across the window (a vLLM cell)."""
    start = [{"uuid": "GPU-a", "persistence_mode": True, "temperature_c": 34.0}]
    rows = [{"gpu_uuid": "GPU-a", "start_c": 47.0, "end_c": 50.0, "max_c": 54.0}]
    assert window_warnings(**_good_window(gpu_state_start=start, temperatures=rows)) == []


def test_window_temperatures_are_per_gpu_first_and_last_sample() -> None:
    samples: list[dict[str, Any]] = [
        {"gpu_idx": 0, "temperature_c": 50.0}, {"gpu_idx": 1, "temperature_c": 40.0},
        {"gpu_idx": 0, "temperature_c": 58.0}, {"gpu_idx": 1, "temperature_c": None},
        {"gpu_idx": 0, "temperature_c": 55.0}, {"gpu_idx": 1, "temperature_c": 42.0},
    ]  # fmt: skip
    assert window_temperatures(samples, ["GPU-a", "GPU-b", "GPU-c"]) == [
        {"gpu_uuid": "GPU-a", "start_c": 50.0, "end_c": 55.0, "max_c": 58.0},
        {"gpu_uuid": "GPU-b", "start_c": 40.0, "end_c": 42.0, "max_c": 42.0},
        {"gpu_uuid": "GPU-c", "start_c": None, "end_c": None, "max_c": None},
    ]


@pytest.mark.parametrize(("share", "fires"), [(0.05, False), (0.051, True), (1.0, True)])
def test_slowed_share_fires_above_five_percent(share: float, fires: bool) -> None:
    warnings = window_warnings(**_good_window(throttle={"n_samples": 10, "slowed_share": share, "reasons": {}}))
    assert len(warnings) == int(fires)
    if fires:
        assert "slowed by power or thermal limits" in warnings[0]


@pytest.mark.parametrize(("util", "fires"), [(50.0, False), (49.9, True), (3.0, True)])
def test_low_utilisation_fires_below_fifty_percent(util: float, fires: bool) -> None:
    warnings = window_warnings(**_good_window(mean_utilisation_pct=util))
    assert len(warnings) == int(fires)
    if fires:
        assert warnings[0].startswith("low GPU utilisation")


def test_all_warnings_together() -> None:
    warnings = window_warnings(
        **_good_window(
            error_bound_j=50.0,
            cross_check=[{"gpu_uuid": "GPU-a", "counter_j": 1000.0, "integral_j": 800.0, "relative_gap": 0.2}],
            gpu_state_start=[{"uuid": "GPU-a", "persistence_mode": False, "temperature_c": 30.0}],
            temperatures=[{"gpu_uuid": "GPU-a", "start_c": 45.0, "end_c": 60.0, "max_c": 60.0}],
            throttle={"n_samples": 10, "slowed_share": 0.5, "reasons": {}},
            mean_utilisation_pct=10.0,
        )
    )
    assert len(warnings) == 6


# --------------------------------------------------------------------------- cross_check


def test_cross_check_gaps() -> None:
    rows = cross_check(["GPU-a", "GPU-b", "GPU-c"], [1000.0, 200.0, 0.0], [950.0, 210.0, 5.0])
    assert [r["gpu_uuid"] for r in rows] == ["GPU-a", "GPU-b", "GPU-c"]
    assert rows[0]["relative_gap"] == pytest.approx(0.05)
    assert rows[1]["relative_gap"] == pytest.approx(0.05)  # absolute: integral above counter counts too
    # No counter energy while power was drawn: the gap is taken against the integral, 100 %.
    # (It was None once, which switched the check off exactly for a stuck counter.)
    assert rows[2]["relative_gap"] == pytest.approx(1.0)
    assert rows[0]["counter_j"] == 1000.0 and rows[0]["integral_j"] == 950.0


@pytest.mark.parametrize(("counter", "integral"), [(None, [1.0]), ([1.0], None), ([], [1.0])])
def test_cross_check_without_both_sources_is_empty(counter: list[float] | None, integral: list[float] | None) -> None:
    assert cross_check(["GPU-a"], counter, integral) == []


def test_cross_check_feeds_window_warnings() -> None:
    rows = cross_check(["GPU-a"], [1000.0], [900.0])
    assert len(window_warnings(**_good_window(cross_check=rows))) == 1


def test_a_stuck_counter_does_not_switch_the_cross_check_off() -> None:
    # Counter 0 J (stuck) or below (reset) against power drawn: the gap is relative to the
    # integral, so it is at least 100 %, where it once was None and skipped.
    rows = cross_check(["GPU-stuck", "GPU-reset", "GPU-idle"], [0.0, -40.0, 0.0], [300.0, 300.0, 0.0])
    assert rows[0]["relative_gap"] == pytest.approx(1.0)
    assert rows[1]["relative_gap"] == pytest.approx(340.0 / 300.0)
    assert rows[2]["relative_gap"] is None  # neither source saw energy: nothing to compare
    assert len(cross_check_failures(rows, 0.25)) == 2


@pytest.mark.parametrize(("gap", "fails"), [(0.1, False), (0.25, False), (0.2501, True), (2.0, True)])
def test_cross_check_fails_only_beyond_the_failing_bound(gap: float, fails: bool) -> None:
    row = {"gpu_uuid": "GPU-a", "counter_j": 1000.0, "integral_j": 1000.0 * (1 + gap), "relative_gap": gap}
    failures = cross_check_failures([row], 0.25)
    assert len(failures) == int(fails)
    if fails:
        assert failures[0] == (
            f"GPU GPU-a: energy counter (1000.0 J) and integral of sampled power ({1000.0 * (1 + gap):.1f} J) differ by"
            f" {100 * gap:.1f} %, beyond measurement.cross_check_fail_tolerance (25 %)"
        )


def test_no_rows_no_failures() -> None:
    assert cross_check_failures([], 0.25) == []
    assert cross_check_failures(cross_check(["GPU-a"], [100.0], None), 0.25) == []
