"""GET /sweeps/{id}/export: a sweep's trials as a table (sweep_service.service.exports), one row per trial, the
config flattened into `config.<name>` columns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import DatabaseDep, Guarded, IdPath
from api.schemas import ExportFormat
from sweep_service.service import exports

router = APIRouter(tags=["sweeps"], dependencies=Guarded)


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
    out = exports.export(db, sweep_id, format)  # NotFound: 404 (api/problems.py)
    return Response(
        content=out.body,
        media_type=out.media_type,
        headers={"Content-Disposition": f'attachment; filename="{out.filename}"'},
    )
