"""Secret redaction: values of secret environment variables never leave the process in clear.

What counts as a secret is decided from the environment each time (the variables a run
inherits): a variable whose *name* says it is secret (``HF_TOKEN``, ``WANDB_API_KEY``,
``DB_PASSWORD``...) has a *value* worth hiding. Every way out goes through here: JSON files
(:func:`scrub`), any text (:func:`scrub_text`: logs, failure messages, the terminal), a file a
child process wrote by itself (:func:`scrub_file`: ``child.log``) and a test report
(:func:`scrub_report`: what JUnit XML, pytest-json-report and the terminal render).

Three rules keep redaction from breaking what it protects:

* A value is replaced only where it stands as a whole token: not where it is part of a longer
  word (``completed`` in ``completed_at``, ``hunter2`` in ``hunter22``).
* A value that is one of the words results are made of (a status, a verdict, an engine,
  ``true``...) is never treated as a secret. Redacting ``completed`` everywhere destroys every
  manifest, and hides nothing: the pattern of redactions would spell the password out.
* JSON keys that are field names (``snake_case``) are left alone; only data is scrubbed.

When no secret variable is set (the common case) every function returns at once.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_llem.results.atomic import write_bytes_atomic

if TYPE_CHECKING:
    import pytest

REDACTED = "<redacted>"

#: Names of secret variables. ``TOKEN`` must end the name or a ``_`` part of it: ``HF_TOKEN``,
#: ``AWS_SESSION_TOKEN``, ``HF_TOKEN_PATH``, but not ``TOKENIZERS_PARALLELISM`` (set to ``false``
#: for every cell) nor ``MAX_NEW_TOKENS`` (a number).
SECRET_NAME = re.compile(
    r"TOKEN(?=_|$)|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL",
    re.IGNORECASE,
)

#: Secrets everyone has; each is also matched by :data:`SECRET_NAME` (a test holds them together).
WELL_KNOWN_SECRETS = frozenset(
    {
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACEHUB_API_TOKEN",
        "WANDB_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "GITHUB_TOKEN",
        "GH_TOKEN",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "NGC_API_KEY",
        "PYPI_PASSWORD",
    }
)

#: Below this a value is a flag or a count (``1``, ``yes``, ``off``), not a secret: a 3-character
#: value would also match in every other line of a log. 4 still catches short PINs and the
#: throwaway passwords of test databases.
MIN_SECRET_LENGTH = 4

#: All-digit values shorter than this are settings (ports, timeouts, years), not secrets: ``2026``
#: would otherwise be cut out of every time stamp in the results.
MIN_NUMERIC_SECRET_LENGTH = 8

#: Words the results are written in (compared case-insensitively). Never secrets: see the module
#: docstring. The manifest's statuses and the verdicts' words are held in by a test.
VOCABULARY = frozenset(
    {
        # manifest statuses, pytest outcomes, limit and regression verdicts
        "pending", "running", "completed", "failed", "skipped", "passed", "pass", "fail", "error",
        "errors", "xfailed", "xpassed", "deselected", "warning", "warnings", "regressed",
        "inconclusive", "new", "missing", "unjudgeable",
        # enumerated fields of the records and the configuration
        "total", "steady_state", "windowed", "transformers", "vllm", "tensorrt", "fp32", "fp16",
        "bf16", "auto", "cuda", "cpu", "nvml", "zeus", "warn", "off", "stored", "last",
        "sequential", "interleave", "shuffle", "reverse", "latin_square",
        # how flags and absent values are spelt
        "true", "false", "none", "null", "yes", "no", "on",
    }
)  # fmt: skip

#: A JSON key the code chose (a field name), as opposed to one made of data (an id, a path).
_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def is_secret_name(name: str) -> bool:
    return name.upper() in WELL_KNOWN_SECRETS or SECRET_NAME.search(name) is not None


def _is_secret_value(value: str) -> bool:
    if len(value) < MIN_SECRET_LENGTH or value.casefold() in VOCABULARY:
        return False
    return not (value.isdigit() and len(value) < MIN_NUMERIC_SECRET_LENGTH)


def secret_values(environ: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Values of the secret variables of ``environ`` (``os.environ``), longest first."""
    items = os.environ.items() if environ is None else environ
    return _ordered(v for v in (value.strip() for name, value in items if is_secret_name(name)) if _is_secret_value(v))


