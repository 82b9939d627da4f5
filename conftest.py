"""Project-level pytest configuration.

The plugin itself is loaded through its ``pytest11`` entry point once the package is
installed (``pip install -e .``); nothing needs to be registered here.
"""

import pytest


@pytest.fixture(autouse=True)
def _inner_runs_are_not_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pytester run inside an xdist worker would inherit PYTEST_XDIST_WORKER and look like a
    worker itself to plugins that check it (pytest-benchmark then warns, and warnings are errors)."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
