"""Rows for the use-case tests, written through db.repository as the engine writes them."""

from __future__ import annotations

from typing import Any

from db import repository as repo
from db.session import Database

# One trial: (config, seed, status, final loss); status completed, diverged or running.
Run = tuple[dict[str, Any], int, str, float | None]


def add_sweep(
    db: Database,
    name: str,
    cells: dict[str, list[Run]],
    recorded: dict[str, tuple[float, dict[str, Any]]] | None = None,
    imported: bool = False,
) -> tuple[int, dict[str, int], list[int]]:
    """A running sweep with `cells` ("optimizer/scale/chinchilla" -> runs) and, for the keys of `recorded`, a
    recorded best (loss, config). Returns the sweep id, the cell ids by key and the trial ids in order."""
    recorded = recorded or {}
    cell_ids: dict[str, int] = {}
    trial_ids: list[int] = []
    with db.session() as s:
        sweep = repo.create_sweep(s, name, {"name": name}, imported=imported)
        assert repo.set_sweep_status(s, sweep.id, ["queued"], "running")
        for key in {**cells, **recorded}:
            optimizer, scale, multiple = key.split("/")
            best: dict[str, Any] = {}
            if key in recorded:
                best_loss, best_config = recorded[key]
                best = {"best_loss": best_loss, "best_config": best_config, "near_ties": [best_config]}
            cell = repo.add_cell(
                s,
                sweep.id,
                key=key,
                optimizer=optimizer,
                scale=scale,
                chinchilla=float(multiple),
                strategy="coordinate_descent",
                space={},
                settings={"tolerance": 3e-3},
                status="converged" if best else "running",
                **best,
            )
            cell_ids[key] = cell.id
            for config, seed, status, loss in cells.get(key, []):
                trial = repo.add_trial(s, cell, config, dict(config), seed, 1)
                assert trial is not None
                trial_ids.append(trial.id)
                assert repo.transition_trial(s, trial.id, ["pending"], "running")
                if status != "running":
                    assert repo.transition_trial(s, trial.id, ["running"], status, final_loss=loss)
    return int(sweep.id), cell_ids, trial_ids
