"""The README's commands and names are real: what it tells a new user to type works here.

A new user followed the README word for word and met options and claims that were not so.
These checks run what can run on a CPU without measuring anything: every ``pytest`` command in
the README's shell blocks is collected (``--collect-only``, so its options and study parse),
every ``python -m pytest_llem`` command it shows exists, every ``--llem-*`` option it names is
one the plugin has (and every option the plugin has is in the README), and every key of its
``execution:`` table is a key of the study grammar. The quick start itself runs in full in
tests/test_end_to_end.py; the test command is checked against CI in tests/test_ci_command.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llem.study.schema import ExecutionConfig
from tests.timing import scaled

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The README's placeholder study paths, and a real study of the same kind to stand in for them.
STAND_INS = {"studies/sweep.llem.yaml": "examples/quickstart.llem.yaml"}


def shell_commands() -> list[str]:
    """Commands in the README's code blocks: lines of ```bash blocks, and ``$ ``-prompted lines."""
    commands: list[str] = []
    fence: str | None = None
    for line in README.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        text = line.strip()
        if fence == "bash" and text and not text.startswith("#"):
            commands.append(text)
        elif fence is not None and text.startswith("$ "):
            commands.append(text[2:])
    return commands


def pytest_commands() -> list[list[str]]:
    """The pytest invocations among them (after any ``&&``), comments cut, placeholders replaced."""
    found = []
    for command in shell_commands():
        for part in command.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["pytest"] or words[:3] == ["python", "-m", "pytest"]:
                args = words[1:] if words[0] == "pytest" else words[3:]
                found.append([STAND_INS.get(a, a) for a in args])
    return found


def test_the_readme_shows_pytest_commands() -> None:
    assert len(pytest_commands()) >= 3  # the quick start, the test suite, the gate's two


@pytest.mark.parametrize("args", [c for c in pytest_commands() if "tests" not in c], ids=" ".join)
def test_each_pytest_command_of_the_readme_parses_and_collects(args: list[str], tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "no:benchmark",
         "--llem-results-dir", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(300), check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "::c0" in run.stdout, "the study's cells were collected"


def test_each_cli_command_of_the_readme_exists() -> None:
    shown = {c.split()[3] for c in shell_commands() if c.startswith("python -m pytest_llem ")}
    assert {"ls", "show", "compare", "doctor"} <= shown
    for command in sorted(shown):
        run = subprocess.run(
            [sys.executable, "-m", "pytest_llem", command, "--help"], cwd=ROOT, capture_output=True, text=True,
            timeout=scaled(120), check=False,
        )  # fmt: skip
        assert run.returncode == 0, (command, run.stderr[-1000:])


def test_every_llem_option_is_documented_and_every_documented_one_exists() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:benchmark"], cwd=ROOT, capture_output=True, text=True,
        timeout=scaled(120), check=False,
    )  # fmt: skip
    real = set(re.findall(r"--llem-[a-z-]+[a-z]", run.stdout))
    named = set(re.findall(r"--llem-[a-z-]+[a-z]", README))
    assert real, run.stdout[-1000:]
    assert named - real == set(), "the README names options the plugin does not have"
    assert real - named == set(), "options the README does not document"


def test_the_execution_table_names_real_keys() -> None:
    section = README.split("### `execution:` repetition and order", 1)[1].split("\n### ", 1)[0]
    keys = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    assert keys and keys == set(ExecutionConfig.model_fields)
