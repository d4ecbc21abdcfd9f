"""Export a sweep's trials as a table (GET /sweeps/{id}/export, `sweep-service export`): one row per trial, oldest
first, with the columns below and the config flattened into `config.<name>` columns, as CSV, Parquet or JSON
records. A function over a `Database` returning a plain dataclass, raising sweep_service.service.errors (DESIGN.md,
"Inside sweep_service/"); the REST router and the CLI only render the bytes.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from db import queries
from db.session import Database
from sweep_service.service.errors import Invalid, NotFound

CONFIG_PREFIX = "config."
COLUMNS = [
    "trial_id",
    "sweep_id",
    "cell",
    "optimizer",
    "scale",
    "chinchilla",
    "seed",
    "round",
    "status",
    "final_loss",
    "initial_loss",
    "reason",
    "steps",
    "total_steps",
    "tokens",
    "tokens_per_second",
    "device_seconds",
    "attempts",
    "worker",
    "created_at",
    "started_at",
    "finished_at",
    "repro",
]
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "json": "application/json",
}


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """A trial's row (db.queries.export_rows) as an export record: the config flattened into `config.<name>`."""
    record = {name: row[name] for name in COLUMNS}
    # Nested: kept as one JSON text column so every format can carry it.
    record["repro"] = json.dumps(row["repro"], sort_keys=True) if row["repro"] is not None else None
    for name, value in (row["config"] or {}).items():
        record[CONFIG_PREFIX + str(name)] = value
    return record


def _one_type_per_column(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Parquet needs one type per column: a config column mixing kinds (numbers, booleans, text) becomes text."""
    for name in names:
        kinds = set()
        for v in frame[name]:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            kinds.add("bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else "text")
        if len(kinds) > 1 or kinds == {"text"}:
            frame[name] = [None if v is None else str(v) for v in frame[name]]
    return frame


def _json_value(value: Any) -> Any:
    """A value of a row as JSON: missing or non-finite -> null (as in the other formats), a timestamp as the REST
    API writes it (ISO 8601, microseconds when there are any, UTC as "Z"), anything else as it is stored."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, datetime):  # stored times are naive UTC (db.models.utcnow)
        return value.replace(tzinfo=None).isoformat() + "Z"
    return value


FORMATS = tuple(MEDIA_TYPES)


@dataclass(frozen=True)
class Table:
    """A sweep's trials: `columns` (COLUMNS, then the config columns sorted), one record per trial."""

    sweep_id: int
    columns: tuple[str, ...]
    records: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Export:
    """A table written in one format, with what a download needs."""

    sweep_id: int
    format: str
    media_type: str
    filename: str
    body: bytes


def rows(db: Database, sweep_id: int) -> Table:
    """The sweep's trials as records, straight from the database values; NotFound without such a sweep."""
    with db.session() as s:
        if not queries.sweep_exists(s, sweep_id):
            raise NotFound(f"no sweep {sweep_id}")
        records = [_record(row) for row in queries.export_rows(s, sweep_id)]
    config_columns = sorted({k for r in records for k in r if k.startswith(CONFIG_PREFIX)})
    return Table(sweep_id, (*COLUMNS, *config_columns), tuple(records))


def export(db: Database, sweep_id: int, format: str = "csv") -> Export:
    """The sweep's trials as CSV, Parquet or JSON (records); Invalid for another format, NotFound without the
    sweep."""
    if format not in MEDIA_TYPES:
        raise Invalid("format", f"must be one of {', '.join(FORMATS)}, got {format!r}")
    table = rows(db, sweep_id)
    if format == "json":
        body = json_records(table)
    else:
        frame = trials_frame(table)
        # Parquet readers and CSV consumers differ on infinity; a non-finite number is written as missing.
        numeric = frame.select_dtypes("number").columns
        frame[numeric] = frame[numeric].replace([math.inf, -math.inf], math.nan)
        if format == "csv":
            body = frame.to_csv(index=False).encode()
        else:
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            body = buffer.getvalue()
    return Export(sweep_id, format, MEDIA_TYPES[format], f"sweep-{sweep_id}-trials.{format}", body)


def json_records(table: Table) -> bytes:
    """The rows as a JSON array of records with the table's columns, straight from the database values, not
    through a DataFrame: pandas would turn an integer column with a gap into floats (steps 5.0), and its to_json
    rounds floats to 15 digits and times to its `date_unit`, so a value would differ from GET /trials/{id}'s."""
    out = [{k: _json_value(r.get(k)) for k in table.columns} for r in table.records]
    return json.dumps(out, allow_nan=False).encode()


def trials_frame(table: Table) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(table.records), columns=list(table.columns))
    return _one_type_per_column(frame, [c for c in table.columns if c.startswith(CONFIG_PREFIX)])
