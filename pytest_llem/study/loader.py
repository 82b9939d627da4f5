"""Reading study files: safe YAML with line numbers, and errors a person can act on.

Only safe construction is used (:class:`StudyLoader`: ``yaml.SafeLoader``'s constructor, YAML
1.2's numbers), so a study file can never build arbitrary Python objects; anchors, aliases and
merge keys (``<<: *defaults``) work as in any YAML file. The loader keeps the line of every key
so that each problem points at the place to edit.

A study file is input from anyone (a pull request, a shared directory), so reading one is
bounded before any of it is believed: at most :data:`MAX_STUDY_BYTES` of UTF-8 text, lists and
mappings nested at most :data:`MAX_DEPTH` deep, and at most :data:`MAX_VALUES` values once every
alias is expanded (an "alias bomb" of a few hundred bytes otherwise expands to billions). A
duplicate key is an error, never a silent "last one wins". Each of these is a
:class:`~pytest_llem.errors.StudyError` naming the file, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pytest_llem.errors import StudyError
from pytest_llem.naming import suggest

Path_ = tuple[str | int, ...]

#: The largest study file read: far above any real study (a few KB; a long inline prompt list
#: is a few MB), far below what would exhaust memory. Checked before parsing.
MAX_STUDY_BYTES = 10 * 1024 * 1024
#: The deepest nesting of lists and mappings, counted through aliases and merge keys. A study
#: needs about six levels; past a few hundred the parser's recursion would overflow.
MAX_DEPTH = 64
#: The most values (scalars, lists and mappings) a document may hold with every alias expanded:
#: what later steps (validation, sweeps, hashing) would otherwise walk, alias by alias.
MAX_VALUES = 1_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class PyStudyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e6`` and ``1.0e12`` as numbers, as YAML 1.2 does.

    PyYAML follows YAML 1.1, where an exponent needs a sign and a dot (``1.0e+12``); otherwise the
    value is a string, which the strict schema then refuses as "not a number" although the user
    wrote one. On PyYAML's pure-Python parser: used where libyaml is not installed.
    """


StudyLoader: type[Any] = PyStudyLoader
try:  # libyaml parses ten times faster: a 5 MB study in under a second, not twenty
    from yaml.cyaml import CSafeLoader

    class CStudyLoader(CSafeLoader):
        """The same on libyaml's parser; construction and resolution stay PyYAML's safe ones."""

    StudyLoader = CStudyLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass

