"""sweep_service.external without HTTP: leases, expiry, idempotent results, and the same decisions as the
in-process engine on a deterministic objective, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
from objective import SPEC, loss

from db import repository as repo
from db.session import Database
from sweep_service import external
from sweep_service.engine import SweepDriver


def _create(db: Database, spec: dict[str, Any]) -> int:
    with db.session() as s:
        return repo.create_sweep(s, spec["name"], spec).id


def _in_process_bests(db: Database) -> dict[str, Any]:
    """The engine's own loop (what Ray Tune drives): next_trial -> run -> record_final."""
    sweep_id = _create(db, {**SPEC, "executor": "ray"})
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    while True:
        nxt = driver.next_trial()
        if nxt == "FINISHED":
            break
        assert isinstance(nxt, dict)
        run = nxt["run"]
        value = loss(run["hparams"], run["seed"])
        driver.record_final(nxt["trial_id"], {"kind": "final", "status": "completed", "final_eval_loss": value})
    return _bests(db, sweep_id)


def _bests(db: Database, sweep_id: int) -> dict[str, Any]:
    with db.session() as s:
        return {c.key: (c.status, c.best_loss, c.best_config, c.near_ties) for c in repo.cells_of(s, sweep_id)}


@pytest.fixture
def db(db_url: str) -> Any:
    database = Database(db_url)
    yield database
    database.dispose()


def test_external_sweep_makes_the_engines_decisions_and_survives_a_lost_lease(db: Database) -> None:
    expected = _in_process_bests(db)
    sweep_id = _create(db, SPEC)
    lease = 0.5
    first = external.suggest(db, sweep_id, "a", 2, lease)
    assert [t["config"]["lr"] for t in first["trials"]] and not first["done"]
    lost = first["trials"][0]
    # Worker a stops answering; once its lease has run out, its trial is suggested again, to b.
    time.sleep(lease * 2)
    again = external.suggest(db, sweep_id, "b", 50, 600)
    assert lost["id"] in [t["id"] for t in again["trials"]]
    with pytest.raises(external.Conflict):
        external.heartbeat(db, lost["id"], "a", 600)
    with pytest.raises(external.Conflict):
        external.complete(db, lost["id"], "a", final_loss=1.0)
    seen: set[tuple[str, int]] = set()
    queue = list(again["trials"])
    while True:
        for t in queue:
            key = (repo.config_key(t["config"]), t["seed"])
            assert key not in seen  # no config runs twice for a seed
            seen.add(key)
            assert external.report(db, t["id"], "b", [(1, 3.0)]) is None
            out = external.complete(db, t["id"], "b", final_loss=loss(t["config"], t["seed"]))
            assert out.status == "completed"
            # A repeat of the same result is accepted; a different one is not.
            assert external.complete(db, t["id"], "b", final_loss=loss(t["config"], t["seed"])) == out
            with pytest.raises(external.Conflict):
                external.complete(db, t["id"], "b", final_loss=0.5)
        nxt = external.suggest(db, sweep_id, "b", 50, 600)
        if nxt["done"]:
            break
        queue = nxt["trials"]
        assert queue  # one worker: every trial it holds is finished, so the next round is runnable
    assert _bests(db, sweep_id) == expected
    with db.session() as s:
        assert repo.get_sweep(s, sweep_id).status == "completed"  # type: ignore[union-attr]


def test_divergence_rule_applies_to_reported_losses(db: Database) -> None:
    sweep_id = _create(db, {**SPEC, "divergence": {"max_loss": 100}})
    t1, t2 = external.suggest(db, sweep_id, "w", 2, 600)["trials"]
    stop = external.report(db, t1["id"], "w", [(1, 5.0), (2, 1e6)])
    assert stop is not None and stop.status == "diverged" and "> 100" in (stop.reason or "")
    assert external.complete(db, t2["id"], "w", final_loss=float("nan")).status == "diverged"


def test_idempotency_key_returns_the_same_trials(db: Database) -> None:
    sweep_id = _create(db, SPEC)
    a = external.suggest(db, sweep_id, "w", 1, 600, key="k1")
    assert external.suggest(db, sweep_id, "w", 1, 600, key="k1") == a
    b = external.suggest(db, sweep_id, "w", 1, 600, key="k2")
    assert b["trials"][0]["id"] != a["trials"][0]["id"]


