"""Collecting a sweep does work in proportion to its cells, not to their square.

Computing the whole run order once per configuration made collection quadratic (5,000 cells took
minutes). Wall time would be a fragile witness on a shared machine, so these tests count work
instead: the lines of pytest-llem's code executed while collecting N and 2N cells (a loop over
every cell inside a per-configuration step shows up as a ratio near 4), and the calls of the
steps that must happen once per study or once per configuration.
"""

from __future__ import annotations

import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from _pytest.fixtures import FixtureManager

import pytest_llem
from pytest_llem.study import hashing, ordering
from pytest_llem.study import study as study_module

PACKAGE_DIR = str(Path(pytest_llem.__file__).parent)
CYCLES = 2


def write_sweep(directory: Path, n_configs: int) -> Path:
    """A study of ``n_configs`` configurations (two batch sizes x an output-length axis), 2 cycles each."""
    path = directory / f"sweep{n_configs}.llem.yaml"
    outputs = list(range(1, n_configs // 2 + 1))
    path.write_text(
        textwrap.dedent(
            f"""\
            model: llem-tiny
            dataset: {{n_prompts: 8}}
            sweep:
              transformers.batch_size: [1, 2]
              max_output_tokens: {outputs}
            execution: {{n_cycles: {CYCLES}, experiment_order: shuffle}}
            """
        ),
        encoding="utf-8",
    )
    return path


@contextmanager
def counting_lines(counts: Counter[str]) -> Iterator[None]:
    """Count the lines of pytest-llem's own code executed (comprehension iterations included)."""

    def local(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "line":
            counts["lines"] += 1
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        return local if frame.f_code.co_filename.startswith(PACKAGE_DIR) else None

    previous = sys.gettrace()
    sys.settrace(global_)
    try:
        yield
    finally:
        sys.settrace(previous)


def counted(counts: Counter[str], key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        return function(*args, **kwargs)

    return wrapper


@pytest.fixture
def collect_counting(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], Counter[str]]:
    """``collect(n_configs)`` -> the work done collecting such a sweep, by kind."""

    def collect(n_configs: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        path = write_sweep(pytester.path, n_configs)
        original_order = ordering.run_order

        def run_order(*args: Any, **kwargs: Any) -> list[tuple[int, int]]:
            pairs = original_order(*args, **kwargs)
            counts["run_order calls"] += 1
            counts["run_order pairs"] += len(pairs)
            return pairs

        with monkeypatch.context() as patch:
            patch.setattr(study_module, "run_order", run_order)
            patch.setattr(study_module, "_validate_cell", counted(counts, "validations", study_module._validate_cell))
            patch.setattr("pytest_llem.study.study.measurement_json", counted(counts, "hashed", hashing.measurement_json))
            patch.setattr(FixtureManager, "getfixtureinfo", counted(counts, "fixture closures", FixtureManager.getfixtureinfo))
            with counting_lines(counts):
                items, _ = pytester.inline_genitems(str(path), "-p", "no:cacheprovider")
        counts["items"] = len(items)
        return counts

    return collect


def test_collecting_twice_the_cells_does_at_most_twice_the_work(collect_counting: Callable[[int], Counter[str]]) -> None:
    small = collect_counting(100)
    large = collect_counting(200)
    assert (small["items"], large["items"]) == (100 * CYCLES, 200 * CYCLES)
    # Linear work with a fixed part (loading the file, the plugin's hooks) doubles at most (1.96
    # when written); the old per-configuration run order gave 2.98 here, more the larger the sweep.
    assert large["lines"] <= 2.1 * small["lines"], (small["lines"], large["lines"])


def test_the_run_order_is_computed_once_per_study(collect_counting: Callable[[int], Counter[str]]) -> None:
    counts = collect_counting(100)
    assert counts["run_order calls"] == 1
    assert counts["run_order pairs"] == 100 * CYCLES


def test_each_configuration_is_validated_and_hashed_once(collect_counting: Callable[[int], Counter[str]]) -> None:
    counts = collect_counting(100)
    assert counts["validations"] == 100
    assert counts["hashed"] == 100  # the design hash reuses the configurations' texts


def test_the_cells_fixture_closure_is_resolved_once_per_study_file(collect_counting: Callable[[int], Counter[str]]) -> None:
    counts = collect_counting(100)
    assert counts["fixture closures"] == 1
