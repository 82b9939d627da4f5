"""The house's shape: every import points down the layers of docs/architecture.md.

The layers are the ``[tool.importlinter]`` contract in pyproject.toml; import-linter checks it
from the code, imports inside functions and under TYPE_CHECKING included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package found first on the path of ``project``."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=project, env=env, capture_output=True, text=True, check=False, timeout=scaled(600),
    )  # fmt: skip


def test_every_import_points_down_the_layers() -> None:
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """The check can fail: results importing the pytest plugin is caught, naming both."""
    shutil.copytree(ROOT / "pytest_llem", tmp_path / "pytest_llem", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    record = tmp_path / "pytest_llem" / "results" / "record.py"
    record.write_text(record.read_text() + "\n\ndef _upward() -> None:\n    import pytest_llem.plugin  # noqa: F401\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "pytest_llem.results is not allowed to import pytest_llem.plugin" in proc.stdout


def test_a_module_outside_the_layers_is_refused(tmp_path: Path) -> None:
    """A new top-level module must be placed in a layer (the contract is exhaustive)."""
    shutil.copytree(ROOT / "pytest_llem", tmp_path / "pytest_llem", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "pytest_llem" / "stray.py").write_text('"""Belongs nowhere yet."""\n')
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "pytest_llem.stray" in proc.stdout
