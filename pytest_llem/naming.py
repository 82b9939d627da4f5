"""Text that becomes a name: safe path and id pieces, and did-you-mean hints.

At the bottom of the house: ids, directory names, cache keys and error messages in every
layer use these, so a name is made safe in one way only and a hint reads the same everywhere.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^\w.+-]+")


def sanitise(text: str) -> str:
    """Make ``text`` safe for node ids and file names (``org/model`` -> ``org--model``)."""
    text = text.replace("\\", "/").replace("/", "--")
    text = _UNSAFE.sub("_", text)
    text = text.replace("..", "_")  # never a relative-path component, even inside a name
    return text.strip("._-") or "x"


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice most like ``word``, or None when none is close enough."""
    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def suggest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean 'batch_size'?)`` or an empty string."""
    near = closest(word, choices, cutoff)
    return f" (did you mean '{near}'?)" if near else ""
