"""Results as one tidy table: one row per cell, every figure and setting a column; Parquet or CSV.

The table a data frame library reads in one line (``pandas.read_parquet``, ``polars.read_csv``,
``duckdb.sql("select * from 'table.parquet'")``) is :meth:`StudyResult.to_rows
<pytest_llem.results.loader.StudyResult.to_rows>`'s rows with what a merged data set needs
besides: which study each row came from, the hardware, host and software it ran on (so that
cells of one configuration on an H100 and an H200 are told apart), its validity flags and every
latency percentile. The column order is fixed: :data:`ROW_FIELDS`, :data:`TIDY_FIELDS`, then the
``software.<package>`` versions, then ``config.<dotted path>``. A column name holds dots, never
nesting: ``config.transformers.batch_size``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pytest_llem.config.metrics import LIMIT_METRICS
from pytest_llem.errors import LlemError
from pytest_llem.results.atomic import write_bytes_atomic
from pytest_llem.results.fields import dotted_value
from pytest_llem.results.loader import CONFIG_PREFIX, ROW_FIELDS, StudyResult, derived_fields
from pytest_llem.results.validity import record_validity

#: Columns after :data:`ROW_FIELDS`: where the row was measured, its validity, then every figure a
#: limit may name that ``ROW_FIELDS`` lacks (latency percentiles), then the adjusted figures' inputs.
TIDY_FIELDS: tuple[str, ...] = (
    "study_name", "study_dir", "study_start_time", "gpu_name", "gpu_count", "host", "driver_version",
    "engine_version", "energy_meter", "flagged", "validity_codes", "validity",
    *(m for m in LIMIT_METRICS if m not in ROW_FIELDS),
    "baseline_power_w", "energy_adjusted_invalid_reason",
)  # fmt: skip

#: The prefix of the software version columns: ``software.torch``, ``software.vllm``.
SOFTWARE_PREFIX = "software."

TableFormat = Literal["parquet", "csv"]

#: An exported table is for sharing: readable by all, as an ordinary file would be (the atomic
#: writer's temporary file is private).
TABLE_MODE = 0o644




def _plain(value: Any) -> Any:
    """A cell value: str, int, float, bool or None (a list or mapping becomes its JSON text)."""
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def tidy_rows(result: StudyResult) -> list[dict[str, Any]]:
    """One flat dict per record of ``result`` (merged or not), every row with every column, in column order."""
    base = result.to_rows()
    software = list(
        dict.fromkeys(
            name for r in result.experiments if isinstance(r.get("software_versions"), Mapping) for name in r["software_versions"]
        )
    )
    rows: list[dict[str, Any]] = []
    for index, (record, row) in enumerate(zip(result.experiments, base)):
        source = result.source_of(index) if result.studies else None
        validity = record_validity(record)
        extra: dict[str, Any] = {
            "study_name": record.get("study_name") or (source.study_name if source else result.study_name),
            "study_dir": str(source.study_dir if source else result.study_dir),
            "study_start_time": source.start_time if source else None,
            **derived_fields(record),
            "engine_version": record.get("engine_version"),
            "energy_meter": record.get("energy_meter"),
            "flagged": bool(validity),
            "validity_codes": ";".join(str(f.get("code")) for f in validity),
            "validity": json.dumps(validity),
        }
        for name in TIDY_FIELDS:
            if name not in extra:
                extra[name] = _plain(dotted_value(record, name))
        versions = record.get("software_versions")
        versions = versions if isinstance(versions, Mapping) else {}
        config = {k: v for k, v in row.items() if k.startswith(CONFIG_PREFIX)}
        rows.append(
            {
                **{name: row[name] for name in ROW_FIELDS},
                **{name: extra[name] for name in TIDY_FIELDS},
                **{SOFTWARE_PREFIX + name: versions.get(name) for name in software},
                **config,
            }
        )
    return rows


def _column(name: str, values: list[Any]) -> Any:
    """One pyarrow column: its inferred type, or text where the values mix types (``1`` in one row, ``"a"`` in another)."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else json.dumps(v) if isinstance(v, bool) else str(v) for v in values])


def to_arrow(rows: Sequence[Mapping[str, Any]]) -> Any:
    """``rows`` as a ``pyarrow.Table``, columns in the rows' order (every row has every column)."""
    import pyarrow as pa

    names = list(rows[0]) if rows else [*ROW_FIELDS, *TIDY_FIELDS]
    return pa.table({name: _column(name, [row.get(name) for row in rows]) for name in names})


def table_format(path: str | os.PathLike[str], format: TableFormat | None = None) -> TableFormat:
    """The format asked for, else the file's suffix (``.parquet``/``.pq`` or ``.csv``)."""
    if format is not None:
        return format
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise LlemError(f"cannot tell the table format of {path}: name it .parquet or .csv, or pass format='parquet'|'csv'")


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    names = list(rows[0]) if rows else [*ROW_FIELDS, *TIDY_FIELDS]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: "" if row.get(name) is None else row.get(name) for name in names})
    return buffer.getvalue()


def export_table(result: StudyResult, path: str | os.PathLike[str], format: TableFormat | None = None) -> Path:
    """Write ``result`` as one tidy table (:func:`tidy_rows`) to ``path``, atomically; return the path.

    Parquet (through pyarrow, a dependency) or CSV, from ``format`` or the file's suffix. Read it
    back with ``pandas.read_parquet(path)``, ``polars.read_csv(path)`` or
    ``duckdb.sql(f"select * from '{path}'")``.
    """
    target = Path(path)
    chosen = table_format(target, format)
    rows = tidy_rows(result)
    target.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "csv":
        write_bytes_atomic(target, _csv_text(rows).encode("utf-8"), mode=TABLE_MODE)
        return target
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(to_arrow(rows), sink)
    write_bytes_atomic(target, sink.getvalue().to_pybytes(), mode=TABLE_MODE)
    return target
