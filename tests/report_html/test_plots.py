"""The report's figures: readable with 50 configurations, units on axes, phases where the record puts them."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (pip install 'pytest-llem[plot]')")

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pytest_llem.report import plots
from pytest_llem.report.pareto import pareto_frontiers
from pytest_llem.results.loader import load_results
from pytest_llem.verdicts.statistics import GroupSummary, summarise


def group(config_id: str, engine: str, values: Sequence[float], metric: str = "mj_per_tok_adjusted") -> GroupSummary:
    return GroupSummary(
        key={"measurement_config_hash": config_id}, config_ids=[config_id], n_records=len(values),
        metrics={metric: summarise(values, metric)}, fields={"config_id": config_id, "engine": engine},
    )  # fmt: skip


def fifty_groups() -> list[GroupSummary]:
    """50 configurations with long names, as a sweep of batch size x precision x engine gives them."""
    return [
        group(f"llama3-8b-{'vllm' if i % 2 else 'transformers'}-bf16-batch-size-{i:03d}-max-tokens-512",
              "vllm" if i % 2 else "transformers", [100.0 + i, 101.0 + i, 99.5 + i])
        for i in range(50)
    ]  # fmt: skip


def tick_boxes(figure: Figure) -> list[Any]:
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    return [label.get_window_extent(renderer) for label in figure.axes[0].get_yticklabels() if label.get_text()]


def test_fifty_configurations_get_one_readable_row_each() -> None:
    groups = fifty_groups()
    labels = plots.group_labels(groups)
    many = plots.energy_figure(groups, labels, "mj_per_tok_adjusted")
    few = plots.energy_figure(groups[:5], labels[:5], "mj_per_tok_adjusted")
    assert many is not None and few is not None
    assert many.get_figheight() >= few.get_figheight() + 45 * plots.ROW_INCHES * 0.99, "the figure grows with its rows"
    texts = [t.get_text() for t in many.axes[0].get_yticklabels()]
    assert len(texts) == 50 and all(len(t) <= plots.LABEL_CHARS for t in texts)
    assert all(t.endswith("…") for t in texts), "labels longer than LABEL_CHARS are cut, visibly"
    boxes = tick_boxes(many)
    overlapping = [(a, b) for a, b in combinations(range(len(boxes)), 2) if boxes[a].overlaps(boxes[b])]
    assert not overlapping, f"tick labels {overlapping[:3]} overlap"
    assert many.axes[0].get_xlabel() == "mj_per_tok_adjusted (mJ/token)"
    assert plots.render("energy", "energy", many).png.startswith(b"\x89PNG")


def test_rows_run_from_the_lowest_mean_down() -> None:
    groups = [group("b", "vllm", [3.0, 3.1]), group("a", "transformers", [1.0, 1.1]), group("c", "vllm", [2.0, 2.1])]
    figure = plots.energy_figure(groups, plots.group_labels(groups), "mj_per_tok_adjusted")
    assert figure is not None
    axes = figure.axes[0]
    by_position = sorted(zip(axes.get_yticks(), (t.get_text() for t in axes.get_yticklabels())))
    assert [label for _, label in by_position] == ["a", "c", "b"]
    assert axes.get_ylim()[0] > axes.get_ylim()[1], "row 0 (the best) is drawn on top"


def test_an_engine_keeps_its_colour_whatever_else_is_drawn() -> None:
    assert plots.engine_colour("vllm", ["vllm"]) == plots.engine_colour("vllm", ["transformers", "tensorrt", "vllm"])
    assert len({plots.engine_colour(e) for e in ("transformers", "vllm", "tensorrt")}) == 3
    assert plots.engine_colour("sglang", ["sglang", "llamacpp"]) != plots.engine_colour("llamacpp", ["sglang", "llamacpp"])
    figure = plots.energy_figure([group("a", "vllm", [1.0, 2.0])], ["a"], "mj_per_tok_adjusted")
    assert figure is not None
    colours = {tuple(c.get_facecolor()[0][:3]) for c in figure.axes[0].collections if len(c.get_facecolor())}
    from matplotlib.colors import to_rgb

    assert colours == {to_rgb(plots.ENGINE_COLOURS["vllm"])}


def test_a_mathtext_config_id_is_drawn_as_text() -> None:
    """matplotlib reads ``$...$`` as mathtext, and a malformed one fails the whole figure at drawing."""
    groups = [group(r"$\notacommand{$ weird", "vllm", [1.0, 1.2]), group("plain", "vllm", [2.0, 2.2])]
    figure = plots.energy_figure(groups, plots.group_labels(groups), "mj_per_tok_adjusted")
    assert figure is not None
    rendered = plots.render("energy", "energy", figure)
    assert rendered.svg.startswith("<?xml") and rendered.png.startswith(b"\x89PNG")


def test_the_same_data_give_the_same_svg() -> None:
    groups = fifty_groups()[:6]
    first = plots.render("e", "e", plots.energy_figure(groups, plots.group_labels(groups), "mj_per_tok_adjusted"))  # type: ignore[arg-type]
    second = plots.render("e", "e", plots.energy_figure(groups, plots.group_labels(groups), "mj_per_tok_adjusted"))  # type: ignore[arg-type]
    assert first.svg == second.svg


def test_drift_shows_each_cycle_as_a_deviation_from_its_configuration_mean() -> None:
    groups = [group("warming", "transformers", [100.0, 110.0, 120.0]), group("flat", "vllm", [50.0, 50.0, 50.0]),
              group("once", "vllm", [70.0])]  # fmt: skip
    figure = plots.drift_figure(groups, plots.group_labels(groups), "mj_per_tok_adjusted")
    assert figure is not None
    lines = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")}
    assert lines["warming"] == pytest.approx([-100 / 11, 0.0, 100 / 11])
    assert lines["flat"] == pytest.approx([0.0, 0.0, 0.0])
    assert "once" not in lines, "a single cycle has no drift"
    assert "cycle index" in figure.axes[0].get_xlabel() and "(%)" in figure.axes[0].get_ylabel()
    assert plots.drift_figure([group("once", "vllm", [70.0])], ["once"], "mj_per_tok_adjusted") is None


def test_many_drifting_configurations_are_summarised_by_their_median() -> None:
    groups = fifty_groups()
    figure = plots.drift_figure(groups, plots.group_labels(groups), "mj_per_tok_adjusted")
    assert figure is not None
    labelled = [line.get_label() for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labelled == ["median over configurations"], "50 names in a legend would hide the plot"


def test_timeseries_shades_the_warmup_and_the_window_where_the_record_says(timeline_study: Path) -> None:
    result = load_results(timeline_study)
    record, path = result.experiments[1], result.result_files[1]
    columns = plots.read_timeseries(path.parent / record["timeseries"])
    assert columns is not None
    figure = plots.timeseries_figure(record, columns)
    assert figure is not None
    start, length = record["window_t_start_s"], record["total_inference_time_sec"]
    warmup = next(p["seconds"] for p in record["timeline"] if p["phase"] == "warmup")
    for axes in figure.axes:
        spans = sorted((round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6)) for p in axes.patches)
        assert spans == [(round(max(0.0, start - warmup), 6), round(start, 6)), (round(start, 6), round(start + length, 6))]
    assert [a.get_ylabel() for a in figure.axes] == ["power (W)", "temperature (°C)", "SM clock (MHz)"]
    assert figure.axes[-1].get_xlabel() == "time since the sampler started (s)"
    power = figure.axes[0].get_lines()[0].get_ydata()
    assert max(power) > 300, "an H200 under vLLM draws hundreds of watts in the window"
    assert plots.read_timeseries(path.parent / "missing.parquet") is None


def test_pareto_marks_the_frontier_and_draws_the_intervals(adaptive_study: Path, timeline_study: Path) -> None:
    result = load_results(adaptive_study, timeline_study)
    frontiers = pareto_frontiers(result, x="avg_tokens_per_second", y="mj_per_tok_adjusted")
    figure = plots.pareto_figure(frontiers)
    assert figure is not None
    axes = figure.axes[0]
    labelled = sorted(t.get_text() for t in axes.texts)
    assert labelled == sorted(c.label for f in frontiers for c in f.frontier)
    assert "bs128" in labelled and "vllm-n64" in labelled, "each group (model x GPU) has its own frontier"
    assert axes.get_xlabel() == "avg_tokens_per_second (tokens/s), higher is better"
    assert axes.get_ylabel() == "mj_per_tok_adjusted (mJ/token), lower is better"
    # bs32 and bs128 ran 3 cycles: their points carry interval bars.
    assert sum(len(c.get_segments()) for c in axes.collections) >= 4
    assert plots.pareto_figure(pareto_frontiers([], x="avg_tokens_per_second", y="mj_per_tok_adjusted")) is None
