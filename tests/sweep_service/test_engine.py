"""The engine's driver against real databases with a synthetic objective (no Ray, no torch training).

The real trainer on real Ray is tested in test_engine_ray.py; here the trial results come from a function of
the config, so the planning, recording, resume and Optuna mirroring are checked exactly.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from db import repository as repo
from db.session import Database
from sweep_service.engine import SweepDriver, optuna_storage, study_name
from tests.sweep_service.fake_sweep import drive, new_sweep, spec


def test_coordinate_descent_through_the_database(db_url: str) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver)
    with db.session() as s:
        (cell,) = repo.cells_of(s, sweep_id)
        trials = repo.trials_of_cell(s, cell.id)
        assert cell.status == "converged"
        assert cell.best_config is not None
        assert (cell.best_config["lr"], cell.best_config["wd"]) == (1.2e-2, 0.1)
        assert cell.best_loss == pytest.approx(3.0)
        assert cell.best_config["beta2"] == 0.98  # fixed values are part of the config
        assert len({t.config_key for t in trials}) == len(trials)  # nothing ran twice
        diverged = [t for t in trials if t.status == "diverged"]
        assert diverged and all(t.final_loss is None for t in diverged)
        assert len(repo.curve(s, trials[0].id)) == 1
        n = len(trials)
    study = optuna.load_study(study_name=study_name(sweep_id, "adamw/tiny-130k/1"), storage=db_url)
    assert len(study.trials) == n  # every trial mirrored in the cell's Optuna study
    assert study.best_value == pytest.approx(3.0)
    assert study.best_params == {"lr": 1.2e-2, "wd": 0.1}
    db.dispose()


def test_a_dead_driver_is_resumed_without_losing_or_repeating_trials(db_url: str) -> None:
    db = Database(db_url)
    reference_id = new_sweep(db, spec(name="ref"))
    ref = SweepDriver(db, reference_id)
    ref.prepare()
    drive(ref)

    sweep_id = new_sweep(db, spec())
    first = SweepDriver(db, sweep_id)
    first.prepare()
    done = drive(first, stop_after=4)  # four finished, a few more handed out and left running: the driver dies
    with db.session() as s:
        before = {t.id: t.final_loss for t in repo.trials_of_sweep(s, sweep_id, ["completed", "diverged"])}
        assert set(before) == set(done) and repo.trials_of_sweep(s, sweep_id, ["running"])
    second = SweepDriver(db, sweep_id)
    assert second.prepare() >= 1  # the in-flight trials go back to pending
    drive(second)
    with db.session() as s:
        trials = repo.trials_of_sweep(s, sweep_id)
        assert {t.id: t.final_loss for t in trials if t.id in before} == before  # finished ones kept as they were
        assert len({t.config_key for t in trials}) == len(trials)
        assert all(t.status in ("completed", "diverged") for t in trials)
        (cell,) = repo.cells_of(s, sweep_id)
        (ref_cell,) = repo.cells_of(s, reference_id)
        assert cell.best_config == ref_cell.best_config and cell.best_loss == ref_cell.best_loss
        assert len(trials) == len(repo.trials_of_sweep(s, reference_id))
    db.dispose()


@pytest.mark.parametrize("strategy", ["random", "tpe", "grid"])
def test_optuna_strategies_respect_budget_and_never_repeat(strategy: str, tmp_path: Any) -> None:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'o.db'}"
    upgrade(url)
    db = Database(url)
    sweep_id = new_sweep(db, spec(strategy=strategy, budget=7))
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver)
    with db.session() as s:
        trials = repo.trials_of_sweep(s, sweep_id)
        assert len(trials) == 7
        assert len({t.config_key for t in trials}) == 7
        (cell,) = repo.cells_of(s, sweep_id)
        assert cell.status == "exhausted" and cell.best_loss is not None
    study = optuna.load_study(study_name=study_name(sweep_id, "adamw/tiny-130k/1"), storage=url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) >= 7


def test_failed_trial_is_recorded_with_its_reason(tmp_path: Any) -> None:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'f.db'}"
    upgrade(url)
    db = Database(url)
    sweep_id = new_sweep(db, spec())
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    trial = driver.next_trial()
    assert isinstance(trial, dict)
    driver.record_final(trial["trial_id"], None, "failed after 3 attempts: worker died")
    with db.session() as s:
        row = repo.get_trial(s, trial["trial_id"])
        assert row is not None and row.status == "failed" and "worker died" in (row.reason or "")


def test_phase_two_cell_starts_from_the_other_cells_best(tmp_path: Any) -> None:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    db = Database(url)
    doc = spec(
        cells=[
            {
                "optimizer": "adamw",
                "scale": "tiny-300k",
                "chinchilla": 1,
                "baseline_from": "adamw/tiny-130k/1",
                "tune": ["lr"],
            }
        ]
    )
    sweep_id = new_sweep(db, doc)
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver)
    with db.session() as s:
        first, second = repo.cells_of(s, sweep_id)
        assert first.status == second.status == "converged"
        assert second.space["fixed"]["wd"] == 0.1  # not re-tuned: taken from the first cell's best
        assert second.space["baseline"]["lr"] == 1.2e-2
        first_trials, second_trials = repo.trials_of_cell(s, first.id), repo.trials_of_cell(s, second.id)
        assert min(t.id for t in second_trials) > max(t.id for t in first_trials if t.round == 1)


def test_random_strategy_keeps_finding_new_configs_on_a_larger_grid(tmp_path: Any) -> None:
    # A sampler re-created with a fixed seed each planning pass replays the same draws and stalls.
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    db = Database(url)
    doc = spec(strategy="random", budget=30)
    doc["search"]["adamw"]["tune"] = ["lr", "wd", "beta2"]
    sweep_id = new_sweep(db, doc)
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver, limit=200)
    with db.session() as s:
        trials = repo.trials_of_sweep(s, sweep_id)
        assert len(trials) == 30 and len({t.config_key for t in trials}) == 30


def test_a_cell_with_nothing_to_search_runs_its_config_once(tmp_path: Any) -> None:
    # `tune: []` (or a Phase II cell whose every hyperparameter was stable): one run of the start config.
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'fixed.db'}"
    upgrade(url)
    db = Database(url)
    cell = {"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 2, "baseline_from": "adamw/tiny-130k/1"}
    sweep_id = new_sweep(db, spec(cells=[{**cell, "tune": []}]))
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver)
    with db.session() as s:
        first, second = repo.cells_of(s, sweep_id)
        second_trials = repo.trials_of_cell(s, second.id)
        assert second.status == "converged" and len(second_trials) == 1
        assert second_trials[0].config["lr"] == first.best_config["lr"] == 1.2e-2  # type: ignore[index]
        assert second.best_loss == second_trials[0].final_loss and second.best_trial_id == second_trials[0].id
        study = optuna.load_study(study_name=study_name(sweep_id, second.key), storage=optuna_storage(url))
        assert [t.value for t in study.trials] == [second.best_loss]
