"""GET /sweeps/{id}/importance: hyperparameter importance per cell (sweep_service.importance: the share of
the loss variance each hyperparameter's main effect explains over the cell's finished trials)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from api.deps import DatabaseDep, Guarded, IdPath
from sweep_service.importance import importance_table
from sweep_service.report import SweepNotFound, load_sweep

router = APIRouter(tags=["analysis"], dependencies=Guarded)
METHOD = "functional ANOVA main effects on the observed trials"


class ImportanceRow(BaseModel):
    hparam: str
    importance: float = Field(description="share of the loss variance its main effect explains, 0 to 1")
    n_values: int = Field(description="distinct values (or quantile bins) among the cell's finished trials")


class CellImportance(BaseModel):
    cell: str
    optimizer: str
    n_trials: int = Field(description="finished (completed or diverged) trials used")
    unexplained: float | None = Field(description="1 - the sum of the main effects: interactions and noise")
    rows: list[ImportanceRow]


class ImportanceResponse(BaseModel):
    sweep_id: int
    method: str
    cells: list[CellImportance]


@router.get(
    "/sweeps/{sweep_id}/importance",
    response_model=ImportanceResponse,
    responses={404: {"description": "no such sweep, or no such cell in it"}},
)
def get_importance(
    sweep_id: IdPath,
    db: DatabaseDep,
    cell: Annotated[str | None, Query(min_length=1, max_length=200, description="one cell key; all if absent")] = None,
) -> ImportanceResponse:
    """Per cell, each searched hyperparameter's importance: a functional ANOVA's main effects computed on the
    observed trials (no model fitted; diverged trials count at the cell's worst loss)."""
    try:
        trials = load_sweep(db, sweep_id, with_curves=False).trials
    except SweepNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if cell is not None and cell not in set(trials["cell"]):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"sweep {sweep_id} has no trials in cell {cell[:200]!r}")
    cells = [
        CellImportance(
            cell=c["cell"],
            optimizer=c["optimizer"],
            n_trials=c["n_trials"],
            unexplained=None if math.isnan(c["unexplained"]) else c["unexplained"],
            rows=[ImportanceRow(hparam=r.hparam, importance=r.importance, n_values=r.n_values) for r in c["rows"]],
        )
        for c in importance_table(trials, cell)
    ]
    return ImportanceResponse(
        sweep_id=sweep_id, method="functional ANOVA main effects on the observed trials", cells=cells
    )
