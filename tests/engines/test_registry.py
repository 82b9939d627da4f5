"""The engine registry against the one list of engine names in the schema."""

from __future__ import annotations

import sys

import pytest

from pytest_llem.config.engines import ENGINE_NAMES, ENGINE_SECTIONS
from pytest_llem.engines import registry
from pytest_llem.errors import EngineUnavailable


@pytest.mark.parametrize("table", ["_INSTALL_HINT", "_PACKAGES"])
def test_every_engine_has_an_entry_in_each_registry_table(table: str) -> None:
    """A new engine without its install hint or packages would fail only when its import does:
    a KeyError in place of the message that says what to install."""
    assert sorted(getattr(registry, table)) == sorted(ENGINE_NAMES)


def test_every_engine_has_a_section() -> None:
    assert sorted(ENGINE_SECTIONS) == sorted(ENGINE_NAMES)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_engine_is_wired_into_create_engine(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its packages absent, a wired engine says what to install; an unwired one would be
    an 'unknown engine'. No engine library is needed to tell the two apart."""
    monkeypatch.delitem(sys.modules, f"pytest_llem.engines.{name}", raising=False)
    for package in registry._PACKAGES[name]:
        monkeypatch.setitem(sys.modules, package, None)  # importing it now fails
    with pytest.raises(
        EngineUnavailable, match=rf"the {name} engine cannot be imported"
    ):
        registry.create_engine(name)
