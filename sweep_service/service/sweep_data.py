"""What the analyses read from the database for one sweep: its trials as the analysis frame, its cells' eval-loss
curves and recorded seed noise. The analysis use cases (sweep_service/service/analysis.py), the HTML report
(sweep_service/report.py) and the answer (sweep_service/answer.py) all load a sweep through `load_sweep`, so
they read the same rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from db import repository as repo
from db import results
from db.session import Database
from sweep_service import catalog
from sweep_service.service.errors import NotFound

__all__ = ["MAX_ID", "SweepData", "SweepNotFound", "load_sweep"]

MAX_ID = 2**31 - 1  # ids are 32-bit INTEGER columns (db/models.py)


class SweepNotFound(NotFound, ValueError):
    """No sweep has this id: a NotFound (the API's 404) that is also a ValueError (the CLI prints it as one
    line, exit status 2, as it did before the service layer)."""


@dataclass(frozen=True)
class SweepData:
    """What a report (or an analysis use case) reads from the database for one sweep."""

    sweep_id: int
    name: str
    status: str
    imported: bool
    spec: dict[str, Any]
    created_at: datetime
    trials: pd.DataFrame  # the analysis trials frame (db.results.FRAME_COLUMNS)
    curves: list[results.CellCurves]
    noise: dict[tuple[str, str, float], float] = field(default_factory=dict)  # cell -> seed noise std (settings)


def load_sweep(database: Database, sweep_id: int, with_curves: bool = True) -> SweepData:
    """One sweep's trials (and curves) from the database; SweepNotFound when there is no such sweep."""
    if not 1 <= sweep_id <= MAX_ID:  # a larger id would overflow the driver's integer, not be "no sweep"
        raise SweepNotFound(f"no sweep {sweep_id}")
    with database.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            raise SweepNotFound(f"no sweep {sweep_id}")
        return SweepData(
            sweep_id=sweep.id,
            name=sweep.name,
            status=sweep.status,
            imported=bool(sweep.imported),
            spec=sweep.spec if isinstance(sweep.spec, dict) else {},
            created_at=sweep.created_at,
            trials=results.sweep_trials(s, sweep_id, catalog.scale_params()),
            curves=results.sweep_curves(s, sweep_id) if with_curves else [],
            noise=results.sweep_cell_noise(s, sweep_id),
        )
