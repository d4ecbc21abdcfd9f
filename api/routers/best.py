"""The best hyperparameters and loss per (optimizer, scale, chinchilla) across all finished work.

Every sweep counts, imported ones too. A cell's best is the one the engine recorded (the mean over seeds of
the best config, and its near-ties); a cell without a recorded best yet (its seeds still running) is ranked
from its finished trials with sweep_service.analysis.best_per_cell, the same rules. Across sweeps, the cell
with the lowest loss wins and names the sweep and trial that produced it.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from api.deps import ChinchillaFilter, DatabaseDep, Guarded, NameFilter, unknown_name
from api.schemas import BestResponse, BestResult
from db import queries
from db.models import Cell, Sweep
from db.session import Database
from sweep_service import analysis

router = APIRouter(tags=["best"], dependencies=Guarded)


@dataclass(frozen=True)
class _Candidate:
    cell: Cell
    sweep: Sweep
    loss: float
    config: dict[str, Any] | None
    near_ties: list[dict[str, Any]]
    trial_id: int | None


def _from_trials(s: Session, cells: list[tuple[Cell, Sweep]]) -> list[_Candidate]:
    """Candidates for cells whose best is not recorded yet, ranked from their finished trials."""
    trials = queries.finished_trials_of_cells(s, [c.id for c, _ in cells])
    by_cell: dict[int, list[Any]] = {}
    for t in trials:
        by_cell.setdefault(t.cell_id, []).append(t)
    out = []
    for cell, sweep in cells:
        rows = by_cell.get(cell.id, [])
        if not rows:
            continue
        frame = pd.DataFrame(
            [
                {
                    "optimizer": cell.optimizer,
                    "scale": cell.scale,
                    "chinchilla": cell.chinchilla,
                    "config": t.config,
                    "loss": t.final_loss if t.final_loss is not None else math.nan,
                    "status": t.status,
                    "seed": t.seed,
                    "trial_id": t.id,
                }
                for t in rows
            ]
        )
        tolerance = cell.settings.get("tolerance") if isinstance(cell.settings, dict) else None
        if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not math.isfinite(tolerance):
            tolerance = analysis.NEAR_TIE_TOLERANCE
        best = analysis.best_per_cell(frame, tolerance=float(tolerance), n_boot=0).iloc[0]
        if best["best_config"] is None or not math.isfinite(best["best_loss"]):
            continue
        key = analysis.config_key(best["best_config"])
        matching = [t for t in rows if t.status == "completed" and analysis.config_key(t.config) == key]
        trial = min(matching, key=lambda t: (t.final_loss, t.id), default=None)
        out.append(
            _Candidate(
                cell=cell,
                sweep=sweep,
                loss=float(best["best_loss"]),
                config=dict(best["best_config"]),
                near_ties=[dict(c) for c in best["near_ties"]],
                trial_id=trial.id if trial is not None else None,
            )
        )
    return out


@functools.cache
def _catalog() -> tuple[dict[str, Any], list[str], dict[str, int]]:
    """The scale presets, the optimizer names and each scale's non-embedding parameter count. workers.model
    imports torch (seconds): imported on the first /best, not with the API, and computed once."""
    from sweep_service.importer import scale_params
    from workers.model import SCALES
    from workers.optimizers import REGISTRY

    return dict(SCALES), list(REGISTRY), scale_params()


# Answers of GET /best per database and filter, each with the version of the data it was computed from
# (queries.best_inputs_version): a repeated request costs one query over the cells instead of reading, ranking
# and serializing every cell's best. 256 filters: far more than the (optimizer, scale, multiple) combinations
# anyone asks for, and a bound on the memory a client sending made-up multiples can take.
CACHE_FILTERS = 256
_Filter = tuple[str | None, str | None, float | None]


class _AnswerCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # sync operations run in a threadpool
        self.answers: OrderedDict[_Filter, tuple[tuple[tuple[Any, ...], ...], bytes]] = OrderedDict()

    def get(self, key: _Filter, version: tuple[tuple[Any, ...], ...]) -> bytes | None:
        with self.lock:
            held = self.answers.get(key)
            if held is None or held[0] != version:
                return None
            self.answers.move_to_end(key)
            return held[1]

    def put(self, key: _Filter, version: tuple[tuple[Any, ...], ...], body: bytes) -> None:
        with self.lock:
            self.answers[key] = (version, body)
            self.answers.move_to_end(key)
            while len(self.answers) > CACHE_FILTERS:
                self.answers.popitem(last=False)


# One cache per Database (an app's; tests run many apps in one process), dropped with it.
_caches: weakref.WeakKeyDictionary[Database, _AnswerCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache_of(db: Database) -> _AnswerCache:
    with _caches_lock:
        cache = _caches.get(db)
        if cache is None:
            cache = _caches[db] = _AnswerCache()
        return cache


@router.get("/best", response_model=BestResponse)
def get_best(
    db: DatabaseDep,
    optimizer: NameFilter = None,
    scale: NameFilter = None,
    chinchilla: ChinchillaFilter = None,
) -> Response:
    """Best config and loss per (optimizer, scale, chinchilla multiple) over every sweep, with its near-tie
    configs and the trial and sweep that produced it. Filters narrow the cells; no match is an empty list."""
    scales, optimizers, params = _catalog()
    if (optimizer is not None and optimizer not in optimizers) or (scale is not None and scale not in scales):
        # Not in the catalog: imported results may still hold it (the importer keeps unknown names).
        with db.session() as s:
            held_optimizers, held_scales = queries.cell_names(s)
        if optimizer is not None and optimizer not in optimizers and optimizer not in held_optimizers:
            raise unknown_name("optimizer", optimizer, _union(optimizers, held_optimizers))
        if scale is not None and scale not in scales and scale not in held_scales:
            raise unknown_name("scale", scale, _union(list(scales), held_scales))
    cache = _cache_of(db)
    key = (optimizer, scale, chinchilla)
    with db.session() as s:
        # The version is read before the answer: an answer is never stored under a version older than its data.
        version = queries.best_inputs_version(s)
        body = cache.get(key, version)
        if body is None:
            body = _best(s, optimizer, scale, chinchilla, params).model_dump_json().encode()
            cache.put(key, version, body)
    return Response(body, media_type="application/json")


def _union(catalog: list[str], held: list[str]) -> list[str]:
    """The catalog's names, then those only the database holds (imported results)."""
    return [*catalog, *(name for name in held if name not in catalog)]


