"""GET /sweeps/{id}/importance: hyperparameter importance per cell (sweep_service.importance: the share of
the loss variance each hyperparameter's main effect explains over the cell's finished trials). The use case is
sweep_service/service/analysis.py's `importance`; this route parses, calls and renders."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import DatabaseDep, Guarded, IdPath
from sweep_service.service import analysis as uc

router = APIRouter(tags=["analysis"], dependencies=Guarded)
METHOD = uc.IMPORTANCE_METHOD


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
    result = uc.importance(db, sweep_id, cell)
    cells = [
        CellImportance(
            cell=c.cell,
            optimizer=c.optimizer,
            n_trials=c.n_trials,
            unexplained=None if math.isnan(c.unexplained) else c.unexplained,
            rows=[ImportanceRow(hparam=r.hparam, importance=r.importance, n_values=r.n_values) for r in c.rows],
        )
        for c in result.cells
    ]
    return ImportanceResponse(sweep_id=result.sweep_id, method=result.method, cells=cells)