_LOADERS: list[type[Any]] = list(dict.fromkeys([PyStudyLoader, StudyLoader]))
for _loader in _LOADERS:
    _loader.add_implicit_resolver(
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


@dataclass(eq=False)
class _Lines:
    """Where one node was written, and, by key or index, where each of its entries was.

    A child is ``(line, lines)``: the line of its key (or of the entry itself, in a list) and
    the child node's own ``_Lines``, shared by every alias of that node.
    """

    line: int
    children: dict[str | int, tuple[int, _Lines]] = field(default_factory=dict)


class LineMap:
    """Line (1-based) of every key and list entry of a YAML document, by path.

    Held per node, not per path: a node reached through several aliases is one entry, as it is
    one node of the document, so the map grows with the file, not with what its aliases expand to.
    """

    def __init__(self, root: _Lines | None = None) -> None:
        self._root = root

    def _find(self, path: Path_) -> tuple[int | None, bool]:
        """The line of the deepest known prefix of ``path``, and whether that prefix is all of it."""
        if self._root is None:
            return None, False
        line, lines = self._root.line, self._root
        for part in path:
            child = lines.children.get(part)
            if child is None:
                return line, False
            line, lines = child
        return line, True

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest known prefix of ``path`` (a value set by a sweep has no own line)."""
        return self._find(path)[0]

    def exact(self, path: Path_) -> int | None:
        line, whole = self._find(path)
        return line if whole else None


@dataclass
class _Shape:
    """What one node holds once its aliases are expanded; built once per node."""

    lines: _Lines
    size: int  # values, this node included, capped at MAX_VALUES + 1
    depth: int  # lists and mappings nested in it, itself included


def _line_of_mark(mark: Any) -> int:
    return int(mark.line) + 1


def _line(node: yaml.Node) -> int:
    return _line_of_mark(node.start_mark)


def _label(where: Path_) -> str:
    return dotted(where) or "<top level>"


def _refused(file: Path, message: str) -> StudyError:
    """The error of a file refused as a whole: one problem, which names the file."""
    return StudyError(str(file), [message])


def _merge_sources(value: yaml.Node) -> list[yaml.Node]:
    return list(value.value) if isinstance(value, yaml.SequenceNode) else [value]


#: Every scalar's shape: one value, no nesting, no entries (its line is its key's or entry's).
_SCALAR = _Shape(_Lines(0), 1, 0)


def _shape(node: yaml.Node, done: dict[int, _Shape]) -> _Shape:
    """A list's or mapping's shape from its children's (all already in ``done``)."""
    lines = _Lines(_line(node))
    if isinstance(node, yaml.SequenceNode):
        shapes = [done[id(item)] for item in node.value]
        for index, item in enumerate(node.value):
            lines.children[index] = (_line(item), shapes[index].lines)
    else:
        shapes = []
        merges: list[yaml.Node] = []
        for key, value in node.value:
            shapes += [done[id(key)], done[id(value)]]
            if key.tag == _MERGE_TAG:
                merges += _merge_sources(value)
            else:  # keys written here first: they override merged keys, so their lines win
                lines.children.setdefault(str(key.value), (_line(key), shapes[-1].lines))
        for source in merges:  # keys merged from an anchor (not written here) keep the anchor's lines
            for name, child in done[id(source)].lines.children.items():
                lines.children.setdefault(name, child)
    size = min(1 + sum(shape.size for shape in shapes), MAX_VALUES + 1)
    depth = 1 + max((shape.depth for shape in shapes), default=0)
    return _Shape(lines, size, depth)


def _duplicate_keys(node: yaml.MappingNode, where: Path_, loader: Any, file: Path) -> list[str]:
    """Keys written twice in one mapping, named at the second: YAML would keep the last silently.

    Keys are compared as the values they construct to (``1`` and ``0x1`` are one key); a key
    merged in with ``<<`` and then written here is an override, not a duplicate.
    """
    seen: dict[Any, int] = {}
    out: list[str] = []
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue
        try:
            key = loader.construct_object(key_node)
            hash(key)
        except (yaml.YAMLError, TypeError):  # refused, with its line, when the document is constructed
            continue
        line = _line(key_node)
        if key in seen:
            out.append(
                f"{file}:{line}: {dotted(where + (str(key_node.value),))}: duplicate key {key_node.value!r}, already"
                f" set on line {seen[key]}; a key may appear once in a mapping (the later value would silently win)"
            )
        else:
            seen[key] = line
    return out


#: Keys whose entries are names with dots of their own (``expect: {ttft_s.p95: ...}``), never split.
_OPAQUE_KEYS = frozenset({"expect"})


class _Budget:
    """Nested mappings the duplicate check of dotted keys may still walk in one document.

    Mappings nested in mappings that each hold a dotted key are walked once per such mapping;
    the budget keeps that linear in the bounded document (past it, the check stops).
    """

    def __init__(self) -> None:
        self.left = MAX_VALUES

    def spend(self, count: int) -> bool:
        self.left -= count
        return self.left >= 0


def _leaves(
    pairs: list[tuple[yaml.Node, yaml.Node]], prefix: tuple[str, ...], split: bool, budget: _Budget
) -> list[tuple[tuple[str, ...], int]]:
    """Each value a mapping sets, as (path with dotted keys split, line of its key), in file order."""
    out: list[tuple[tuple[str, ...], int]] = []
    if not budget.spend(len(pairs)):
        return out
    for key, value in pairs:
        if key.tag == _MERGE_TAG or not isinstance(key, yaml.ScalarNode):
            continue
        path = prefix + (tuple(str(key.value).split(".")) if split else (str(key.value),))
        if isinstance(value, yaml.MappingNode):
            inside = _leaves(value.value, path, split and path[-1] not in _OPAQUE_KEYS, budget)
            out += [(leaf, _line(key)) for leaf, _ in inside]
        else:
            out.append((path, _line(key)))
    return out


def _dotted_duplicates(node: yaml.MappingNode, where: Path_, file: Path, budget: _Budget) -> list[str]:
    """A value set twice through dotted keys: ``transformers.batch_size: 4`` beside ``transformers: {batch_size: 8}``.

    Dotted keys are shorthand for nesting, so these are one key written twice, and one would
    silently win. Keys that only share a section (``transformers.use_cache`` beside
    ``transformers: {batch_size: 8}``) are merged, and are not duplicates. Only called on a
    document already within MAX_DEPTH and MAX_VALUES and free of cycles.
    """
    leaves: dict[tuple[str, ...], tuple[int, str]] = {}
    inner: dict[tuple[str, ...], tuple[int, str]] = {}
    out: list[str] = []
    for pair in node.value:
        name = str(pair[0].value)
        for path, line in _leaves([pair], (), True, budget):
            clash = leaves.get(path) or inner.get(path)
            clash = clash or next((leaves[path[:i]] for i in range(1, len(path)) if path[:i] in leaves), None)
            if clash is not None and clash[1] != name:
                out.append(
                    f"{file}:{line}: {dotted(where + path)}: duplicate key, already set on line {clash[0]} (as {clash[1]!r});"
                    " a key may appear once in a mapping, dotted or nested (the later value would silently win)"
                )
            leaves.setdefault(path, (line, name))
            for i in range(1, len(path)):
                inner.setdefault(path[:i], (line, name))
    return out


def _analyse(root: yaml.Node, loader: Any, file: Path) -> LineMap:
    """Line map, duplicate keys and the bounds of the document with its aliases expanded.

    One iterative pass that visits each node once (aliases share nodes), so neither an alias
    bomb nor a long chain of aliases costs more than the file's size, and no recursion limit
    is reached; a node that contains itself (``&a [*a]``) is refused, as it has no end.
    """
    done: dict[int, _Shape] = {}
    open_nodes: set[int] = set()  # started and not finished: the ancestors of the current node
    duplicates: list[str] = []
    dotted_keys: list[tuple[yaml.MappingNode, Path_]] = []
    aliased = False
    stack: list[tuple[yaml.Node, Path_, bool]] = [(root, (), False)]
    while stack:
        node, where, finished = stack.pop()
        if finished:
            shape = done[id(node)] = _shape(node, done)
            open_nodes.discard(id(node))
            through = " with its aliases expanded" if aliased else ""
            if shape.depth > MAX_DEPTH:
                raise _refused(
                    file,
                    f"{file}:{_line(node)}: {_label(where)}: lists and mappings nested more than {MAX_DEPTH} deep{through};"
                    " a study needs only a few levels"
                )
            if shape.size > MAX_VALUES:
                raise _refused(
                    file,
                    f"{file}:{_line(node)}: {_label(where)}: holds more than {MAX_VALUES:,} values{through}, the most a"
                    " study may hold" + (" (an alias bomb?)" if aliased else "")
                )
            continue
        if id(node) in done:
            aliased = True
            continue
        if isinstance(node, yaml.ScalarNode):  # the root
            done[id(node)] = _SCALAR
            continue
        if id(node) in open_nodes:
            raise _refused(
                file,
                f"{file}:{_line(node)}: {_label(where)}: an alias refers to the list or mapping (anchored on line"
                f" {_line(node)}) that holds it; a recursive alias has no end"
            )
        open_nodes.add(id(node))
        stack.append((node, where, True))
        children: list[tuple[yaml.Node, Path_]] = []
        if isinstance(node, yaml.MappingNode):
            duplicates += _duplicate_keys(node, where, loader, file)
            if (not where or where[-1] not in _OPAQUE_KEYS) and any("." in str(key.value) for key, _ in node.value):
                dotted_keys.append((node, where))
            for key, value in node.value:
                child_path = where if key.tag == _MERGE_TAG else where + (str(key.value),)
                children += [(key, child_path), (value, child_path)]
        else:
            children = [(item, where + (index,)) for index, item in enumerate(node.value)]
        for child, child_path in reversed(children):  # reversed: visited in file order
            if isinstance(child, yaml.ScalarNode):  # a leaf needs no second visit
                aliased = aliased or id(child) in done
                done[id(child)] = _SCALAR
            else:
                stack.append((child, child_path, False))
    budget = _Budget()
    for node, where in dotted_keys:  # after the bounds: a walk of nested mappings is bounded by then
        duplicates += _dotted_duplicates(node, where, file, budget)
    if duplicates:
        raise StudyError(str(file), duplicates)
    return LineMap(done[id(root)].lines)


def _read(path: Path) -> str:
    """The file's text, at most MAX_STUDY_BYTES of it, decoded as UTF-8."""
    try:
        with path.open("rb") as stream:  # bounded: a device or a huge file is never read whole
            raw = stream.read(MAX_STUDY_BYTES + 1)
    except OSError as exc:
        raise StudyError(str(path), [f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_STUDY_BYTES:
        raise _refused(
            path,
            f"{path}: the file is larger than {MAX_STUDY_BYTES // 2**20} MB ({MAX_STUDY_BYTES:,} bytes), the most a study"
            " file may be; put long prompt lists in a dataset file (dataset.source)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise _refused(
            path,
            f"{path}:{line}: the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} (column {column}, byte {exc.start}"
            " of the file) cannot be decoded; save the file as UTF-8"
        ) from None


def _check_nesting(text: str, file: Path) -> None:
    """Refuse deep nesting before composing, whose recursion it would overflow (events are flat)."""
    parser = StudyLoader(text)
    depth = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _refused(
                        file,
                        f"{file}:{_line_of_mark(event.start_mark)}: lists and mappings nested more than {MAX_DEPTH}"
                        " deep; a study needs only a few levels"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        parser.dispose()


def _yaml_problem(exc: yaml.YAMLError, text: str, file: Path) -> str:
    """``file:line: invalid YAML: what``, from either parser's error."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (a control character)
        at = text.find(chr(exc.character)) if isinstance(exc.character, int) else -1
        where = f"{file}:{text.count(chr(10), 0, at) + 1}" if at >= 0 else str(file)
        code = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return f"{where}: invalid YAML: unacceptable character {code}: {exc.reason}"
    where = f"{file}:{_line_of_mark(mark)}" if mark is not None else str(file)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}: invalid YAML: {problem}"


def load_study_yaml(path: Path) -> tuple[dict[str, Any], LineMap]:
    """Parse a study file safely and within bounds; raise :class:`StudyError` on any problem of it."""
    text = _read(path)
    try:
        _check_nesting(text, path)
        loader = StudyLoader(text)
        try:
            node = loader.get_single_node()
            lines = _analyse(node, loader, path) if node is not None else LineMap()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise StudyError(str(path), [_yaml_problem(exc, text, path)]) from None
    if data is None:
        raise StudyError(str(path), [f"{path}: the file is empty; a study needs at least a model"])
    if not isinstance(data, dict):
        raise StudyError(
            str(path), [f"{path}:1: the top level must be a mapping of keys, got {type(data).__name__}"]
        )
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
