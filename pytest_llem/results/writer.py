"""Writing results safely: atomic files, contained directory names, no secrets.

Every file is written to a temporary sibling and moved into place with ``os.replace``, so a
reader (or a crash) never sees half a file. Directory names built from model names are
sanitised and checked to stay inside the results directory. Values of secret-looking
environment variables (tokens, keys, passwords) are redacted from JSON before it is written
(see results/redaction.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_llem.naming import sanitise
from pytest_llem.results import redaction
from pytest_llem.results.atomic import write_text_atomic

# Redaction lives in results/redaction.py; these names stay importable from here.
REDACTED = redaction.REDACTED
_SECRET_NAME = redaction.SECRET_NAME
secret_values = redaction.secret_values
scrub = redaction.scrub


def _unserialisable(data: Any, where: str = "$") -> tuple[str, Any] | None:
    """The first value in ``data`` that JSON cannot hold, with its key path, or None."""
    if data is None or isinstance(data, (str, int, float, bool)):
        return None
    if isinstance(data, dict):
        for key, value in data.items():
            if not (key is None or isinstance(key, (str, int, float, bool))):
                return f"{where} (a key)", key
            found = _unserialisable(value, f"{where}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            found = _unserialisable(value, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    return where, data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically, secrets scrubbed.

    A value JSON cannot hold (a ``Path``, a ``datetime``, an enum, a model) raises
    ``TypeError`` naming its key path, and nothing is written: turning it into its ``str`` would
    store a figure as text, or a repr no reader can parse, without anyone noticing. The code
    that produces such a value converts it.
    """
    try:
        text = json.dumps(scrub(data), indent=2, sort_keys=False)
    except TypeError as exc:
        found = _unserialisable(data)
        if found is None:
            raise
        where, value = found
        raise TypeError(f"{path.name}: {where} is a {type(value).__name__}, which JSON cannot hold: {value!r}") from exc
    write_text_atomic(path, text + "\n")


def utc_stamp(moment: datetime | None = None) -> str:
    """``2026-05-07T14-32-08``: sortable, and valid in file names on every platform."""
    return (moment or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H-%M-%S")


def utc_iso(moment: datetime | None = None, precise: bool = False) -> str:
    """UTC in ISO 8601, to the second (to the millisecond with ``precise``: cells of parallel workers)."""
    return (moment or datetime.now(timezone.utc)).isoformat(timespec="milliseconds" if precise else "seconds")


def contained(root: Path, name: str) -> Path:
    """``root / name``, refusing any name that would leave ``root``."""
    candidate = (root / name).resolve()
    if candidate.parent != root.resolve() or name in ("", ".", ".."):
        raise ValueError(f"refusing a results directory name that leaves {root}: {name!r}")
    return candidate


def study_dir_name(study_name: str, stamp: str) -> str:
    return f"{sanitise(study_name)[:80]}_{stamp}"


def cell_dir_name(position: int, cycle_name: str, model: str, engine: str, config_hash: str, width: int = 3) -> str:
    """``001_c0_<model>-<engine>_<hash>``: sorts in run order; sibling cycles share the tail."""
    model_part = sanitise(model.rstrip("/\\"))[-60:].strip("._-") or "model"
    return f"{position:0{width}d}_{cycle_name}_{model_part}-{sanitise(engine)}_{config_hash}"


#: Inside a study directory: which session made it (several processes of one session share it).
SESSION_CLAIM = "_study-artefacts/session"


def make_study_dir(results_root: Path, study_name: str, stamp: str, session_id: str) -> Path:
    """Create the study's directory for ``session_id``, or open the one that session already made.

    Several processes of one session (pytest-xdist workers, given one stamp and one session id
    by the controller) share a directory; another session never does, even one started in the
    same second: it gets a suffix. The directory appears already holding its claim (made under
    a temporary name, then renamed into place, which is atomic and fails if the name is taken),
    so a process that finds the name taken can always tell whose it is.
    """
    results_root.mkdir(parents=True, exist_ok=True)
    base = study_dir_name(study_name, stamp)
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{base}-{attempt}"
        path = contained(results_root, name)
        if not path.exists() and _claim(path, session_id):
            return path
        if _owner(path) == session_id:
            return path
    raise FileExistsError(f"cannot create a fresh study directory under {results_root}")


def _claim(path: Path, session_id: str) -> bool:
    """Make ``path`` holding this session's claim; False when another process took the name first."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".new", dir=path.parent))
    try:
        claim = staging / SESSION_CLAIM
        claim.parent.mkdir(parents=True)
        claim.write_text(session_id + "\n", encoding="utf-8")
    except BaseException:  # a full or read-only disk: no staging directory is left behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.rename(staging, path)
        return True
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False  # the name exists now: someone else's, or our session's
        raise


def _owner(path: Path) -> str | None:
    """The session that made the study directory ``path`` (None for one made before claims existed)."""
    try:
        return (path / SESSION_CLAIM).read_text(encoding="utf-8").strip()
    except OSError:
        return None
