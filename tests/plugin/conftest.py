"""Helpers for testing the plugin as pytest plugins are tested: with ``pytester``."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy  # noqa: F401  (see below)
import pytest
import scipy.stats  # noqa: F401

# numpy and scipy refuse to load twice in one process ("cannot load module more than once per
# process"), and each in-process pytester run drops the modules it imported. A run that finalises
# a study imports them (for the statistics), so the next in-process run doing so would fail:
# importing them here, outside every run, keeps them loaded for all of them.

STUB_DIR = Path(__file__).resolve().parents[1] / "fakes" / "transformers_stub"

#: A cheap stub-engine study: 4 prompts of a few tokens, no measured-window minimum.
STUB_STUDY = """
model: stub-ok
precision: fp32
dataset: {n_prompts: 4}
max_output_tokens: 4
measurement:
  min_window_seconds: 0
  warmup: {max_batches: 2}
transformers: {batch_size: 2}
"""


def write_study(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


@pytest.fixture
def stub_transformers(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Cell children import the stub ``transformers`` (a fake at the import boundary)."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(STUB_DIR) + (os.pathsep + existing if existing else ""))
    return STUB_DIR
