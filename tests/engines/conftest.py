"""Fixtures of the engine tests: the fake NVML, which tells the GPU engines which GPUs they got."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator

import pytest

from tests.energy.conftest import FAKES_DIR, FakeNvml


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """``tests/fakes/pynvml`` imported as ``pynvml`` (as in tests/energy), with no GPU yet."""
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.syspath_prepend(str(FAKES_DIR))
    module = importlib.import_module("pynvml")
    assert getattr(module, "FAKE", False), (
        f"imported the real pynvml from {module.__file__}"
    )
    fake = FakeNvml(module, monkeypatch)
    fake.configure()
    yield fake
    sys.modules.pop("pynvml", None)
