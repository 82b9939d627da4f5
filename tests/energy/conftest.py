"""The fake NVML at the import boundary: product code imports ``tests/fakes/pynvml`` as pynvml."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FAKES_DIR = Path(__file__).resolve().parents[1] / "fakes"


@dataclass
class FakeNvml:
    """Handle on the fake library for one test."""

    module: ModuleType
    monkeypatch: pytest.MonkeyPatch

    @staticmethod
    def gpu(uuid: str, **spec: Any) -> dict[str, Any]:
        """One fake GPU's description (see tests/fakes/pynvml for the keys)."""
        return {"uuid": uuid, "name": "Fake H100", "power_w": 300.0, "idle_w": 70.0, "supports_energy": True, **spec}

    def configure(self, *gpus: dict[str, Any], **top: Any) -> None:
        """Describe the machine; read by the next first ``nvmlInit``."""
        self.monkeypatch.setenv(self.module.ENV_VAR, json.dumps({"gpus": list(gpus), **top}))

    def init_count(self) -> int:
        """Outstanding NVML initialisations: zero once every user has let go."""
        count: int = self.module.init_count()
        return count


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    # A real pynvml already imported would shadow the fake: take it out (restored afterwards).
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.syspath_prepend(str(FAKES_DIR))
    module = importlib.import_module("pynvml")
    assert getattr(module, "FAKE", False), f"imported the real pynvml from {module.__file__}"
    fake = FakeNvml(module, monkeypatch)
    fake.configure()
    yield fake
    # monkeypatch only restores what it replaced; when no pynvml was imported before, drop ours.
    sys.modules.pop("pynvml", None)
