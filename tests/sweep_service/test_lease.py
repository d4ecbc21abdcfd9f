"""Fencing: a lease carries an epoch, every write of a run is conditional on it, and `run` claims it too.

Reproduces issue 13's "two dispatchers run one sweep": a holder paused past its lease (here: simply not
heartbeating) is superseded by a second claim; its writes then raise LeaseLost and change nothing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from db import repository as repo
from db.retry import retrying, transient
from db.session import Database
from sweep_service import lease as leases
from sweep_service.dispatcher import Dispatcher
from sweep_service.engine import SweepDriver
from sweep_service.lease import LeaseLost
from tests.sweep_service.fake_sweep import drive, final, new_sweep, spec


def test_a_superseded_holder_writes_nothing(db_url: str) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())
    first = leases.claim(db, sweep_id, "first", 0.2)
    assert first is not None and first.epoch == 1
    driver = SweepDriver(db, sweep_id, lease=first)
    driver.prepare()
    handed = [driver.next_trial() for _ in range(2)]
    assert all(isinstance(h, dict) for h in handed)
    time.sleep(0.5)  # paused past its lease
    second = leases.claim(db, sweep_id, "second", 60)
    assert second is not None and second.epoch == 2
    with db.session() as s:
        before = [(t.id, t.status, t.final_loss) for t in repo.trials_of_sweep(s, sweep_id)]
    trial = handed[0]
    assert isinstance(trial, dict)
    with pytest.raises(LeaseLost):
        driver.record_final(trial["trial_id"], final(trial["run"]["hparams"]))
    with pytest.raises(LeaseLost):
        driver.record_eval(trial["trial_id"], 5, 4.0, None)
    assert first.lost.is_set() and driver.stopping()
    assert driver.next_trial() == "FINISHED"  # hands out nothing more
    with db.session() as s:
        assert [(t.id, t.status, t.final_loss) for t in repo.trials_of_sweep(s, sweep_id)] == before
        assert repo.curve(s, trial["trial_id"]) == []
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None and sweep.claimed_by == "second" and sweep.lease_epoch == 2
    # The new holder resumes and finishes; nothing ran twice.
    resumed = SweepDriver(db, sweep_id, lease=second)
    assert resumed.prepare() == 2
    drive(resumed)
    with db.session() as s:
        trials = repo.trials_of_sweep(s, sweep_id)
        assert len({(t.config_key, t.seed) for t in trials}) == len(trials)
    db.dispose()


def test_run_refuses_a_sweep_another_process_holds_and_names_it(db_url: str) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())
    assert leases.claim(db, sweep_id, "host-b:4242:abcd", 60) is not None
    with pytest.raises(leases.LeaseHeld, match="host-b:4242:abcd"):
        leases.claim_or_raise(db, sweep_id, leases.default_owner(), 60)
    db.dispose()


def test_a_dead_local_holder_is_superseded_at_once(db_url: str) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer exists: a `run` killed with SIGKILL
    import socket

    dead = f"{socket.gethostname()}:{child.pid}:dead"
    assert leases.claim(db, sweep_id, dead, 3600) is not None
    lease = leases.claim(db, sweep_id, leases.default_owner(), 60)
    assert lease is not None and lease.epoch == 2
    db.dispose()


def test_the_heartbeat_survives_database_errors(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())
    lease = leases.claim(db, sweep_id, "me", 0.6)
    assert lease is not None
    real = repo.heartbeat
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> bool:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OperationalError("UPDATE sweeps", {}, Exception("server closed the connection unexpectedly"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repo, "heartbeat", flaky)
    lines: list[str] = []
    beat = leases.Heartbeat(db, lease, lines.append)
    beat.start()
    deadline = time.monotonic() + 30
    while calls["n"] < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert beat.is_alive() and calls["n"] >= 5 and not lease.lost.is_set()
    beat.stop()
    assert any("database unavailable" in line for line in lines) and any("back" in line for line in lines)
    db.dispose()


def test_a_dispatcher_that_lost_its_lease_does_not_mark_the_sweep_failed(db_url: str, tmp_path: object) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())

    def superseded(sid: int) -> None:
        with db.session() as s:  # another dispatcher takes over (as after a pause past the lease)
            assert repo.claim_sweep(s, sid, "other", 60, steal_from=("x", 1)) == 2
        raise RuntimeError("crashed after losing the lease")

    d = Dispatcher(db, tmp_path, owner="x", runner=superseded)  # type: ignore[arg-type]
    assert d.claim_next() == sweep_id
    d.run_one(sweep_id)
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None and sweep.status == "running" and sweep.claimed_by == "other"
    db.dispose()


def test_retrying_repeats_only_transient_errors() -> None:
    outage = OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert transient(outage) and not transient(ValueError("bug"))
    attempts = {"n": 0}

    def twice_down() -> str:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise outage
        return "ok"

    assert retrying(twice_down, "test")() == "ok" and attempts["n"] == 3

    def bug() -> None:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        retrying(bug, "test")()
    stop = threading.Event()
    stop.set()
    with pytest.raises(OperationalError):  # stopping: no waiting out the outage
        retrying(lambda: (_ for _ in ()).throw(outage), "test", stop=stop)()
