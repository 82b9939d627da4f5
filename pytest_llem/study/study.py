"""A study file, loaded: validated configurations with ids, hashes and a run order.

:func:`load_study` is the one entry point. It reports every problem of a file at once, as a
:class:`~pytest_llem.errors.StudyError`, and never half-loads a study: either every
configuration has a valid config (or a reason to be skipped), or nothing runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pytest_llem.config.base import INVALID_COMBINATION
from pytest_llem.config.engines import ENGINE_NAMES
from pytest_llem.config.experiment import ExperimentConfig
from pytest_llem.errors import StudyError
from pytest_llem.naming import sanitise, suggest
from pytest_llem.results.redaction import scrub_text, secret_pattern
from pytest_llem.study import ids
from pytest_llem.study.hashing import design_hash_of, measurement_json, text_digest16
from pytest_llem.study.loader import (
    LineMap,
    Path_,
    format_error,
    load_study_yaml,
    validation_problems,
)
from pytest_llem.study.ordering import run_order
from pytest_llem.study.schema import STUDY_ONLY_KEYS, ExecutionConfig, ReportSettings, StudyDocument
from pytest_llem.study.sweep import (
    Override,
    RawCell,
    deep_merge,
    expand_dotted_keys,
    expand_flat,
    expand_sweep,
    parse_experiments,
    parse_sweep,
    scope_problems,
    set_dotted,
)

#: Above this many cells (configurations x cycles) a study is probably a mistake: warn.
LARGE_STUDY_CELLS = 2000


@dataclass
class Configuration:
    """One swept configuration of a study; it runs once per cycle."""

    index: int  # declaration order
    config_id: str
    engine: str
    raw: dict[str, Any]
    config: ExperimentConfig | None
    skip_reason: str | None
    swept: dict[str, Any]  # the values that distinguish it (dotted path -> value)
    line: int  # 1-based line of the YAML that defines it
    config_hash: str | None
    expect_lines: dict[str, int] = field(default_factory=dict)  # line of each `expect:` limit

    @property
    def runnable(self) -> bool:
        return self.config is not None and self.skip_reason is None


@dataclass
class Study:
    path: Path
    name: str
    execution: ExecutionConfig
    configurations: list[Configuration]
    design_hash: str
    warnings: list[str] = field(default_factory=list)
    report: ReportSettings = field(default_factory=ReportSettings)
    _order: list[tuple[Configuration, int]] | None = field(default=None, init=False, repr=False, compare=False)
    _positions: dict[tuple[int, int], int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def cycle_width(self) -> int:
        # Wide enough for adaptive cycles too, so cells' names sort in cycle order.
        return len(str(max(self.execution.cycle_cap - 1, 0)))

    def cycle_name(self, cycle: int) -> str:
        return f"c{cycle:0{self.cycle_width}d}"

    def run_order(self) -> list[tuple[Configuration, int]]:
        """Every planned (configuration, cycle) pair in the order the study asks for.

        Computed once per study and kept: each configuration's collector asks for its cells'
        places, and recomputing the whole order for each made collection quadratic (a 5,000-cell
        sweep took minutes). A loaded study is not changed afterwards, so the cache cannot go stale.
        """
        if self._order is None:
            ex = self.execution
            pairs = run_order(len(self.configurations), ex.n_cycles, ex.experiment_order, ex.shuffle_seed)
            self._order = [(self.configurations[i], k) for i, k in pairs]
        return self._order

    def position(self, configuration: Configuration, cycle: int) -> int:
        """The 1-based place of a planned cell in :meth:`run_order` (one dict lookup, once built)."""
        if self._positions is None:
            self._positions = {(c.index, k): i for i, (c, k) in enumerate(self.run_order(), start=1)}
        return self._positions[(configuration.index, cycle)]

    @property
    def runnable(self) -> list[Configuration]:
        return [c for c in self.configurations if c.runnable]


def is_anchor_key(key: object) -> bool:
    """Top-level keys starting with ``x-`` or ``_`` only hold YAML anchors; they are not fields."""
    return isinstance(key, str) and (key.startswith(("x-", "_")))


def default_study_name(path: Path) -> str:
    name = path.name
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    return sanitise(name.removesuffix(".llem"))


def _engines(shared: dict[str, Any], engine_axis: list[Any] | None, problems: list[tuple[Path_, str]]) -> list[str]:
    declared = shared.pop("engine", "transformers")
    if isinstance(declared, list) and not declared:
        problems.append((("engine",), "engine: expected an engine name or a non-empty list of them, got []"))
    if engine_axis is not None:
        if isinstance(declared, list):
            problems.append((("sweep", "engine"), "engine is both a top-level list and a sweep axis; keep one"))
        declared = engine_axis
    names = declared if isinstance(declared, list) else [declared]
    engines: list[str] = []
    for name in names:
        if name not in ENGINE_NAMES:
            where: Path_ = ("sweep", "engine") if engine_axis is not None else ("engine",)
            problems.append((where, f"engine: unknown engine {name!r}{suggest(str(name), list(ENGINE_NAMES))}; expected one of {', '.join(ENGINE_NAMES)}"))
        elif name not in engines:
            engines.append(str(name))
    return engines


def _source_of(loc: Path_, overrides: list[Override]) -> Path_ | None:
    """Where in the file the value behind error location ``loc`` was written."""
    dotted_loc = ".".join(str(p) for p in loc)
    for override in reversed(overrides):
        if dotted_loc == override.path or dotted_loc.startswith(override.path + ".") or override.path.startswith(dotted_loc + "."):
            return override.origin
    return None


def _expect_lines(config: ExperimentConfig | None, cell: RawCell, lines: LineMap) -> dict[str, int]:
    """Where each limit of a configuration was written: its override, or the shared ``expect:``."""
    if config is None:
        return {}
    out: dict[str, int] = {}
    for metric in config.expect:
        origin = next((o.origin for o in reversed(cell.overrides) if o.path.startswith(f"expect.{metric}")), None)
        line = lines.line_of(origin) if origin is not None else lines.line_of(("expect", metric))
        out[metric] = line or 1
    return out


def _flat_lookup(data: dict[str, Any]) -> dict[str, Any]:
    return dict(expand_flat(data))


def _config_id(
    cell: RawCell, engines: list[str], template: str | None, lookup: dict[str, Any] | None, model: str,
    secrets: re.Pattern[str] | None = None,
) -> str:  # fmt: skip
    """The configuration's id; a secret's value in it is redacted before the text is made safe."""

    def clean(value: Any) -> Any:
        return scrub_text(value, secrets) if secrets is not None and isinstance(value, str) else value

    if cell.explicit_id:
        return sanitise(clean(cell.explicit_id))
    if template and lookup is not None:
        return ids.render_template(template, {k: clean(v) for k, v in lookup.items()} if secrets else lookup)
    pieces = [cell.engine] if len(engines) > 1 else []
    pieces += [ids.id_piece(o.path, clean(o.value)) for o in cell.overrides if o.in_id]
    if not pieces or (len(pieces) == 1 and len(engines) > 1 and not cell.overrides):
        pieces = [sanitise(clean(model).rstrip("/").rsplit("/", 1)[-1]), cell.engine]
    return ids.join_pieces(pieces)


def _line_key(problem: str, path: Path) -> int:
    """Problems are listed in file order: the line after ``file:`` (0 when there is none)."""
    head = problem[len(str(path)) + 1 :].split(":", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass
class _Problems:
    """Every problem of one file, gathered so that all of them are reported at once.

    ``located`` are messages whose line is looked up from a document path at the end;
    ``formatted`` are already ``file:line: ...`` (from pydantic errors).
    """

    path: Path
    lines: LineMap
    located: list[tuple[Path_, str]] = field(default_factory=list)
    formatted: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        out = []
        for where, message in self.located:
            line = self.lines.line_of(where)
            out.append(f"{self.path}:{line}: {message}" if line is not None else f"{self.path}: {message}")
        return sorted(dict.fromkeys(out + self.formatted), key=lambda p: _line_key(p, self.path))


def _report_settings(data: dict[str, Any], problems: _Problems) -> ReportSettings:
    """The ``report`` block (its query's grammar is checked where the study is collected: nodes.py)."""
    try:
        return ReportSettings.model_validate({} if data.get("report") is None else data["report"])
    except ValidationError as exc:
        problems.formatted += validation_problems(
            exc, file=problems.path, lines=problems.lines, root_model=ReportSettings, loc_prefix=("report",)
        )
        return ReportSettings()


def _header(data: dict[str, Any], problems: _Problems) -> tuple[ExecutionConfig, str | None, str | None]:
    """The study-only keys: ``execution``, ``name`` and the ``id`` template."""
    try:
        execution = ExecutionConfig.model_validate({} if data.get("execution") is None else data["execution"])
    except ValidationError as exc:
        problems.formatted += validation_problems(
            exc, file=problems.path, lines=problems.lines, root_model=ExecutionConfig, loc_prefix=("execution",)
        )
        execution = ExecutionConfig()
    name = data.get("name")
    template = data.get("id")
    if name is not None and not isinstance(name, str):
        problems.located.append((("name",), f"name: expected a string, got {name!r}"))
        name = None
    if template is not None and not isinstance(template, str):
        problems.located.append((("id",), f"id: expected a template string such as '{{engine}}-bs{{transformers.batch_size}}', got {template!r}"))
        template = None
    return execution, name, template


@dataclass
class _Cells:
    """The sweep expanded: shared fields, the study's engines, and one raw cell per configuration."""

    shared: dict[str, Any]
    engines: list[str]
    raw: list[RawCell]
    swept: bool
    #: Values of secret environment variables: never part of an id, which is printed and a path.
    secrets: re.Pattern[str] | None = None


def _expand(data: dict[str, Any], problems: _Problems) -> _Cells:
    """Shared fields, engines, sweep axes and explicit experiments, as raw cells in declaration order."""
    shared = expand_dotted_keys({k: v for k, v in data.items() if k not in STUDY_ONLY_KEYS and not is_anchor_key(k)})
    dimensions, engine_axis = parse_sweep(data.get("sweep"), problems.located)
    engines = _engines(shared, engine_axis, problems.located)
    problems.located += scope_problems(dimensions, engines)
    # With no valid engine (already reported), still validate the other fields: every problem at once.
    cell_engines = engines or [ENGINE_NAMES[0]]
    explicit = parse_experiments(data.get("experiments"), cell_engines, problems.located)
    swept = bool(dimensions) or engine_axis is not None
    raw_cells = expand_sweep(cell_engines, dimensions) if (swept or not explicit) else []
    return _Cells(shared, engines, raw_cells + explicit, swept)


def _validate_cell(cell: RawCell, merged: dict[str, Any], problems: _Problems) -> tuple[ExperimentConfig | None, str | None]:
    """The cell's config, or why it is skipped (an invalid combination); other errors are the file's."""
    try:
        return ExperimentConfig.model_validate(merged), None
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    combos = [e for e in errors if e["type"] == INVALID_COMBINATION]
    others = [e for e in errors if e["type"] != INVALID_COMBINATION]
    for error in others:
        loc = tuple(error["loc"])
        origin = _source_of(loc, cell.overrides)
        if origin is None and cell.source == "experiments" and problems.lines.exact(cell.origin + loc) is not None:
            origin = cell.origin + loc
        # Otherwise the value is a shared field, written at the top level next to the study keys.
        root = ExperimentConfig if origin is not None else StudyDocument
        problems.formatted.append(format_error(error, file=problems.path, lines=problems.lines, root_model=root, source_path=origin))
    return None, ("; ".join(e["msg"] for e in combos) if not others else None)


def _template_lookup(config: ExperimentConfig | None, merged: dict[str, Any]) -> dict[str, Any]:
    """Every field of a configuration by dotted path, for an ``id:`` template."""
    if config is not None:
        return _flat_lookup(config.model_dump(mode="json"))
    # A skipped cell: its values over the defaults, so an id template still finds every field.
    return _flat_lookup(deep_merge(ExperimentConfig.model_validate({}).model_dump(mode="json"), merged))


@dataclass
class _Loaded:
    """One configuration, with what the study-level steps need of it."""

    configuration: Configuration
    template: str | None  # the id template still in use (dropped once it names an unknown field)
    measurement_json: str | None  # its hashed text, reused for the study's design hash


def _configuration(index: int, cell: RawCell, cells: _Cells, template: str | None, problems: _Problems) -> _Loaded:
    """One configuration of the study.

    Runs once per configuration of a sweep that may have 100,000 of them, so each step is done
    once: the config is dumped for the id only when a template needs its fields, and hashed
    from one canonical text that the design hash reuses.
    """
    merged = deep_merge(cells.shared, {"engine": cell.engine})
    for override in cell.overrides:
        set_dotted(merged, override.path, override.value)
    config, skip_reason = _validate_cell(cell, merged, problems)
    lookup = _template_lookup(config, merged) if template else None
    if template and lookup is not None:
        missing = [f for f in ids.template_fields(template) if f.strip() not in lookup]
        for field_name in missing:
            problems.located.append((("id",), f"id: template field {{{field_name}}} is not an experiment field{suggest(field_name, sorted(lookup))}"))
        if missing:
            template = None
    config_id = _config_id(cell, cells.engines, template, lookup, str(merged.get("model", "model")), cells.secrets)
    text = measurement_json(config) if config is not None else None
    first_origin = cell.overrides[0].origin if cell.overrides else (cell.origin or (("sweep",) if cells.swept else ()))
    configuration = Configuration(
        index=index,
        config_id=config_id,
        engine=cell.engine,
        raw=merged,
        config=config,
        skip_reason=skip_reason,
        swept={**({"engine": cell.engine} if len(cells.engines) > 1 else {}), **{o.path: o.value for o in cell.overrides if o.in_id}},
        line=problems.lines.line_of(first_origin) or 1,
        config_hash=text_digest16(text) if text is not None else None,
        expect_lines=_expect_lines(config, cell, problems.lines),
    )
    return _Loaded(configuration, template, text if configuration.runnable else None)


def _duplicate_ids(configurations: list[Configuration], path: Path) -> list[str]:
    """Two cells with one id is an error of the file, listing the clashing cells: never silent suffixes."""
    by_id: dict[str, list[Configuration]] = {}
    for configuration in configurations:
        by_id.setdefault(configuration.config_id, []).append(configuration)
    out = []
    for config_id, clashing in by_id.items():
        if len(clashing) > 1:
            described = "; ".join(
                f"line {c.line}: " + (", ".join(f"{k}={v!r}" for k, v in c.swept.items()) or "(shared fields only)")
                for c in clashing
            )
            out.append(
                f"{path}:{clashing[0].line}: duplicate cell id {config_id!r} for {len(clashing)} cells ({described});"
                " give them distinct `id:` values or an `id:` template"
            )
    return out


def load_study(path: str | Path) -> Study:
    """Load, expand and validate a study file; raise :class:`StudyError` listing every problem.

    The phases: read the YAML with its line map, the study-only header, the sweep expanded to
    raw cells, each cell validated into a :class:`Configuration`, ids checked for clashes; then
    either every problem at once, or the study.
    """
    path = Path(path)
    data, lines = load_study_yaml(path)
    problems = _Problems(path, lines)
    execution, name, template = _header(data, problems)
    report = _report_settings(data, problems)
    cells = _expand(data, problems)
    cells.secrets = secret_pattern()
    configurations: list[Configuration] = []
    measured: list[str] = []  # the runnable configurations' hashed texts, in declaration order
    for index, cell in enumerate(cells.raw):
        loaded = _configuration(index, cell, cells, template, problems)
        template = loaded.template
        configurations.append(loaded.configuration)
        if loaded.measurement_json is not None:
            measured.append(loaded.measurement_json)
    problems.formatted += _duplicate_ids(configurations, path)
    if found := problems.all():
        raise StudyError(str(path), found)
    if configurations and not any(c.runnable for c in configurations):
        reasons = sorted({c.skip_reason or "" for c in configurations})
        raise StudyError(str(path), [f"{path}: every cell of the study is an invalid combination: " + " | ".join(reasons)])

    study = Study(
        path=path,
        name=name or default_study_name(path),
        execution=execution,
        configurations=configurations,
        design_hash=design_hash_of(measured),
        report=report,
    )
    n_cells = len(configurations) * execution.n_cycles
    if n_cells > LARGE_STUDY_CELLS:
        study.warnings.append(
            f"{path}: the study expands to {n_cells} cells ({len(configurations)} configurations x"
            f" {execution.n_cycles} cycles); check the sweep is what you meant"
        )
    return study


__all__ = ["Configuration", "LineMap", "Study", "load_study"]
