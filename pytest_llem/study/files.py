"""Which files are studies. Import-light: the pytest11 entry point asks it about every file."""

from __future__ import annotations

from pathlib import Path

#: The endings that make a YAML file a study (``pytest`` collects them).
STUDY_SUFFIXES: tuple[str, ...] = (".llem.yaml", ".llem.yml")


def is_study_file(path: str | Path) -> bool:
    """Whether ``path`` (a path, or a pytest argument such as ``file.llem.yaml::cell``) names a study."""
    return str(path).split("::")[0].endswith(STUDY_SUFFIXES)
