"""The best config and loss per (optimizer, scale, chinchilla multiple) across every sweep: the one answer of
GET /best and `sweep-service best` (DESIGN.md, "Inside sweep_service/": the API and the CLI cannot disagree).

Every sweep counts, imported ones too. A cell's best is the one the engine recorded (the mean over seeds of
the best config, and its near-ties); a cell without a recorded best yet (its seeds still running, or its sweep
stopped) is ranked from its finished trials with sweep_service.analysis.best_per_cell, the same rules. Across
sweeps, the cell with the lowest loss wins (ties: the older cell) and names the sweep and trial that produced it.

Caching is the caller's: `inputs_version` is everything an answer depends on, so a server can keep answers
(api/routers/best.py keeps serialized ones) and serve one again while the version is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from db import queries
from db.session import Database
from sweep_service import analysis, catalog
from sweep_service.service.errors import Invalid

Group = tuple[str, str, float]  # (optimizer, scale, chinchilla)


@dataclass(frozen=True)
class BestResult:
    """The winning cell of one (optimizer, scale, chinchilla) group, as GET /best shows it (api.schemas.BestResult)."""

    optimizer: str
    scale: str
    chinchilla: float
    non_embedding_params: int | None  # the catalog's count of the scale; None for a scale it lacks
    loss: float
    config: dict[str, Any] | None
    near_ties: list[dict[str, Any]]  # configs within the cell's tolerance of its best, the best included
    sweep_id: int
    sweep_name: str
    imported: bool
    cell: str  # the cell's key
    trial_id: int | None  # the best config's lowest-loss trial; None when not recorded (some imports)
    cells_considered: int  # cells (over all sweeps) of this group, with or without a result


class UnknownName(Invalid):
    """An optimizer or scale filter that is neither in the catalog nor in any stored cell; `valid` lists both."""

    def __init__(self, field: str, name: str, valid: list[str]) -> None:
        super().__init__(field, f"unknown {field} {name[:100]!r}; valid: {', '.join(valid)}")
        self.name = name
        self.valid = valid


def check_names(db: Database, optimizer: str | None = None, scale: str | None = None) -> None:
    """Raise UnknownName for a filter that names nothing: not in the catalog, and not held by any cell (imported
    results keep names the catalog lacks). The database is read only for a name outside the catalog."""
    optimizers, scales = list(catalog.optimizer_names()), list(catalog.scale_params())
    if (optimizer is None or optimizer in optimizers) and (scale is None or scale in scales):
        return
    with db.session() as s:
        held_optimizers, held_scales = queries.cell_names(s)
    for field, name, known, held in (
        ("optimizer", optimizer, optimizers, held_optimizers),
        ("scale", scale, scales, held_scales),
    ):
        if name is not None and name not in known and name not in held:
            raise UnknownName(field, name, [*known, *(h for h in held if h not in known)])


def inputs_version(db: Database) -> tuple[tuple[Any, ...], ...]:
    """Everything `best`'s answer depends on, as plain values (db.queries.best_inputs_version): equal versions,
    equal answers. Read it before the answer, so an answer is never stored under a version older than its data."""
    with db.session() as s:
        return queries.best_inputs_version(s)


def best(
    db: Database, optimizer: str | None = None, scale: str | None = None, chinchilla: float | None = None
) -> list[BestResult]:
    """One BestResult per (optimizer, scale, chinchilla) group that has a result, smallest scale first within an
    optimizer. Filters narrow the cells; no match is an empty list; an unknown name raises UnknownName."""
    check_names(db, optimizer, scale)
    params = catalog.scale_params()
    with db.session() as s:
        cells = queries.best_cell_rows(s, optimizer, scale, chinchilla)
        unranked = [c for c in cells if c.best_loss is None]
        trials = queries.finished_trial_rows(s, [c.id for c in unranked])
    candidates = [_recorded(c) for c in cells if c.best_loss is not None and math.isfinite(c.best_loss)]
    candidates += _from_trials(unranked, trials)
    considered: dict[Group, int] = {}
    for c in cells:
        considered[_group(c)] = considered.get(_group(c), 0) + 1
    winners: dict[Group, _Candidate] = {}
    for cand in candidates:
        held = winners.get(cand.group)
        if held is None or (cand.loss, cand.cell_id) < (held.loss, held.cell_id):
            winners[cand.group] = cand
    results = [
        BestResult(
            optimizer=group[0],
            scale=group[1],
            chinchilla=group[2],
            non_embedding_params=params.get(group[1]),
            loss=float(w.loss),
            config=w.config,
            near_ties=w.near_ties,
            sweep_id=w.sweep_id,
            sweep_name=w.sweep_name,
            imported=w.imported,
            cell=w.cell,
            trial_id=w.trial_id,
            cells_considered=considered[group],
        )
        for group, w in winners.items()
    ]
    results.sort(key=lambda r: (r.optimizer, r.non_embedding_params or math.inf, r.scale, r.chinchilla))
    return results


def lowest(results: list[BestResult]) -> BestResult | None:
    """The one answer across groups (the CLI's `best --scale S --chinchilla C`, across optimizers): the lowest
    loss, ties to the first in `best`'s order; `cells_considered` counts the cells of every group given."""
    if not results:
        return None
    winner = min(results, key=lambda r: r.loss)  # min keeps the first of equal losses
    return dataclasses.replace(winner, cells_considered=sum(r.cells_considered for r in results))


# ---- ranking ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    cell_id: int
    cell: str
    group: Group
    sweep_id: int
    sweep_name: str
    imported: bool
    loss: float
    config: dict[str, Any] | None
    near_ties: list[dict[str, Any]]
    trial_id: int | None


def _group(cell: queries.BestCellRow) -> Group:
    return (cell.optimizer, cell.scale, cell.chinchilla)


def _recorded(cell: queries.BestCellRow) -> _Candidate:
    """The candidate of a cell whose best the engine (or the importer) recorded."""
    assert cell.best_loss is not None
    return _Candidate(
        cell_id=cell.id,
        cell=cell.key,
        group=_group(cell),
        sweep_id=cell.sweep_id,
        sweep_name=cell.sweep_name,
        imported=cell.sweep_imported,
        loss=float(cell.best_loss),
        config=cell.best_config,
        near_ties=list(cell.near_ties or []),
        trial_id=cell.best_trial_id,
    )


def _tolerance(settings: Any) -> float:
    """The cell's near-tie tolerance (its settings), else the paper's."""
    tolerance = settings.get("tolerance") if isinstance(settings, dict) else None
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not math.isfinite(tolerance):
        return analysis.NEAR_TIE_TOLERANCE
    return float(tolerance)


def _from_trials(cells: list[queries.BestCellRow], trials: list[queries.FinishedTrialRow]) -> list[_Candidate]:
    """Candidates for cells whose best is not recorded yet, ranked from their finished trials."""
    by_cell: dict[int, list[queries.FinishedTrialRow]] = {}
    for t in trials:
        by_cell.setdefault(t.cell_id, []).append(t)
    out = []
    for cell in cells:
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
        ranked = analysis.best_per_cell(frame, tolerance=_tolerance(cell.settings), n_boot=0).iloc[0]
        if ranked["best_config"] is None or not math.isfinite(ranked["best_loss"]):
            continue
        key = analysis.config_key(ranked["best_config"])
        matching = [t for t in rows if t.status == "completed" and analysis.config_key(t.config) == key]
        trial = min(matching, key=lambda t: (t.final_loss, t.id), default=None)
        out.append(
            _Candidate(
                cell_id=cell.id,
                cell=cell.key,
                group=_group(cell),
                sweep_id=cell.sweep_id,
                sweep_name=cell.sweep_name,
                imported=cell.sweep_imported,
                loss=float(ranked["best_loss"]),
                config=dict(ranked["best_config"]),
                near_ties=[dict(c) for c in ranked["near_ties"]],
                trial_id=trial.id if trial is not None else None,
            )
        )
    return out
