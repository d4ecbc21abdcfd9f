"""Results for the analysis, and imported results: the SQL behind sweep_service.analysis, report and importer.

Reads a sweep's trials (or all finished work of an optimizer, over every sweep, imported ones too) into the
trials frame of sweep_service.analysis (its columns are documented at the top of that module), the cells and
curves a report draws, and writes an imported sweep (released results, e.g. the paper's) in one transaction.

`db/` reads no settings and does not import the worker catalog (DESIGN.md: dependencies point api ->
sweep_service -> db), so the non-embedding parameter count of each known scale is handed in by the caller
(`scale_params`, from workers.model.SCALES). A cell may carry its own count in `cells.settings`
(`non_embedding_params`, written by the importer for scales the catalog does not know); that one wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import TRIAL_RANKED, Cell, CurvePoint, Sweep, Trial, utcnow
from db.records import CellRecord
from db.repository import config_key, sweep_by_idempotency_key

# The columns of sweep_service.analysis's trials frame, then ours: where each trial comes from.
FRAME_COLUMNS = [
    "optimizer",
    "scale",
    "chinchilla",
    "config",
    "loss",
    "status",
    "seed",
    "trial_id",
    "non_embedding_params",
    "tokens",
    "device_seconds",
    "sweep_id",
    "cell",
    "imported",
]


def cell_params(cell: Cell | CellRecord, scale_params: Mapping[str, int]) -> float:
    """N of a cell: its own recorded count (imported results), else the catalog's, else NaN (unknown)."""
    own = cell.settings.get("non_embedding_params") if isinstance(cell.settings, dict) else None
    if isinstance(own, int | float) and not isinstance(own, bool) and math.isfinite(own) and own > 0:
        return float(own)
    known = scale_params.get(cell.scale)
    return float(known) if known is not None else math.nan


def _frame(rows: Sequence[tuple[Trial, Cell, Sweep]], scale_params: Mapping[str, int]) -> pd.DataFrame:
    records = [
        {
            "optimizer": cell.optimizer,
            "scale": cell.scale,
            "chinchilla": float(cell.chinchilla),
            "config": dict(trial.config or {}),
            # The analysis ranks a diverged trial as +inf whatever its loss; NULL is "unknown" (NaN).
            "loss": float(trial.final_loss) if trial.final_loss is not None else math.nan,
            "status": trial.status,
            "seed": int(trial.seed),
            "trial_id": trial.id,
            "non_embedding_params": cell_params(cell, scale_params),
            "tokens": float(trial.tokens) if trial.tokens is not None else math.nan,
            "device_seconds": float(trial.device_seconds) if trial.device_seconds is not None else math.nan,
            "sweep_id": sweep.id,
            "cell": cell.key,
            "imported": bool(sweep.imported),
        }
        for trial, cell, sweep in rows
    ]
    return pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)


def sweep_trials(s: Session, sweep_id: int, scale_params: Mapping[str, int]) -> pd.DataFrame:
    """Every trial of one sweep (all statuses: failed ones count as compute used), oldest first."""
    q = (
        select(Trial, Cell, Sweep)
        .join(Cell, Trial.cell_id == Cell.id)
        .join(Sweep, Trial.sweep_id == Sweep.id)
        .where(Trial.sweep_id == sweep_id)
        .order_by(Trial.id)
    )
    return _frame([(t, c, sw) for t, c, sw in s.execute(q).all()], scale_params)


def finished_trials(
    s: Session, scale_params: Mapping[str, int], optimizer: str | None = None, sweep_id: int | None = None
) -> pd.DataFrame:
    """Finished trials (completed, diverged) of every sweep, imported ones too; optionally one optimizer's, one
    sweep's."""
    q = (
        select(Trial, Cell, Sweep)
        .join(Cell, Trial.cell_id == Cell.id)
        .join(Sweep, Trial.sweep_id == Sweep.id)
        .where(Trial.status.in_(TRIAL_RANKED))
        .order_by(Trial.id)
    )
    if optimizer is not None:
        q = q.where(Cell.optimizer == optimizer)
    if sweep_id is not None:
        q = q.where(Trial.sweep_id == sweep_id)
    return _frame([(t, c, sw) for t, c, sw in s.execute(q).all()], scale_params)


def cells_trials(s: Session, cell_ids: Sequence[int], scale_params: Mapping[str, int]) -> pd.DataFrame:
    """Finished trials (completed, diverged) of the given cells, oldest first: what a Phase II or III cell decides
    from (sweep_service/phases.py)."""
    q = (
        select(Trial, Cell, Sweep)
        .join(Cell, Trial.cell_id == Cell.id)
        .join(Sweep, Trial.sweep_id == Sweep.id)
        .where(Trial.cell_id.in_(list(cell_ids)), Trial.status.in_(TRIAL_RANKED))
        .order_by(Trial.id)
    )
    return _frame([(t, c, sw) for t, c, sw in s.execute(q).all()], scale_params)


# ---- what a report draws ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellCurves:
    """The eval-loss curve of every trial of one cell that has one: trial id -> [(step, eval_loss)]."""

    key: str
    optimizer: str
    scale: str
    chinchilla: float
    best_trial_id: int | None
    curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)


# Cell settings that hold the std of one seed's final loss, first found wins: the best config's std over its
# confirm seeds, else the cell's noise estimate (written by the engine's confirm_seeds / tolerance auto).
NOISE_SETTINGS = ("best_std", "noise_std")


