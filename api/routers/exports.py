"""A sweep's trials as a table: one row per trial, the config flattened into `config.<name>` columns."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, HTTPException, Query, Response, status

from api.deps import DatabaseDep, Guarded, IdPath
from api.schemas import ExportFormat
from db import queries
from db import repository as repo
from db.models import Cell, Trial

router = APIRouter(tags=["sweeps"], dependencies=Guarded)

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


def _row(trial: Trial, cell: Cell) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trial_id": trial.id,
        "sweep_id": trial.sweep_id,
        "cell": cell.key,
        "optimizer": cell.optimizer,
        "scale": cell.scale,
        "chinchilla": cell.chinchilla,
        "seed": trial.seed,
        "round": trial.round,
        "status": trial.status,
        "final_loss": trial.final_loss,
        "initial_loss": trial.initial_loss,
        "reason": trial.reason,
        "steps": trial.steps,
        "total_steps": trial.total_steps,
        "tokens": trial.tokens,
        "tokens_per_second": trial.tokens_per_second,
        "device_seconds": trial.device_seconds,
        "attempts": trial.attempts,
        "worker": trial.worker,
        "created_at": trial.created_at,
        "started_at": trial.started_at,
        "finished_at": trial.finished_at,
        # Nested: kept as one JSON text column so every format can carry it.
        "repro": json.dumps(trial.repro, sort_keys=True) if trial.repro is not None else None,
    }
    for name, value in (trial.config or {}).items():
        row[CONFIG_PREFIX + str(name)] = value
    return row


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


def json_records(rows: list[tuple[Trial, Cell]]) -> bytes:
    """The rows as a JSON array of records with the table's columns, straight from the database values, not
    through a DataFrame: pandas would turn an integer column with a gap into floats (steps 5.0), and its to_json
    rounds floats to 15 digits and times to its `date_unit`, so a value would differ from GET /trials/{id}'s."""
    records = [_row(t, c) for t, c in rows]
    columns = COLUMNS + sorted({k for r in records for k in r if k.startswith(CONFIG_PREFIX)})
    out = [{k: _json_value(r.get(k)) for k in columns} for r in records]
    return json.dumps(out, allow_nan=False).encode()


def trials_frame(rows: list[tuple[Trial, Cell]]) -> pd.DataFrame:
    records = [_row(t, c) for t, c in rows]
    config_columns = sorted({k for r in records for k in r if k.startswith(CONFIG_PREFIX)})
    frame = pd.DataFrame.from_records(records, columns=COLUMNS + config_columns)
    return _one_type_per_column(frame, config_columns)


@router.get(
    "/sweeps/{sweep_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "one row per trial",
            "content": {"text/csv": {}, "application/vnd.apache.parquet": {}, "application/json": {}},
        },
        404: {"description": "no such sweep"},
    },
)
def export_sweep(
    sweep_id: IdPath,
    db: DatabaseDep,
    format: Annotated[ExportFormat, Query(description="csv, parquet or json")] = "csv",
) -> Response:
    """The sweep's trials as CSV, Parquet or JSON (records): one row per trial, config as `config.<name>`."""
    with db.session() as s:
        if repo.get_sweep(s, sweep_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no sweep {sweep_id}")
        rows = queries.trials_with_cells(s, sweep_id)
        if format == "json":
            body = json_records(rows)
        else:
            frame = trials_frame(rows)
            # Parquet readers and CSV consumers differ on infinity; a non-finite number is written as missing.
            numeric = frame.select_dtypes("number").columns
            frame[numeric] = frame[numeric].replace([math.inf, -math.inf], math.nan)
            if format == "csv":
                body = frame.to_csv(index=False).encode()
            else:
                buffer = io.BytesIO()
                frame.to_parquet(buffer, index=False)
                body = buffer.getvalue()
    filename = f"sweep-{sweep_id}-trials.{format}"
    return Response(
        content=body,
        media_type=MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
