"""`strategy: grid` runs its whole grid and finishes (issue 13: Optuna's GridSampler called `study.stop()` from
`study.tell` once the grid was used up, which raises outside `study.optimize`; see sweep_service/proposers/grid.py)."""

from __future__ import annotations

from pathlib import Path

import optuna
from fake_sweep import drive, new_sweep, spec

from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.engine import SweepDriver, study_name


def test_grid_strategy_runs_every_config_once_and_finishes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    upgrade(url)
    db = Database(url)
    try:
        sweep_id = new_sweep(db, spec(strategy="grid", budget=100, seeds=[0, 1]))  # budget > the 12-config grid
        driver = SweepDriver(db, sweep_id)
        driver.prepare()
        drive(driver, limit=500)
        assert driver.next_trial() == "FINISHED"
        with db.session() as s:
            trials = repo.trials_of_sweep(s, sweep_id)
            assert len({t.config_key for t in trials}) == 12 and len(trials) == 24  # 4 lr x 3 wd, two seeds
            assert all(t.status in ("completed", "diverged") for t in trials)
            (cell,) = repo.cells_of(s, sweep_id)
            assert cell.status == "exhausted"
            assert cell.best_config is not None and cell.best_config["lr"] == 1.2e-2 and cell.best_config["wd"] == 0.1
        study = optuna.load_study(study_name=study_name(sweep_id, "adamw/tiny-130k/1"), storage=url)
        assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    finally:
        db.dispose()
