"""Helpers for the study tests: write a YAML study into tmp_path and load it."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_llem.errors import StudyError
from pytest_llem.study.study import Study, load_study


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write(text, name="study.llem.yaml")`` -> path of the dedented YAML written there."""

    def _write(text: str, name: str = "study.llem.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def load(write: Callable[..., Path]) -> Callable[..., Study]:
    """``load(text, name=...)`` -> the loaded :class:`Study`."""

    def _load(text: str, name: str = "study.llem.yaml") -> Study:
        return load_study(write(text, name))

    return _load


@pytest.fixture
def problems(write: Callable[..., Path]) -> Callable[..., tuple[Path, list[str]]]:
    """``problems(text)`` -> (path, the problems of the StudyError the file must raise)."""

    def _problems(text: str, name: str = "study.llem.yaml") -> tuple[Path, list[str]]:
        path = write(text, name)
        with pytest.raises(StudyError) as excinfo:
            load_study(path)
        assert excinfo.value.path == str(path)
        return path, excinfo.value.problems

    return _problems