def sweep_cell_noise(s: Session, sweep_id: int) -> dict[tuple[str, str, float], float]:
    """(optimizer, scale, chinchilla) -> seed noise std of each cell of the sweep that records one."""
    out: dict[tuple[str, str, float], float] = {}
    for cell in s.scalars(select(Cell).where(Cell.sweep_id == sweep_id)):
        settings = cell.settings if isinstance(cell.settings, dict) else {}
        for name in NOISE_SETTINGS:
            value = settings.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
                out[(cell.optimizer, cell.scale, float(cell.chinchilla))] = float(value)
                break
    return out


def sweep_curves(s: Session, sweep_id: int) -> list[CellCurves]:
    """Per cell of a sweep (in cell order), the eval-loss curves of its trials; points without an eval loss
    (train-only reports) are left out. One query for the cells and one for the points."""
    cells = list(s.scalars(select(Cell).where(Cell.sweep_id == sweep_id).order_by(Cell.id)))
    out = {c.id: CellCurves(c.key, c.optimizer, c.scale, float(c.chinchilla), c.best_trial_id) for c in cells}
    q = (
        select(Trial.cell_id, CurvePoint.trial_id, CurvePoint.step, CurvePoint.eval_loss)
        .join(Trial, CurvePoint.trial_id == Trial.id)
        .where(Trial.sweep_id == sweep_id, CurvePoint.eval_loss.is_not(None))
        .order_by(CurvePoint.trial_id, CurvePoint.step)
    )
    for cell_id, trial_id, step, eval_loss in s.execute(q).all():
        if eval_loss is None:  # excluded by the query; the check narrows the type
            continue
        out[int(cell_id)].curves.setdefault(int(trial_id), []).append((int(step), float(eval_loss)))
    return list(out.values())


# ---- writing an imported sweep ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedTrial:
    config: dict[str, Any]
    loss: float  # +inf or NaN: stored as a diverged trial
    seed: int = 0
    tokens: int | None = None


@dataclass(frozen=True)
class ImportedCell:
    key: str
    optimizer: str
    scale: str
    chinchilla: float
    best: ImportedTrial
    others: tuple[ImportedTrial, ...] = ()  # near-ties, one-at-a-time changes: whatever the file has
    settings: dict[str, Any] = field(default_factory=dict)  # e.g. non_embedding_params, n_runs_floor
    near_ties: tuple[dict[str, Any], ...] = ()  # the cell's near-tie configs, best first


def _trial_row(sweep_id: int, cell_id: int, trial: ImportedTrial, now: datetime) -> Trial:
    finite = math.isfinite(trial.loss)
    return Trial(
        sweep_id=sweep_id,
        cell_id=cell_id,
        config_key=config_key(trial.config),
        config=dict(trial.config),
        seed=trial.seed,
        round=0,
        status="completed" if finite else "diverged",
        attempts=0,  # never run here
        final_loss=trial.loss if finite else None,
        reason=None if finite else "diverged in the imported results",
        tokens=trial.tokens,
        created_at=now,
        finished_at=now,
    )


def write_imported_sweep(
    s: Session, name: str, spec: dict[str, Any], idempotency_key: str, cells: Sequence[ImportedCell]
) -> tuple[int, bool]:
    """Write a finished, imported sweep with its cells and trials; (sweep id, created).

    Idempotent on `idempotency_key`: when a sweep with that key exists, nothing is written and its id is
    returned with created False (also when a concurrent import wins the race on the unique key).
    The caller's session commits; on a lost race the session is rolled back here to read the winner.
    """
    existing = sweep_by_idempotency_key(s, idempotency_key)
    if existing is not None:
        return existing.id, False
    now = utcnow()
    sweep = Sweep(
        name=name,
        spec=spec,
        idempotency_key=idempotency_key,
        imported=True,
        status="completed",
        created_at=now,
        started_at=now,
        finished_at=now,
    )
    try:
        s.add(sweep)
        s.flush()
    except IntegrityError:
        s.rollback()
        winner = sweep_by_idempotency_key(s, idempotency_key)
        if winner is None:
            raise
        return winner.id, False
    for c in cells:
        cell = Cell(
            sweep_id=sweep.id,
            key=c.key,
            optimizer=c.optimizer,
            scale=c.scale,
            chinchilla=c.chinchilla,
            strategy="imported",
            # The released config is the whole space: nothing is left to search.
            space={"grid": {}, "baseline": dict(c.best.config), "fixed": {}},
            settings={"imported": True, **c.settings},
            status="converged" if math.isfinite(c.best.loss) else "exhausted",
            round=0,
        )
        s.add(cell)
        s.flush()
        best = _trial_row(sweep.id, cell.id, c.best, now)
        s.add(best)
        seen = {(best.config_key, best.seed)}
        for other in c.others:
            row = _trial_row(sweep.id, cell.id, other, now)
            if (row.config_key, row.seed) in seen:  # unique (cell, config, seed): a repeated run is kept once
                continue
            seen.add((row.config_key, row.seed))
            s.add(row)
        s.flush()
        if math.isfinite(c.best.loss):
            cell.best_trial_id = best.id
            cell.best_loss = c.best.loss
            cell.best_config = dict(c.best.config)
            cell.near_ties = [dict(t) for t in c.near_ties] or [dict(c.best.config)]
    s.flush()
    return sweep.id, True
