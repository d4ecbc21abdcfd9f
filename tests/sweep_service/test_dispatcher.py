"""Claiming is compare-and-set: two dispatchers never run one sweep; a dead one's sweep is reclaimed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from db import repository as repo
from db.session import Database
from sweep_service.dispatcher import Dispatcher
from sweep_service.engine import SweepDriver
from tests.sweep_service.fake_sweep import drive, new_sweep, spec


def test_two_dispatchers_never_claim_the_same_sweep(db_url: str, tmp_path: object) -> None:
    db = Database(db_url)
    ids = [new_sweep(db, spec(name=f"race-{i}")) for i in range(12)]
    a = Dispatcher(db, tmp_path, owner="a")  # type: ignore[arg-type]
    b = Dispatcher(db, tmp_path, owner="b")  # type: ignore[arg-type]
    wins: dict[str, list[int]] = {"a": [], "b": []}
    for sweep_id in ids:
        barrier = threading.Barrier(2)

        def claim(d: Dispatcher, sweep_id: int = sweep_id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            with db.session() as s:
                if repo.claim_sweep(s, sweep_id, d.owner, 60):
                    wins[d.owner].append(sweep_id)

        threads = [threading.Thread(target=claim, args=(d,)) for d in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(wins["a"] + wins["b"]) == ids  # every sweep claimed exactly once
    with db.session() as s:
        for sweep_id in ids:
            sweep = repo.get_sweep(s, sweep_id)
            assert sweep is not None and sweep.status == "running"
            assert sweep.claimed_by == ("a" if sweep_id in wins["a"] else "b")
    db.dispose()


def test_a_dead_dispatchers_sweep_is_reclaimed_and_resumed(db_url: str, tmp_path: object) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())

    def dies_midway(sid: int) -> None:
        driver = SweepDriver(db, sid)
        driver.prepare()
        drive(driver, stop_after=3)  # then "dies": trials left running, no more heartbeats

    lease = 4.0  # long enough that a loaded machine cannot outlast it between the two claims below
    first = Dispatcher(db, tmp_path, lease_seconds=lease, owner="first", runner=dies_midway)  # type: ignore[arg-type]
    second = Dispatcher(db, tmp_path, lease_seconds=lease, owner="second")  # type: ignore[arg-type]
    assert first.claim_next() == sweep_id
    claimed = time.monotonic()
    assert second.claim_next() is None  # the lease holds
    first.runner(sweep_id)  # type: ignore[misc]  # run without the heartbeat thread: a process that died
    with db.session() as s:
        kept = {t.id: t.final_loss for t in repo.trials_of_sweep(s, sweep_id, ["completed", "diverged"])}
    time.sleep(max(0.0, lease + 0.3 - (time.monotonic() - claimed)))

    def finishes(sid: int) -> None:
        driver = SweepDriver(db, sid)
        assert driver.prepare() >= 1  # the dead dispatcher's in-flight trials go back to pending
        drive(driver)

    second.runner = finishes
    assert second.claim_next() == sweep_id
    second.run_one(sweep_id)
    with db.session() as s:
        trials = repo.trials_of_sweep(s, sweep_id)
        assert {t.id: t.final_loss for t in trials if t.id in kept} == kept
        assert len({t.config_key for t in trials}) == len(trials)
        assert all(t.status in ("completed", "diverged") for t in trials)
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None and sweep.claimed_by == "second"
        (cell,) = repo.cells_of(s, sweep_id)
        assert cell.status == "converged" and cell.best_config is not None and cell.best_config["lr"] == 1.2e-2
    db.dispose()


def test_a_failing_sweep_is_marked_failed_and_the_dispatcher_goes_on(db_url: str, tmp_path: object) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())

    def broken(sid: int) -> None:
        raise RuntimeError("boom")

    d = Dispatcher(db, tmp_path, owner="x", runner=broken)  # type: ignore[arg-type]
    assert d.claim_next() == sweep_id
    d.run_one(sweep_id)
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        assert sweep is not None and sweep.status == "failed" and "boom" in (sweep.error or "")
    db.dispose()


def test_the_dispatcher_prints_its_database_without_the_password(tmp_path: Path) -> None:
    db = Database("postgresql+psycopg2://u:pa/secret@127.0.0.1:1/x")  # never connected: stopped before a first look
    lines: list[str] = []
    d = Dispatcher(db, tmp_path, owner="x", progress=lines.append)
    d.stop.set()
    d.run_forever()
    assert lines == ["dispatcher x watching postgresql+psycopg2://u:***@127.0.0.1:1/x"]
    db.dispose()
