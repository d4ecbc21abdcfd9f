"""Sweeps: submit, list, inspect, cancel.

A sweep is created `queued`; a dispatcher claims it (db.repository.claim_sweep), plans its cells and runs them.
Cancelling is a compare-and-set on the sweep and on its open trials; the engine sees the cancelled sweep and
stops handing out trials.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import views
from api.deps import DatabaseDep, Guarded, IdPath, Limit, Offset, SettingsDep, json_response
from api.schemas import SweepDetail, SweepPage
from api.spec_input import read_spec_document, validate_spec
from db import queries
from db import repository as repo
from db.models import SWEEP_STATUSES, Sweep

router = APIRouter(prefix="/sweeps", tags=["sweeps"], dependencies=Guarded)

SweepStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
assert set(SweepStatus.__args__) == set(SWEEP_STATUSES)  # type: ignore[attr-defined]

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
CANCEL_REASON = "cancelled through the API"


def not_found(sweep_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no sweep {sweep_id}")


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
    if idempotency_key is not None:
        with db.session() as s:
            existing = repo.sweep_by_idempotency_key(s, idempotency_key)
            if existing is not None:
                return _replay(s, existing, stored, response)
    try:
        with db.session() as s:
            sweep = repo.create_sweep(s, plan.name, stored, idempotency_key=idempotency_key)
            detail = views.sweep_detail(s, sweep)
    except IntegrityError:
        # Two requests with the same key raced; the unique key let exactly one insert, answer with its sweep.
        if idempotency_key is None:
            raise
        with db.session() as s:
            existing = repo.sweep_by_idempotency_key(s, idempotency_key)
            if existing is None:
                raise
            return _replay(s, existing, stored, response)
    response.headers["Location"] = f"/sweeps/{detail.id}"
    return detail


def _replay(s: Session, existing: Sweep, stored: dict[str, Any], response: Response) -> SweepDetail:
    """The answer to a retry: the first request's sweep, if the spec is the same."""
    if existing.spec != stored:
        # IETF draft "The Idempotency-Key HTTP Header Field": a key reused with another payload is a 422.
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["header", "Idempotency-Key"],
                    "field": "Idempotency-Key",
                    "msg": f"this key was used for sweep {existing.id} with a different spec",
                    "type": "value_error",
                }
            ],
        )
    response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/sweeps/{existing.id}"
    return views.sweep_detail(s, existing)


@router.get("", response_model=SweepPage)
def list_sweeps(
    db: DatabaseDep,
    status_: Annotated[SweepStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Sweeps, newest first, optionally of one status."""
    with db.session() as s:
        sweeps = repo.list_sweeps(s, status=status_, limit=limit, offset=offset)
        counts = queries.trial_counts_for_sweeps(s, [sw.id for sw in sweeps])
        total = queries.count_sweeps(s, status_)
        items = [views.sweep_summary(sw, counts[sw.id]) for sw in sweeps]
    return json_response(SweepPage(items=items, total=total, limit=limit, offset=offset))


@router.get("/{sweep_id}", response_model=SweepDetail)
def get_sweep(sweep_id: IdPath, db: DatabaseDep) -> Response:
    """Status, per-cell progress, best so far, trial counts, compute used and estimated time left."""
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            raise not_found(sweep_id)
        detail = views.sweep_detail(s, sweep)
    return json_response(detail)


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepDetail,
    responses={404: {"description": "no such sweep"}, 409: {"description": "the sweep has already finished"}},
)
def cancel_sweep(
    sweep_id: IdPath,
    db: DatabaseDep,
    reason: Annotated[str | None, Query(max_length=500, pattern=r"^[^\x00]*$")] = None,
) -> SweepDetail:
    """Cancel a queued or running sweep: its pending and running trials are cancelled with a reason.

    Cancelling a cancelled sweep answers 200 again; a completed or failed one answers 409.
    """
    text = f"{CANCEL_REASON}: {reason}" if reason else CANCEL_REASON
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            raise not_found(sweep_id)
        if repo.set_sweep_status(s, sweep_id, ["queued", "running"], "cancelled", error=None):
            repo.cancel_unfinished(s, sweep_id, text)
            queries.cancel_open_cells(s, sweep_id)
        s.expire_all()  # the updates above bypassed the session's copies
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None
        if sweep.status != "cancelled":
            raise HTTPException(status.HTTP_409_CONFLICT, detail=f"sweep {sweep_id} is already {sweep.status}")
        return views.sweep_detail(s, sweep)
