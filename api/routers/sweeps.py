"""Sweeps: submit, list, inspect, cancel, pause, resume, update, delete.

A sweep is created `queued`; a dispatcher claims it (db.repository.claim_sweep), plans its cells and runs them.
Cancelling is a compare-and-set on the sweep and on its open trials; the engine sees the cancelled sweep and
stops handing out trials.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status

from api import views
from api.deps import DatabaseDep, Guarded, IdPath, Limit, Offset, SettingsDep, json_response
from api.schemas import SweepDetail, SweepPage, SweepUpdate
from api.spec_input import read_spec_document, validate_spec
from db.session import Database
from sweep_service import service
from sweep_service.service import sweeps

router = APIRouter(prefix="/sweeps", tags=["sweeps"], dependencies=Guarded)

SweepStatus = Literal["queued", "running", "paused", "completed", "failed", "cancelled"]
assert set(SweepStatus.__args__) == set(sweeps.STATUSES)  # type: ignore[attr-defined]

# Idempotency keys are stored in a String(200) column (db/models.py); printable ASCII, like a UUID.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x20-\x7e]+$",
        description="a retry with the same key returns the sweep the first request created",
    ),
]
SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the sweep spec (sweep_service/spec.py), as JSON or YAML",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SweepSpec"}},
            "application/yaml": {"schema": {"$ref": "#/components/schemas/SweepSpec"}},
        },
    }
}


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such sweep"}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepDetail,
    openapi_extra=SPEC_BODY,
    responses={
        200: {"model": SweepDetail, "description": "a retry with a known Idempotency-Key"},
        413: {"description": "the body is larger than SWEEP_MAX_BODY_BYTES"},
        415: {"description": "the Content-Type is neither JSON nor YAML"},
    },
)
def create_sweep(
    doc: Annotated[dict[str, Any], Depends(read_spec_document)],
    db: DatabaseDep,
    settings: SettingsDep,
    response: Response,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> SweepDetail:
    """Submit a sweep spec; it is validated (422 names each bad field) and queued for a dispatcher."""
    stored, plan = validate_spec(doc, settings, local_ray=request.app.state.local_ray)
    try:
        submitted = sweeps.submit(db, plan.name, stored, idempotency_key)
    except service.Invalid as exc:
        # IETF draft "The Idempotency-Key HTTP Header Field": a key reused with another payload is a 422.
        detail = [{"loc": ["header", exc.field], "field": exc.field, "msg": exc.message, "type": "value_error"}]
        raise HTTPException(422, detail=detail) from None
    if not submitted.created:  # a retry with a known Idempotency-Key: the first request's sweep
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/sweeps/{submitted.id}"
    return _detail(db, submitted.id)


@router.get("", response_model=SweepPage)
def list_sweeps(
    db: DatabaseDep,
    status_: Annotated[SweepStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Sweeps, newest first, optionally of one status."""
    page = sweeps.list_sweeps(db, status=status_, limit=limit, offset=offset)
    items = [views.sweep_summary(sw) for sw in page.items]
    return json_response(SweepPage(items=items, total=page.total, limit=limit, offset=offset))


@router.get("/{sweep_id}", response_model=SweepDetail, responses=NOT_FOUND)
def get_sweep(sweep_id: IdPath, db: DatabaseDep) -> Response:
    """Status, per-cell progress, best so far, trial counts, compute used and estimated time left."""
    return json_response(_detail(db, sweep_id))


def _detail(db: Database, sweep_id: int) -> SweepDetail:
    return views.sweep_detail(sweeps.get(db, sweep_id))


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepDetail,
    responses={**NOT_FOUND, 409: {"description": "the sweep has already finished"}},
)
def cancel_sweep(
    sweep_id: IdPath,
    db: DatabaseDep,
    reason: Annotated[str | None, Query(max_length=500, pattern=r"^[^\x00]*$")] = None,
) -> SweepDetail:
    """Cancel a queued, running or paused sweep: its pending and running trials are cancelled with a reason.

    Cancelling a cancelled sweep answers 200 again; a completed or failed one answers 409.
    """
    service.cancel(db, sweep_id, reason)
    return _detail(db, sweep_id)


@router.post(
    "/{sweep_id}/pause",
    response_model=SweepDetail,
    responses={**NOT_FOUND, 409: {"description": "the sweep has finished"}},
)
def pause_sweep(sweep_id: IdPath, db: DatabaseDep) -> SweepDetail:
    """Stop a queued or running sweep resumably (like Ctrl+C on its dispatcher): status `paused`, its trials in
    flight go back to pending, and no dispatcher claims it until it is resumed. Pausing a paused sweep answers 200."""
    service.pause(db, sweep_id)
    return _detail(db, sweep_id)


@router.post(
    "/{sweep_id}/resume",
    response_model=SweepDetail,
    responses={**NOT_FOUND, 409: {"description": "the sweep has finished"}},
)
def resume_sweep(sweep_id: IdPath, db: DatabaseDep) -> SweepDetail:
    """Make a paused sweep `queued` again: the next dispatcher claim resumes it where it stopped (finished trials
    kept). Resuming a queued or running sweep answers 200."""
    service.resume(db, sweep_id)
    return _detail(db, sweep_id)


@router.delete(
    "/{sweep_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**NOT_FOUND, 409: {"description": "the sweep is running: cancel or pause it first"}},
)
def delete_sweep(sweep_id: IdPath, db: DatabaseDep) -> Response:
    """Delete a sweep with its cells, trials, curves and its cells' Optuna studies. A running sweep answers 409:
    cancel or pause it first."""
    service.delete(db, sweep_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch(
    "/{sweep_id}",
    response_model=SweepDetail,
    responses={**NOT_FOUND, 409: {"description": "budget or max_concurrent of a finished sweep"}},
)
def update_sweep(sweep_id: IdPath, changes: SweepUpdate, db: DatabaseDep) -> SweepDetail:
    """Rename a sweep, or change its per-cell `budget` or its `max_concurrent`. The name applies at once; budget
    and max_concurrent are stored in the sweep's spec and apply when its run next starts (pause and resume a
    running sweep to apply them now)."""
    service.update(db, sweep_id, name=changes.name, budget=changes.budget, max_concurrent=changes.max_concurrent)
    return _detail(db, sweep_id)
