"""The dispatcher: claims queued sweeps from the database and runs them with the engine.

A claim is a compare-and-set on the sweep row (db.repository.claim_sweep), so two dispatchers on one
PostgreSQL never run the same sweep. The holder extends its lease with a heartbeat; a sweep whose
dispatcher died (no heartbeat for `lease_seconds`) is claimed again by another one and resumed from its rows:
finished trials kept, in-flight trials re-run (sweep_service.engine).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from db import repository as repo
from db.session import Database, masked_url
from sweep_service.engine import Progress, run_sweep


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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

    def claim_next(self) -> int | None:
        """Claim one queued (or abandoned) sweep; None when there is nothing to claim."""
        with self.db.session() as s:
            candidates = repo.claimable_sweep_ids(s)
        for sweep_id in candidates:
            with self.db.session() as s:
                if repo.claim_sweep(s, sweep_id, self.owner, self.lease_seconds):
                    return sweep_id
        return None

    def _heartbeat(self, sweep_id: int, done: threading.Event) -> None:
        while not done.wait(self.lease_seconds / 3):
            with self.db.session() as s:
                if not repo.heartbeat(s, sweep_id, self.owner, self.lease_seconds):
                    self._say(f"sweep {sweep_id}: lease lost (cancelled, finished or claimed by another dispatcher)")
                    return

    def run_one(self, sweep_id: int) -> None:
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(sweep_id, done), daemon=True)
        beat.start()
        self._say(f"sweep {sweep_id}: claimed by {self.owner}")
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
                )
        except Exception as exc:  # a broken sweep must not take the dispatcher down with it
            with self.db.session() as s:
                repo.set_sweep_status(s, sweep_id, ["running"], "failed", error=f"{type(exc).__name__}: {exc}")
            self._say(f"sweep {sweep_id}: failed: {exc}")
        finally:
            done.set()
            beat.join(timeout=5)
        self._say(f"sweep {sweep_id}: finished")

    def run_forever(self, poll_seconds: float = 2.0) -> None:
        """Claim and run sweeps until `stop` is set."""
        self._say(f"dispatcher {self.owner} watching {masked_url(self.db.url)}")
        while not self.stop.is_set():
            sweep_id = self.claim_next()
            if sweep_id is None:
                self.stop.wait(poll_seconds)
                continue
            self.run_one(sweep_id)

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)
