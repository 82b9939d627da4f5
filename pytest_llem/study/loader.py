"""Reading study files: safe YAML with line numbers, and errors a person can act on.

Only ``yaml.SafeLoader`` is used (:class:`StudyLoader`, which adds YAML 1.2's numbers), so a study file can never build arbitrary Python objects;
anchors, aliases and merge keys (``<<: *defaults``) work as in any YAML file. The loader keeps
the line of every key so that each problem points at the place to edit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pytest_llem.errors import StudyError
from pytest_llem.naming import suggest

Path_ = tuple[str | int, ...]


class StudyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e6`` and ``1.0e12`` as numbers, as YAML 1.2 does.

    PyYAML follows YAML 1.1, where an exponent needs a sign and a dot (``1.0e+12``); otherwise the
    value is a string, which the strict schema then refuses as "not a number" although the user
    wrote one.
    """


StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


class LineMap:
    """Line (1-based) of every key and list entry of a YAML document, by path."""

    def __init__(self) -> None:
        self._lines: dict[Path_, int] = {}

    def add(self, path: Path_, line: int) -> None:
        self._lines.setdefault(path, line)

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest known prefix of ``path`` (a value set by a sweep has no own line)."""
        for end in range(len(path), -1, -1):
            line = self._lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def exact(self, path: Path_) -> int | None:
        return self._lines.get(path)


def _walk(node: yaml.Node, path: Path_, lines: LineMap) -> None:
    lines.add(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        # Keys written in the mapping first: they override merged keys, so their lines win.
        pairs = sorted(node.value, key=lambda pair: pair[0].tag == "tag:yaml.org,2002:merge")
        for key_node, value_node in pairs:
            if key_node.tag == "tag:yaml.org,2002:merge":
                # Keys merged from an anchor (and not written here) are attributed to the anchor's lines.
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in merged:
                    _walk(source, path, lines)
                continue
            key = str(key_node.value)
            lines.add(path + (key,), key_node.start_mark.line + 1)
            _walk(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines)


def load_study_yaml(path: Path) -> tuple[dict[str, Any], LineMap]:
    """Parse a study file safely; raise :class:`StudyError` on unreadable or non-mapping YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(str(path), [f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    lines = LineMap()
    try:
        node = yaml.compose(text, Loader=StudyLoader)
        data = yaml.load(text, Loader=StudyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise StudyError(str(path), [f"{where}: invalid YAML: {problem}"]) from None
    if data is None:
        raise StudyError(str(path), [f"{path}: the file is empty; a study needs at least a model"])
    if not isinstance(data, dict):
        raise StudyError(
            str(path), [f"{path}:1: the top level must be a mapping of keys, got {type(data).__name__}"]
        )
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def dotted(loc: Path_) -> str:
    """``('sweep', 'transformers.batch_size', 1)`` -> ``sweep.transformers.batch_size[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _model_at(model: type[BaseModel], loc: Path_) -> type[BaseModel] | None:
    """The pydantic model that owns the keys at ``loc`` (for did-you-mean suggestions)."""
    current: type[BaseModel] = model
    for part in loc:
        if not isinstance(part, str) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        current = nested[0]
    return current


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_error(
    error: ErrorDetails,
    *,
    file: Path,
    lines: LineMap,
    root_model: type[BaseModel],
    loc_prefix: Path_ = (),
    source_path: Path_ | None = None,
) -> str:
    """One pydantic error as ``file:line: key.path: what is wrong (got X)``.

    ``loc_prefix`` places the error within the document (e.g. ``('execution',)``);
    ``source_path`` is where in the document the offending value was written, when that differs
    from the key path (a value coming from a sweep axis).
    """
    loc: Path_ = tuple(error["loc"])
    key_path = loc_prefix + loc
    line = lines.line_of(source_path if source_path is not None else key_path)
    where = f"{file}:{line}" if line is not None else str(file)
    if error["type"] == "extra_forbidden":
        owner = _model_at(root_model, loc[:-1])
        hint = suggest(str(loc[-1]), sorted(owner.model_fields)) if owner is not None else ""
        allowed = f"; allowed here: {', '.join(sorted(owner.model_fields))}" if owner is not None else ""
        return f"{where}: {dotted(key_path)}: unknown key{hint}{allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":  # a bad mapping key: point at the key itself
        loc = loc[:-1]
        key_path = loc_prefix + loc
        line = lines.line_of(source_path if source_path is not None else key_path)
        where = f"{file}:{line}" if line is not None else str(file)
        return f"{where}: {dotted(key_path)}: {message}"
    if error["type"] == "literal_error":
        message = f"expected {message.removeprefix('Input should be ')}"
    got = "" if error["type"] == "missing" else f" (got {_short(error.get('input'))})"
    label = dotted(key_path) or "<top level>"
    return f"{where}: {label}: {message}{got}"


def validation_problems(
    exc: ValidationError,
    *,
    file: Path,
    lines: LineMap,
    root_model: type[BaseModel],
    loc_prefix: Path_ = (),
) -> list[str]:
    """Every error of a validation, formatted, in the order pydantic found them."""
    return [
        format_error(err, file=file, lines=lines, root_model=root_model, loc_prefix=loc_prefix)
        for err in exc.errors(include_url=False)
    ]
