"""Trials: a sweep's trials (filtered, paginated), one trial with its reproducibility record, its loss curve."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from api import views
from api.deps import ChinchillaFilter, DatabaseDep, Guarded, IdPath, Limit, NameFilter, Offset, json_response
from api.schemas import TrialDetail, TrialMetrics, TrialPage
from sweep_service.service import trials

router = APIRouter(tags=["trials"], dependencies=Guarded)

TrialStatus = Literal["pending", "running", "completed", "diverged", "failed", "cancelled"]
assert set(TrialStatus.__args__) == set(trials.STATUSES)  # type: ignore[attr-defined]


@router.get("/sweeps/{sweep_id}/trials", response_model=TrialPage)
def list_trials(
    sweep_id: IdPath,
    db: DatabaseDep,
    status_: Annotated[TrialStatus | None, Query(alias="status")] = None,
    cell: NameFilter = None,
    optimizer: NameFilter = None,
    scale: NameFilter = None,
    chinchilla: ChinchillaFilter = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """A sweep's trials, oldest first, filtered by status, cell key ("optimizer/scale/chinchilla"), optimizer,
    scale or multiple."""
    where = trials.TrialFilter(status=status_, cell=cell, optimizer=optimizer, scale=scale, chinchilla=chinchilla)
    page = trials.list_trials(db, sweep_id, where, limit=limit, offset=offset)
    items = [views.trial_summary(t) for t in page.items]
    return json_response(TrialPage(items=items, total=page.total, limit=limit, offset=offset))


@router.get("/trials/{trial_id}", response_model=TrialDetail)
def get_trial(trial_id: IdPath, db: DatabaseDep) -> TrialDetail:
    """One trial: config, status and reason, reproducibility record, timings."""
    return views.trial_detail(trials.get(db, trial_id))


@router.get("/trials/{trial_id}/metrics", response_model=TrialMetrics)
def get_trial_metrics(trial_id: IdPath, db: DatabaseDep) -> TrialMetrics:
    """The trial's loss curve: (step, eval loss, train loss) points in step order."""
    return views.trial_metrics(trials.curve(db, trial_id))