def _ordered(values: Iterable[str]) -> list[str]:
    """Longest first: a secret containing another is replaced whole, not around its shorter part."""
    return sorted(set(values), key=lambda v: (-len(v), v))


def _bounded(value: str) -> str:
    """``value`` as a pattern that matches only as a whole token.

    A side of the value that is a word character must not touch another word character; a
    side that is not one (``-``, ``/``, ``=``) is a boundary already.
    """
    before = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
    after = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
    return before + re.escape(value) + after


@lru_cache(maxsize=8)
def _compile(values: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(_bounded(v) for v in values))


def secret_pattern(secrets: Iterable[str] | None = None) -> re.Pattern[str] | None:
    """The pattern matching any secret (of ``secrets``, else of the environment); None when there is none."""
    values = secret_values() if secrets is None else _ordered(s for s in secrets if _is_secret_value(s))
    return _compile(tuple(values)) if values else None


def scrub_text(text: str, pattern: re.Pattern[str] | None = None) -> str:
    """``text`` with every secret replaced by :data:`REDACTED`."""
    pattern = pattern or secret_pattern()
    return text if pattern is None else pattern.sub(REDACTED, text)


def scrub(data: Any, secrets: Iterable[str] | None = None) -> Any:
    """A copy of JSON-like ``data`` with the secrets in its strings redacted (``data`` itself when there are none).

    Keys that are field names stay as they are (the schema is not data); other keys (ids,
    paths) are scrubbed like values. Tuples become lists, as JSON writes them.
    """
    pattern = secret_pattern(secrets)
    return data if pattern is None else _scrub(data, pattern)


def _scrub(data: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(data, str):
        return pattern.sub(REDACTED, data)
    if isinstance(data, dict):
        return {
            (pattern.sub(REDACTED, k) if isinstance(k, str) and not _FIELD_NAME.fullmatch(k) else k): _scrub(v, pattern)
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [_scrub(v, pattern) for v in data]
    return data


def scrub_file(path: Path, pattern: re.Pattern[str] | None = None) -> bool:
    """Rewrite the text file ``path`` with its secrets redacted, atomically; whether it held one.

    For files written by someone else (a child's ``child.log``). Bytes that are not UTF-8 are
    kept as they are. A file that cannot be read is left alone: there is nothing to scrub in a
    log that was never written, and a failing cleanup must not hide the cell's own failure.
    """
    pattern = pattern or secret_pattern()
    if pattern is None:
        return False
    try:
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return False
    scrubbed, count = pattern.subn(REDACTED, text)
    if not count:
        return False
    try:
        write_bytes_atomic(path, scrubbed.encode("utf-8", "surrogateescape"), mode)  # as readable as it was
    except OSError:
        # A full or read-only disk: the secret must not stay on disk, and the cell's own outcome
        # must not be replaced by this error. The log goes (deleting frees space; it needs none).
        path.unlink(missing_ok=True)
    return True


def scrub_report(report: pytest.TestReport, pattern: re.Pattern[str] | None = None) -> None:
    """Redact the failure text and the captured sections of ``report``, in place.

    JUnit XML, pytest-json-report and the terminal all render these. A rich failure
    representation holding a secret becomes its scrubbed text (its layout is kept; the
    clickable location of the crash is lost, which only matters when a secret was in it).
    """
    pattern = pattern or secret_pattern()
    if pattern is None:
        return
    longrepr = report.longrepr
    if isinstance(longrepr, str):
        report.longrepr = pattern.sub(REDACTED, longrepr)
    elif isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        path, line, reason = longrepr
        report.longrepr = (pattern.sub(REDACTED, path), line, pattern.sub(REDACTED, reason))
    elif longrepr is not None:
        text = str(longrepr)
        if pattern.search(text):
            report.longrepr = pattern.sub(REDACTED, text)
    report.sections = [(title, pattern.sub(REDACTED, content)) for title, content in report.sections]
