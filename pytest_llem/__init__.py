"""pytest-llem: the energy efficiency of LLM inference, measured as pytest tests.

Write a study in ``*.llem.yaml`` and run ``pytest studies/my.llem.yaml``: every cell of the
sweep becomes a test that runs in its own process and leaves a scientific record on disk.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
