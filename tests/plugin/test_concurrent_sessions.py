"""Two sessions of one study started together never share a study directory.

The red team's case: two ``pytest -n 2`` runs of one study in the same second shared a
directory (one stamp, ``mkdir(exist_ok=True)``), both printed "3 passed", and 3 of 6
measurements survived. Each session now claims its directory under its own session id, which
its xdist workers share.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugin.conftest import STUB_STUDY, write_study
from tests.timing import scaled


def test_two_xdist_sessions_started_together_keep_their_own_directories(
    pytester: pytest.Pytester, stub_transformers: Path
) -> None:
    write_study(pytester.path, "c.llem.yaml", STUB_STUDY + "sweep:\n  transformers.batch_size: [1, 2, 4]\nexecution: {n_cycles: 1}\n")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "2", "c.llem.yaml"]
    runs = [subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [run.communicate(timeout=scaled(900))[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    study_dirs = sorted(p for p in (pytester.path / "results").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(study_dirs) == 2, study_dirs
    for study_dir in study_dirs:
        manifest = json.loads((study_dir / "manifest.json").read_text())
        assert manifest["summary"]["completed"] == 3
        assert len(list(study_dir.glob("*/result.json"))) == 3
