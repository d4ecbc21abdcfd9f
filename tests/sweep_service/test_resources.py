"""Resources per trial against what Ray can give (sweep_service/resources.py, resource_wait.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service import resource_wait
from sweep_service.cli import main
from sweep_service.resources import ResourceError, local_problem, shortfall
from sweep_service.settings import get_settings


def test_shortfall_names_what_is_missing() -> None:
    assert shortfall(1, 0, {"cpu": 2.0, "gpu": 0.0}) is None
    assert shortfall(0.5, 0, {"cpu": 0.5, "gpu": 0.0}) is None  # fractions fit exactly
    assert shortfall(4, 1, {"cpu": 2.0, "gpu": 0.0}) == "{cpu: 4, gpu: 1} per trial; there is {cpu: 2, gpu: 0}"
    assert local_problem(1, 0, num_cpus=1) is None
    assert (
        local_problem(2, 0, num_cpus=1)
        == "this machine's Ray can never run a trial: {cpu: 2} per trial; there is {cpu: 1, gpu: 0}"
    )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'sweep-service.db'}"
    upgrade(url)
    return Database(url)


def new_sweep(db: Database) -> int:
    with db.session() as s:
        sweep = repo.create_sweep(s, "w", {"name": "w"})
        repo.set_sweep_status(s, sweep.id, ["queued"], "running")
        return int(sweep.id)


def test_a_cluster_too_small_for_now_shows_waiting_until_a_trial_starts(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ray's view of the cluster is the only fake: one live 1-CPU node (ray.nodes() on a real cluster).
    monkeypatch.setattr(resource_wait, "_cluster_capacity", lambda: {"cpu": 1.0, "gpu": 0.0})
    sweep_id = new_sweep(db)
    resource_wait.check_started(db.session, sweep_id, cpu=4, gpu=0, local=False)
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["status"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "running" in out and "waiting for resources: {cpu: 4} per trial; there is {cpu: 1, gpu: 0}" in out
    resource_wait.clear_waiting(db.session, sweep_id)  # what ClearWaiting does when Tune starts a trial
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None and sweep.status == "running" and sweep.error is None


def test_a_local_ray_too_small_fails_the_sweep_with_the_reason(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource_wait, "_cluster_capacity", lambda: {"cpu": 2.0, "gpu": 0.0})
    sweep_id = new_sweep(db)
    with pytest.raises(ResourceError, match="never run a trial"):
        resource_wait.check_started(db.session, sweep_id, cpu=1, gpu=1, local=True)
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None and sweep.status == "failed" and "{gpu: 1} per trial" in (sweep.error or "")