def _best(
    s: Session, optimizer: str | None, scale: str | None, chinchilla: float | None, params: dict[str, int]
) -> BestResponse:
    cells = queries.cells_with_sweeps(s, optimizer, scale, chinchilla)
    candidates = [
        _Candidate(c, sw, float(c.best_loss), c.best_config, list(c.near_ties or []), c.best_trial_id)
        for c, sw in cells
        if c.best_loss is not None and math.isfinite(c.best_loss)
    ]
    candidates += _from_trials(s, [(c, sw) for c, sw in cells if c.best_loss is None])
    considered: dict[tuple[str, str, float], int] = {}
    for c, _ in cells:
        group = (c.optimizer, c.scale, c.chinchilla)
        considered[group] = considered.get(group, 0) + 1
    winners: dict[tuple[str, str, float], _Candidate] = {}
    for cand in candidates:
        group = (cand.cell.optimizer, cand.cell.scale, cand.cell.chinchilla)
        held = winners.get(group)
        if held is None or (cand.loss, cand.cell.id) < (held.loss, held.cell.id):
            winners[group] = cand
    results = [
        BestResult(
            optimizer=w.cell.optimizer,
            scale=w.cell.scale,
            chinchilla=w.cell.chinchilla,
            non_embedding_params=params.get(w.cell.scale),
            loss=w.loss,
            config=w.config,
            near_ties=w.near_ties,
            sweep_id=w.sweep.id,
            sweep_name=w.sweep.name,
            imported=w.sweep.imported,
            cell=w.cell.key,
            trial_id=w.trial_id,
            cells_considered=considered[group],
        )
        for group, w in winners.items()
    ]
    results.sort(key=lambda r: (r.optimizer, r.non_embedding_params or math.inf, r.scale, r.chinchilla))
    return BestResponse(results=results)
