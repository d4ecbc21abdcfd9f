"""confirm_seeds and tolerance auto (sweep_service/noise.py): the pure rules, the spec, and the driver on a database."""

from __future__ import annotations

import math
from typing import Any

import pytest

from db import repository as repo
from db.session import Database
from sweep_service import noise
from sweep_service.engine import SweepDriver
from sweep_service.spec import SpecError, plan_document
from tests.sweep_service.fake_sweep import drive, new_sweep, objective, spec

SEED_OFFSET = {0: -0.01, 1: 0.0, 2: 0.01}  # one config's loss over seeds 0, 1, 2: std exactly 0.01


def noisy(run: dict[str, Any]) -> float:
    return objective(run["hparams"]) + SEED_OFFSET[run["seed"]]


def test_auto_tolerance_is_twice_the_std_with_the_paper_floor() -> None:
    assert noise.auto_tolerance([3.0, 3.01, 3.02]) == pytest.approx(0.02)
    assert noise.auto_tolerance([3.0, 3.0001, 3.0002]) == noise.TOLERANCE  # the paper's 3e-3 is the floor
    assert noise.auto_tolerance([3.0, math.inf, 3.02]) == noise.TOLERANCE  # a diverged seed: std unknown


def test_confirm_ranks_by_seed_mean_and_pools_the_std() -> None:
    lucky = noise.SeedStat({"lr": 1}, [0, 1, 2], [2.90, 3.10, 3.10])  # best single seed, worse mean
    steady = noise.SeedStat({"lr": 2}, [0, 1, 2], [2.95, 2.96, 2.97])
    result = noise.confirm([lucky, steady], tolerance=0.05)
    assert result.best == {"lr": 2} and result.best_loss == pytest.approx(2.96)
    assert result.near_ties == [{"lr": 2}]  # 3.0333 is not within 0.05 of 2.96
    assert result.settings["best_std"] == pytest.approx(0.01)
    pooled = math.sqrt((2 * lucky.std**2 + 2 * 0.01**2) / 4)  # type: ignore[operator]
    assert result.settings["noise_std"] == pytest.approx(pooled)
    assert [s["config"] for s in result.settings["seed_stats"]] == [{"lr": 2}, {"lr": 1}]


def test_confirm_uses_the_one_near_tie_rule() -> None:
    best = noise.SeedStat({"lr": 1}, [0], [3.529])
    edge = noise.SeedStat({"lr": 2}, [0], [3.532])  # 3.532 - 3.529 rounds above 3e-3: in (coordinate_descent.near_tie)
    assert noise.confirm([edge, best], tolerance=3e-3).near_ties == [{"lr": 1}, {"lr": 2}]


def test_spec_fields_are_checked() -> None:
    with pytest.raises(SpecError) as err:
        plan_document(spec(tolerance="auto"))
    assert err.value.errors[0][0] == "tolerance" and "confirm_seeds" in err.value.errors[0][1]
    with pytest.raises(SpecError) as err:
        plan_document(spec(confirm_seeds=101))
    assert err.value.errors[0][0] == "confirm_seeds"
    plan = plan_document(spec(tolerance="auto", confirm_seeds=2))
    assert plan.tolerance_auto and plan.confirm_seeds == 2 and plan.tolerance == noise.TOLERANCE
    assert plan_document(spec(tolerance="1e-2")).tolerance == 0.01  # YAML 1.1 reads 1e-2 as a string


