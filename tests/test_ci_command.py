"""CI runs the README's test command, exactly: the run a new user starts with is the one CI keeps green."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_test_command() -> None:
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip().startswith("python -m pytest")]
    assert len(ci) == 1, ci
    readme = (ROOT / "README.md").read_text()
    assert f"&& {ci[0]}\n```" in readme, f"README's test command is not CI's: {ci[0]}"
