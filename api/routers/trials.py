"""Trials: a sweep's trials (filtered, paginated), one trial with its reproducibility record, its loss curve."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from api import views
from api.deps import ChinchillaFilter, DatabaseDep, Guarded, IdPath, Limit, NameFilter, Offset, json_response
from api.schemas import TrialDetail, TrialMetrics, TrialPage
from db import queries
from db import repository as repo
from db.models import TRIAL_STATUSES

router = APIRouter(tags=["trials"], dependencies=Guarded)

TrialStatus = Literal["pending", "running", "completed", "diverged", "failed", "cancelled"]
assert set(TrialStatus.__args__) == set(TRIAL_STATUSES)  # type: ignore[attr-defined]


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
    f = queries.TrialFilter(status=status_, cell=cell, optimizer=optimizer, scale=scale, chinchilla=chinchilla)
    with db.session() as s:
        rows, total = queries.list_trials(s, sweep_id, f, limit=limit, offset=offset)
        # A sweep with matching trials exists; only an empty answer needs to tell "no sweep" from "no match".
        if total == 0 and not queries.sweep_exists(s, sweep_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no sweep {sweep_id}")
        items = [views.trial_summary(row) for row in rows]
    return json_response(TrialPage(items=items, total=total, limit=limit, offset=offset))


@router.get("/trials/{trial_id}", response_model=TrialDetail)
def get_trial(trial_id: IdPath, db: DatabaseDep) -> TrialDetail:
    """One trial: config, status and reason, reproducibility record, timings."""
    with db.session() as s:
        trial = repo.get_trial(s, trial_id)
        if trial is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no trial {trial_id}")
        return views.trial_detail(trial, trial.cell)


@router.get("/trials/{trial_id}/metrics", response_model=TrialMetrics)
def get_trial_metrics(trial_id: IdPath, db: DatabaseDep) -> TrialMetrics:
    """The trial's loss curve: (step, eval loss, train loss) points in step order."""
    with db.session() as s:
        trial = repo.get_trial(s, trial_id)
        if trial is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no trial {trial_id}")
        points = [views.curve_point(p) for p in repo.curve(s, trial_id)]
        return TrialMetrics(trial_id=trial_id, status=trial.status, points=points)