def test_confirm_seeds_rerun_the_best_and_keep_seed_stats(tmp_path: Any) -> None:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    db = Database(url)
    sweep_id = new_sweep(db, spec(confirm_seeds=2))
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver, loss_of=noisy)
    with db.session() as s:
        (cell,) = repo.cells_of(s, sweep_id)
        assert cell.status == "converged" and "confirming" not in cell.settings
        assert cell.best_config is not None and (cell.best_config["lr"], cell.best_config["wd"]) == (1.2e-2, 0.1)
        assert cell.best_loss == pytest.approx(3.0)  # the seed mean, not seed 0's 2.99
        best = cell.settings["seed_stats"][0]
        assert best["seeds"] == [0, 1, 2] and best["mean"] == pytest.approx(3.0)
        assert cell.settings["best_std"] == pytest.approx(0.01)
        assert cell.settings["noise_std"] == pytest.approx(0.01)
        seeds = {
            t.seed
            for t in repo.trials_of_cell(s, cell.id)
            if t.config_key == repo.config_key({"lr": 1.2e-2, "wd": 0.1})
        }
        assert seeds == {0, 1, 2}
    db.dispose()


def test_tolerance_auto_measures_the_baseline_before_deciding(tmp_path: Any) -> None:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    db = Database(url)
    doc = spec(tolerance="auto", confirm_seeds=2, optimizers=["adamw", "lion"])
    doc["search"]["lion"] = {"tune": ["lr"], "grid": {"lr": [1e-3, 2e-3]}, "baseline": {"lr": 1e-3}}
    sweep_id = new_sweep(db, doc)
    driver = SweepDriver(db, sweep_id)
    driver.prepare()

    def loss_of(run: dict[str, Any]) -> float:
        if run["optimizer"] == "lion":
            return 3.5 - 1e2 * run["hparams"]["lr"] + SEED_OFFSET[run["seed"]]  # lr 2e-3: 0.1 lower
        return noisy(run)

    drive(driver, loss_of=loss_of)
    with db.session() as s:
        cells = {c.key: c for c in repo.cells_of(s, sweep_id)}
        for cell in cells.values():
            assert cell.status == "converged"
            assert cell.settings["tolerance_auto"] == "measured"
            assert cell.settings["tolerance"] == pytest.approx(0.02)  # 2 x the baseline's seed std 0.01
            assert cell.settings["tolerance_noise"]["cell"] == "adamw/tiny-130k/1"
        baseline = repo.config_key({"lr": 3e-3, "wd": 0.0})
        adamw = cells["adamw/tiny-130k/1"]
        noise_trials = [t for t in repo.trials_of_cell(s, adamw.id) if t.config_key == baseline]
        assert {t.seed for t in noise_trials} == {0, 1, 2}
        # The extra seeds are queued with the reference cell's first round, ahead of the other cells' work.
        lion_first = min(t.id for t in repo.trials_of_cell(s, cells["lion/tiny-130k/1"].id))
        assert all(t.id < lion_first for t in noise_trials)
        assert cells["lion/tiny-130k/1"].best_config["lr"] == 2e-3  # type: ignore[index]
    db.dispose()


def test_status_and_the_api_show_each_cells_seed_noise(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from db.migrate import upgrade
    from sweep_service.cli import main
    from sweep_service.settings import Settings, get_settings

    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    url = get_settings().db_url()
    upgrade(url)
    db = Database(url)
    sweep_id = new_sweep(db, spec(confirm_seeds=2))
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    drive(driver, loss_of=noisy)
    db.dispose()

    assert main(["status", str(sweep_id)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("adamw/tiny-130k/1"))
    assert "3.0000" in row and "0.0100 (3 seeds)" in row and "0.003" in row  # best ± std, pooled noise, tolerance
    get_settings.cache_clear()

    settings = Settings(SWEEP_HOME=tmp_path, SWEEP_API_TOKEN="", SWEEP_API_READ_TOKENS="", SWEEP_DATA_ROOTS="")
    with TestClient(create_app(url, settings)) as client:
        body = client.get(f"/sweeps/{sweep_id}").json()
    noise_out = body["cells"][0]["noise"]
    assert noise_out["seeds"] == 3 and noise_out["best_mean"] == pytest.approx(3.0)
    assert noise_out["best_std"] == pytest.approx(0.01) and noise_out["noise_std"] == pytest.approx(0.01)
    assert noise_out["tolerance"] == pytest.approx(3e-3) and noise_out["tolerance_auto"] is None
