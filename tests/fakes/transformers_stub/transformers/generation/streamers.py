"""The stub's ``BaseStreamer``: generate() calls put() with the prompt, then once per step."""

from __future__ import annotations

from typing import Any


class BaseStreamer:
    def put(self, value: Any) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError
