"""Expanding ``sweep:`` and ``experiments:`` into raw cells (before validation).

Grammar, in short (the README has the long form):

* an **axis** is a dotted path with a list of values: ``precision: [fp16, bf16]``;
* an axis under an engine's section (``transformers.batch_size``) is **engine-scoped**: it
  applies only to cells of that engine and is never crossed with another engine's axes;
* a **group** is a key whose value is a list of mappings, each an alternative set of
  overrides; ``{}`` is "no override"; a list inside an entry is a small grid of its own.
  When the key names a section (``decoding``, ``vllm``...), entry keys are relative to it;
* scopes are per **alternative**: one that names keys of an engine's section applies, with
  its shared fields, to that engine's cells only (others are not multiplied by it); one with
  no engine's keys (``{}`` included) applies to every engine; naming two engines is an error;
* ``engine`` may be a list (at the top level or as an axis): one family of cells per engine;
* ``experiments:`` adds explicit cells, deep-merged over the shared fields.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from pytest_llem.config.engines import ENGINE_NAMES
from pytest_llem.config.experiment import ExperimentConfig

Origin = tuple[str | int, ...]


@dataclass
class Override:
    """One value a cell sets, where it came from in the file, and whether it names the cell."""

    path: str  # dotted path into the experiment
    value: Any
    origin: Origin  # path of the YAML node that wrote it
    in_id: bool = True


@dataclass
class Alternative:
    """One value of an axis or one entry of a group (one point of its grid), with its scope.

    The scope is held per alternative, not per dimension, because a group may put a shared
    ``{}`` next to ``{transformers.batch_size: 4, max_output_tokens: 16}``: the second is for
    transformers cells only, shared fields included, while ``{}`` applies to every engine.
    """

    overrides: list[Override]
    scope: str | None  # engine name, or None when it applies to every engine
    origin: Origin  # the axis value or group entry that wrote it (for errors about it as a whole)


@dataclass
class Dimension:
    """An axis or a group: a list of alternatives, each a list of overrides with its own scope."""

    name: str
    alternatives: list[Alternative]

    @property
    def scope(self) -> str | None:
        """The engine every alternative that sets something belongs to; None if shared or mixed.

        A dimension with one scope is reported as a whole (``sweep.<name>: applies to vllm
        cells...``); a mixed group is judged alternative by alternative.
        """
        scopes = {alternative.scope for alternative in self.alternatives if alternative.overrides}
        return scopes.pop() if len(scopes) == 1 else None

    def alternatives_for(self, engine: str) -> list[list[Override]]:
        """The alternatives a cell of ``engine`` takes; empty when the dimension is not for it."""
        return [a.overrides for a in self.alternatives if a.scope in (None, engine)]


@dataclass
class RawCell:
    """A cell before validation: the engine, its overrides, and an explicit id if any."""

    engine: str
    overrides: list[Override] = field(default_factory=list)
    explicit_id: str | None = None
    origin: Origin = ()
    source: str = "sweep"  # "sweep", "experiments" or "single"


def set_dotted(target: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating the intermediate mappings."""
    parts = path.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursively for mappings; lists and scalars replace."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


#: Mappings whose keys are names with dots of their own (``expect: {ttft_s.p95: ...}``), kept whole.
OPAQUE_KEYS = frozenset({"expect"})


def expand_dotted_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``{'transformers.batch_size': 8}`` -> ``{'transformers': {'batch_size': 8}}``, recursively."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        opaque = key in OPAQUE_KEYS
        value = expand_dotted_keys(value) if isinstance(value, dict) and not opaque else value
        if isinstance(key, str) and "." in key:
            nested: dict[str, Any] = {}
            set_dotted(nested, key, value)
            out = deep_merge(out, nested)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _section_names() -> set[str]:
    """Experiment fields that are sections (their own models): group keys relative to them."""
    names = set()
    for name, info in ExperimentConfig.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names.add(name)
    return names


def _scope_of(path: str) -> str | None:
    """The engine whose section ``path`` is in, or None for a field every engine has."""
    head = path.split(".", 1)[0]
    return head if head in ENGINE_NAMES else None


def _label(origin: Origin) -> str:
    """``('sweep', 'variant', 1)`` -> ``sweep.variant[1]``, the name of a group entry in messages."""
    return "".join(f"[{part}]" if isinstance(part, int) else ("." if i else "") + part for i, part in enumerate(origin))


def _entry_alternatives(
    entry: dict[str, Any], prefix: str, origin: Origin, problems: list[tuple[Origin, str]]
) -> list[Alternative]:
    """A group entry's alternatives, scoped to the one engine whose section it names (if any).

    An entry naming two engines' sections could apply to no cell (a cell has one engine), so
    it is refused, at the key that brings in the second engine, naming every engine's key.
    An empty list in an entry is refused too: as a grid of no values it would silently drop the
    entry (or, alone, every cell of the study).
    """
    empty = [key for key, value in expand_flat(entry) if value == []]
    for key in empty:
        problems.append((origin + (key,), f"{_label(origin)}.{key}: expected a non-empty list of values, got []"))
    if empty:
        return []
    grid = _grid(entry, prefix, origin)
    first_key: dict[str, Override] = {}  # engine -> the first override in its section
    for override in itertools.chain.from_iterable(grid):
        scope = _scope_of(override.path)
        if scope is not None:
            first_key.setdefault(scope, override)
    if len(first_key) > 1:
        named = [f"{engine} ({override.path})" for engine, override in first_key.items()]
        second = list(first_key.values())[1]
        message = (
            f"{_label(origin)}: an alternative applies to one engine's cells, but this one names the sections"
            f" of {', '.join(named[:-1])} and {named[-1]}; write one alternative per engine"
        )
        problems.append((second.origin, message))
        return []
    scope = next(iter(first_key), None)
    return [Alternative(overrides, scope, origin) for overrides in grid]


def _grid(entry: dict[str, Any], prefix: str, origin: Origin) -> list[list[Override]]:
    """One group entry -> its alternatives (a list value inside the entry is a small grid)."""
    flat: list[tuple[str, list[Any], bool]] = []
    for key, value in expand_flat(entry):
        full = f"{prefix}.{key}" if prefix else key
        is_list = isinstance(value, list)
        flat.append((full, value if is_list else [value], is_list))
    if not flat:
        return [[]]
    combos = itertools.product(*[values for _, values, _ in flat])
    return [
        [Override(path, value, origin + (path,)) for (path, _, _), value in zip(flat, combo)]
        for combo in combos
    ]


def expand_flat(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested or dotted mapping -> ``[(dotted_path, leaf_value)]`` in declaration order."""
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and path not in OPAQUE_KEYS:
            out.extend(expand_flat(value, path))
        else:
            out.append((path, value))
    return out


def parse_sweep(sweep: Any, problems: list[tuple[Origin, str]]) -> tuple[list[Dimension], list[Any] | None]:
    """Sweep block -> dimensions in declaration order, plus the engine axis if one is swept."""
    if sweep is None:
        return [], None
    if not isinstance(sweep, dict):
        problems.append((("sweep",), f"sweep: expected a mapping of axes, got {type(sweep).__name__}"))
        return [], None
    sections = _section_names()
    dimensions: list[Dimension] = []
    engine_axis: list[Any] | None = None
    for key, values in sweep.items():
        key = str(key)
        origin: Origin = ("sweep", key)
        if not isinstance(values, list) or not values:
            problems.append((origin, f"sweep.{key}: expected a non-empty list of values, got {values!r}"))
            continue
        if key == "engine":
            engine_axis = values
            continue
        is_group = all(isinstance(v, dict) for v in values)
        if not is_group and any(isinstance(v, dict) for v in values):
            problems.append((origin, f"sweep.{key}: mixes mappings and plain values; a group is a list of mappings"))
            continue
        if not is_group:
            scope = _scope_of(key)
            axis = [Alternative([Override(key, v, origin + (i,))], scope, origin + (i,)) for i, v in enumerate(values)]
            dimensions.append(Dimension(key, axis))
            continue
        prefix = key if key in sections else ""
        alternatives: list[Alternative] = []
        for i, entry in enumerate(values):
            # An entry refused here is left out; the others still expand, so their problems show too.
            alternatives.extend(_entry_alternatives(entry, prefix, origin + (i,), problems))
        if alternatives:  # else every entry was refused (and reported): the other cells are still checked
            dimensions.append(Dimension(key, alternatives))
    return dimensions, engine_axis


def scope_problems(dimensions: list[Dimension], engines: list[str]) -> list[tuple[Origin, str]]:
    """Alternatives scoped to an engine the study does not run: they would silently never run.

    A dimension with one scope is named as a whole, at its key; in a mixed group, each such
    entry is named at its own line (once, however many grid points it has).
    """
    have = ", ".join(engines) or "none"
    out: list[tuple[Origin, str]] = []
    for dimension in dimensions:
        if dimension.scope is not None:
            if dimension.scope not in engines:
                where: Origin = ("sweep", dimension.name)
                out.append((where, f"{_label(where)}: applies to {dimension.scope} cells, but the study has no {dimension.scope} cells (engine: {have})"))
            continue
        missing = {a.origin: a.scope for a in dimension.alternatives if a.scope is not None and a.scope not in engines}
        for origin, scope in missing.items():
            out.append((origin, f"{_label(origin)}: applies to {scope} cells, but the study has no {scope} cells (engine: {have})"))
    return out


def expand_sweep(engines: list[str], dimensions: list[Dimension]) -> list[RawCell]:
    """The cells of a sweep: per engine, the product of the alternatives each dimension has for it.

    A dimension with no alternative for an engine is left out of that engine's product (its
    cells are not multiplied by it), whether it is scoped as a whole or alternative by alternative.
    """
    cells: list[RawCell] = []
    for engine in engines:
        relevant = [alternatives for d in dimensions if (alternatives := d.alternatives_for(engine))]
        for combo in itertools.product(*relevant):
            overrides = [o for alternative in combo for o in alternative]
            cells.append(RawCell(engine=engine, overrides=overrides))
    return cells


def parse_experiments(
    experiments: Any, engines: list[str], problems: list[tuple[Origin, str]]
) -> list[RawCell]:
    """Explicit cells of ``experiments:``; one that names no engine runs on each study engine."""
    if experiments is None:
        return []
    if not isinstance(experiments, list):
        problems.append((("experiments",), "experiments: expected a list of mappings"))
        return []
    cells: list[RawCell] = []
    for i, entry in enumerate(experiments):
        origin: Origin = ("experiments", i)
        if not isinstance(entry, dict):
            problems.append((origin, f"experiments[{i}]: expected a mapping of experiment fields, got {entry!r}"))
            continue
        entry = dict(entry)
        explicit_id = entry.pop("id", None)
        flat = expand_flat(expand_dotted_keys(entry))
        engine_values = [v for p, v in flat if p == "engine"]
        own_engines = [str(engine_values[0])] if engine_values else engines
        for engine in own_engines:
            overrides = [Override(p, v, origin + (p.split(".")[0],)) for p, v in flat if p != "engine"]
            cells.append(
                RawCell(
                    engine=engine,
                    overrides=overrides,
                    explicit_id=str(explicit_id) if explicit_id is not None else None,
                    origin=origin,
                    source="experiments",
                )
            )
    return cells