def test_a_ray_sweep_is_not_served(db: Database) -> None:
    sweep_id = _create(db, {**SPEC, "executor": "ray"})
    with pytest.raises(external.Conflict):
        external.suggest(db, sweep_id, "w", 1, 600)
    with pytest.raises(external.NotFound):
        external.suggest(db, sweep_id + 100, "w", 1, 600)
    with db.session() as s:
        assert repo.claimable_sweep_ids(s) == [sweep_id]
        ext = repo.create_sweep(s, "x", SPEC).id
        assert ext not in repo.claimable_sweep_ids(s) and not repo.claim_sweep(s, ext, "d", 60)


def test_custom_scales_name_cells_and_carry_their_parameter_count(db: Database) -> None:
    from sweep_service.spec import SpecError, plan_document

    spec = {**SPEC, "scales": ["my-gpt"], "custom_scales": {"my-gpt": {"params": 1_000_000}}}
    with pytest.raises(SpecError, match="custom_scales need `executor: external`"):
        plan_document({**spec, "executor": "ray"})
    with pytest.raises(SpecError, match=r"scales\.0"):
        plan_document({**spec, "custom_scales": {}})
    sweep_id = _create(db, spec)
    trials = external.suggest(db, sweep_id, "w", 1, 600)["trials"]
    assert trials[0]["scale"] == "my-gpt" and trials[0]["cell"] == "adamw/my-gpt/1"
    with db.session() as s:
        (cell,) = repo.cells_of(s, sweep_id)
        assert cell.settings["non_embedding_params"] == 1_000_000


def _run_to_the_end(db: Database, sweep_id: int) -> None:
    while True:
        answer = external.suggest(db, sweep_id, "w", 50, 600)
        if answer["done"]:
            return
        assert answer["trials"]
        for t in answer["trials"]:
            external.complete(db, t["id"], "w", final_loss=loss(t["config"], t["seed"]))


def test_phase_two_runs_on_custom_scales(db: Database) -> None:
    spec = {
        **SPEC,
        "optimizers": [],
        "scales": [],
        "seeds": [0],
        "custom_scales": {"s1": {"params": 100_000}, "s2": {"params": 400_000}, "s3": {"params": 1_600_000}},
        "cells": [
            {"optimizer": "adamw", "scale": "s1", "chinchilla": 1},
            {"optimizer": "adamw", "scale": "s2", "chinchilla": 1},
            {"optimizer": "adamw", "scale": "s3", "chinchilla": 1, "phase": 2},
        ],
    }
    sweep_id = _create(db, spec)
    _run_to_the_end(db, sweep_id)
    with db.session() as s:
        cells = {c.key: c for c in repo.cells_of(s, sweep_id)}
        assert repo.get_sweep(s, sweep_id).status == "completed"  # type: ignore[union-attr]
    phase_two = cells["adamw/s3/1"]
    # It started from the from-cell with the most parameters (s2, by the counts the spec gave) and found the
    # objective's minimum, which does not depend on the scale.
    assert phase_two.status in ("converged", "exhausted") and phase_two.best_config is not None
    assert (phase_two.best_config["lr"], phase_two.best_config["wd"]) == (0.012, 0.2)
    assert phase_two.settings["non_embedding_params"] == 1_600_000


def test_a_closed_or_deleted_sweep_keeps_no_planner(db: Database) -> None:
    """A long-running server keeps one planner per open sweep, none per sweep it ever served."""
    closed, deleted = _create(db, SPEC), _create(db, SPEC)
    for sweep_id in (closed, deleted):
        assert external.suggest(db, sweep_id, "w", 1, 600)["trials"]
        assert (db.url, sweep_id) in external._DRIVERS
    with db.session() as s:
        assert repo.set_sweep_status(s, closed, ["queued", "running"], "cancelled")
    assert external.suggest(db, closed, "w", 1, 600)["trials"] == []
    assert (db.url, closed) not in external._DRIVERS
    with db.session() as s:
        assert repo.delete_sweep(s, deleted, ["queued", "running"]) is not None
    with pytest.raises(external.NotFound):
        external.suggest(db, deleted, "w", 1, 600)
    assert (db.url, deleted) not in external._DRIVERS
