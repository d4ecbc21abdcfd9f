"""Builders shared by the API tests: settings, and sweeps/cells/trials/curves written the way the engine writes
them (db.repository, compare-and-set transitions). A module of its own so test files can import it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from db import repository as repo
from db.session import Database
from sweep_service.settings import Settings

T0 = datetime(2025, 1, 1, 12, 0, 0)
MakeClient = Callable[..., TestClient]  # make_client(**settings by env name)


def make_settings(home: Path, **env: Any) -> Settings:
    """Settings with every field the API reads given explicitly, so the test machine's environment is ignored."""
    values: dict[str, Any] = {
        "SWEEP_HOME": str(home),
        "SWEEP_API_TOKEN": "",
        "SWEEP_API_READ_TOKENS": "",
        "SWEEP_DATA_ROOTS": "",
        "SWEEP_MAX_BODY_BYTES": 1_000_000,
    }
    values.update(env)
    return Settings(**values)


# ---- writing results the way the engine does -----------------------------------------------------------


@dataclass
class T:
    """One trial to store: its config, how it ended, and what it reported."""

    config: dict[str, Any]
    status: str = "completed"
    loss: float = 0.0  # final eval loss (stored for completed trials only)
    seed: int = 0
    seconds: float = 10.0  # wall time from start to finish, also its device seconds
    reason: str | None = None
    curve: list[tuple[int, float | None, float | None]] = field(default_factory=list)


@dataclass
class Stored:
    sweep_id: int
    cells: dict[str, int]  # key -> cell id
    trials: list[int]  # in the order given


def split_key(key: str) -> tuple[str, str, float]:
    optimizer, scale, multiple = key.split("/")
    return optimizer, scale, float(multiple)


def store_sweep(
    db: Database,
    cells: dict[str, list[T]],
    name: str = "stored",
    status: str = "running",
    imported: bool = False,
    max_concurrent: int = 2,
    record_best: bool = True,
    tolerance: float = 3e-3,
) -> Stored:
    """Write a sweep with its cells and trials through db.repository, as SweepDriver and record_final do."""
    keys = [split_key(k) for k in cells]
    doc = {
        "name": name,
        "optimizers": sorted({k[0] for k in keys}),
        "scales": sorted({k[1] for k in keys}),
        "chinchilla": sorted({k[2] for k in keys}),
        "max_concurrent": max_concurrent,
    }
    trial_ids: list[int] = []
    cell_ids: dict[str, int] = {}
    with db.session() as s:
        sweep = repo.create_sweep(s, name, doc, imported=imported)
        if status != "queued":
            repo.set_sweep_status(s, sweep.id, ["queued"], "running", started_at=T0)
        if status not in ("queued", "running"):
            repo.set_sweep_status(s, sweep.id, ["running"], status)
        for key, trials in cells.items():
            optimizer, scale, multiple = split_key(key)
            names = sorted({n for t in trials for n in t.config})
            grid = {n: list(dict.fromkeys(t.config[n] for t in trials if n in t.config)) for n in names}
            space = {"grid": grid, "baseline": {}, "fixed": {}}
            cell = repo.add_cell(
                s,
                sweep.id,
                key=key,
                optimizer=optimizer,
                scale=scale,
                chinchilla=multiple,
                strategy="coordinate_descent",
                space=space,
                settings={"baseline_from": None, "tolerance": tolerance},
                status="running",
            )
            cell_ids[key] = cell.id
            for i, t in enumerate(trials):
                trial = repo.add_trial(s, cell, t.config, dict(t.config), t.seed, 1)
                assert trial is not None, f"duplicate trial {t}"
                trial_ids.append(trial.id)
                if t.status == "pending":
                    continue
                start = T0 + timedelta(minutes=i)
                assert repo.transition_trial(s, trial.id, ["pending"], "running", started_at=start, worker="w1")
                repo.add_curve_points(s, trial.id, t.curve)
                if t.status == "running":
                    continue
                fields: dict[str, Any] = {"reason": t.reason, "finished_at": start + timedelta(seconds=t.seconds)}
                if t.status in ("completed", "diverged"):
                    fields.update(
                        final_loss=t.loss if t.status == "completed" else None,
                        initial_loss=5.5,
                        steps=100,
                        total_steps=100,
                        tokens=100 * 32 * 128,
                        tokens_per_second=1000.0,
                        device_seconds=t.seconds,
                        repro={"torch": "2.13.0", "device": "cpu", "seed": t.seed, "data": {"sha256": "abc"}},
                    )
                assert repo.transition_trial(s, trial.id, ["running"], t.status, **fields)
            ids = trial_ids[-len(trials) :]
            completed = [(t.loss, tid, t.config) for t, tid in zip(trials, ids, strict=True) if t.status == "completed"]
            if record_best and completed:
                best_loss, best_id, best_config = min(completed, key=lambda c: (c[0], c[1]))
                ties = [c[2] for c in sorted(completed, key=lambda c: c[0]) if c[0] <= best_loss + tolerance]
                repo.update_cell(
                    s, cell.id, best_loss=best_loss, best_config=best_config, best_trial_id=best_id, near_ties=ties
                )
        sweep_id = sweep.id
    return Stored(sweep_id, cell_ids, trial_ids)


def quickstart(name: str = "quick", **extra: Any) -> dict[str, Any]:
    """A small valid sweep spec."""
    return {"name": name, "optimizers": ["adamw"], "scales": ["tiny-130k"], "chinchilla": [1], **extra}
