"""The dispatcher: claims queued sweeps from the database and runs them with the engine.

A claim is a compare-and-set on the sweep row (db.repository.claim_sweep) that bumps the sweep's lease epoch,
so two dispatchers on one PostgreSQL never run the same sweep, and every write of a run is fenced on that
epoch (sweep_service/lease.py): a dispatcher paused past its lease writes nothing once another has claimed the
sweep, and stops its Tune run. The holder extends its lease with a heartbeat; a sweep whose dispatcher died
(no heartbeat for `lease_seconds`) is claimed again by another one and resumed from its rows: finished trials
kept, in-flight trials re-run (sweep_service.engine). Database outages are waited out (db/retry.py): the
dispatcher never exits on one. SIGINT/SIGTERM stop it resumably (sweep_service/signals.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from db import repository as repo
from db.retry import retry, transient
from db.session import Database, masked_url
from sweep_service import lease as leases
from sweep_service.engine import Progress, run_sweep
from sweep_service.lease import Lease, LeaseLost

default_owner = leases.default_owner


@dataclass
class Dispatcher:
    db: Database
    storage_dir: Path
    lease_seconds: float = 60.0
    owner: str = field(default_factory=default_owner)
    progress: Progress | None = None
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    # Replaces the engine call in tests of the claiming logic.
    runner: Callable[[int], None] | None = None
    lease: Lease | None = None  # the lease of the sweep claimed last

    def claim_next(self) -> int | None:
        """Claim one queued (or abandoned) sweep; None when there is nothing to claim."""
        with self.db.session() as s:
            candidates = repo.claimable_sweep_ids(s)
        for sweep_id in candidates:
            lease = leases.claim(self.db, sweep_id, self.owner, self.lease_seconds)
            if lease is not None:
                self.lease = lease
                return sweep_id
        return None

    def run_one(self, sweep_id: int) -> None:
        lease = self.lease
        if lease is None or lease.sweep_id != sweep_id:
            lease = leases.claim_or_raise(self.db, sweep_id, self.owner, self.lease_seconds)
        self._say(f"sweep {sweep_id}: claimed by {self.owner} (lease epoch {lease.epoch})")
        with leases.kept(self.db, lease, self._say):
            try:
                if self.runner is not None:
                    self.runner(sweep_id)
                else:
                    run_sweep(
                        self.db,
                        sweep_id,
                        self.storage_dir,
                        progress=self.progress,
                        ray_address=self.ray_address,
                        ray_num_cpus=self.ray_num_cpus,
                        stop=self.stop,
                        lease=lease,
                    )
            except LeaseLost as exc:
                self._say(f"{exc}")
                return
            except Exception as exc:  # a broken sweep must not take the dispatcher down with it
                self._fail(lease, exc)
                return
        self._say(f"sweep {sweep_id}: finished")

    def _fail(self, lease: Lease, exc: Exception) -> None:
        """Mark the sweep failed (fenced: not if another holds it now), waiting out a database outage."""

        def mark() -> None:
            with lease.fenced(self.db) as s:
                repo.set_sweep_status(s, lease.sweep_id, ["running"], "failed", error=f"{type(exc).__name__}: {exc}")

        try:
            retry(mark, f"sweep {lease.sweep_id}: mark failed", self._say)
        except LeaseLost:
            self._say(f"sweep {lease.sweep_id}: lease lost; not marked failed")
            return
        self._say(f"sweep {lease.sweep_id}: failed: {exc}")

    def run_forever(self, poll_seconds: float = 2.0) -> None:
        """Claim and run sweeps until `stop` is set; a database outage is waited out, never fatal."""
        self._say(f"dispatcher {self.owner} watching {masked_url(self.db.url)}")
        outage = False
        while not self.stop.is_set():
            try:
                sweep_id = self.claim_next()
            except Exception as exc:
                if not transient(exc):
                    raise
                if not outage:
                    self._say(f"dispatcher: database unavailable ({type(exc).__name__}); waiting")
                outage = True
                self.stop.wait(poll_seconds)
                continue
            if outage:
                self._say("dispatcher: database back")
                outage = False
            if sweep_id is None:
                self.stop.wait(poll_seconds)
                continue
            self.run_one(sweep_id)

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)
