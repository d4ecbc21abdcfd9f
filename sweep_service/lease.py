"""A sweep's lease with its fencing epoch: who may write a run's rows, and the heartbeat that keeps it.

Whoever runs a sweep (a dispatcher, or `sweep-service run`) claims its lease first. The claim bumps the sweep's
`lease_epoch`; every write of the run opens its transaction with `db.repository.fence` on that epoch, so once
another process has claimed the sweep (the first one was paused past its lease, or cut off from the database)
the first one's writes fail with `LeaseLost` instead of landing: it stops its Tune run and writes nothing more.
This is the fencing token of Kleppmann's "How to do distributed locking" (2016): a lease alone cannot stop a
paused holder from writing after it expired.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from db import repository as repo
from db.retry import retrying
from db.session import Database


class LeaseLost(Exception):
    """Another process claimed the sweep: this one must stop and write nothing more."""


class LeaseHeld(Exception):
    """The sweep is being run by a live holder; `holder` names it (host:pid:tag)."""

    def __init__(self, sweep_id: int, holder: str | None) -> None:
        self.sweep_id, self.holder = sweep_id, holder
        super().__init__(f"sweep {sweep_id} is being run by {holder or 'another process'}")


def default_owner() -> str:
    """host:pid:tag: where the holder runs (so that a dead local holder can be recognised) and a unique tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(owner: str | None) -> bool:
    """Whether `owner` (default_owner's form) is a process on this host that no longer exists: its lease is void
    before it expires (a `run` killed with SIGKILL and started again at once)."""
    if not owner:
        return False
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@dataclass
class Lease:
    sweep_id: int
    owner: str
    epoch: int
    seconds: float
    lost: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def fenced(self, db: Database) -> Iterator[Session]:
        """A session whose writes commit only while this lease holds; LeaseLost (and `lost` set) otherwise."""
        with db.session() as s:
            self.check(s)
            yield s

    def check(self, s: Session) -> None:
        """Fence the transaction open on `s` (again after a commit on it)."""
        if self.lost.is_set() or not repo.fence(s, self.sweep_id, self.epoch):
            self.lost.set()
            raise LeaseLost(f"sweep {self.sweep_id}: lease {self.epoch} lost (another process claimed it)")


def claim(db: Database, sweep_id: int, owner: str, seconds: float) -> Lease | None:
    """Claim the sweep if it is free (queued, or its lease expired or its local holder is dead)."""
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        if sweep is None:
            return None
        steal = (sweep.claimed_by, sweep.lease_epoch) if holder_is_dead(sweep.claimed_by) else None
        epoch = repo.claim_sweep(s, sweep_id, owner, seconds, steal_from=steal)  # type: ignore[arg-type]
    return None if epoch is None else Lease(sweep_id, owner, epoch, seconds)


def claim_or_raise(db: Database, sweep_id: int, owner: str, seconds: float) -> Lease:
    lease = claim(db, sweep_id, owner, seconds)
    if lease is None:
        with db.session() as s:
            sweep = repo.get_sweep(s, sweep_id)
            holder = sweep.claimed_by if sweep is not None else None
        raise LeaseHeld(sweep_id, holder)
    return lease


def release(db: Database, lease: Lease) -> None:
    """Give the lease up so that any dispatcher may resume the sweep at once (a resumable stop)."""
    with db.session() as s:
        repo.release_lease(s, lease.sweep_id, lease.epoch)


class Heartbeat(threading.Thread):
    """Extends the lease every third of its length. A database error is retried (db/retry.py) and reported,
    never fatal to the thread; a refused heartbeat (another holder) sets `lease.lost`."""

    def __init__(self, db: Database, lease: Lease, say: Callable[[str], None] | None = None) -> None:
        super().__init__(name=f"lease-{lease.sweep_id}", daemon=True)
        self.db, self.lease, self.say = db, lease, say
        self.done = threading.Event()

    def _beat(self) -> bool:
        with self.db.session() as s:
            return repo.heartbeat(s, self.lease.sweep_id, self.lease.owner, self.lease.seconds, self.lease.epoch)

    def run(self) -> None:
        beat = retrying(self._beat, what=f"sweep {self.lease.sweep_id}: heartbeat", say=self.say, stop=self.done)
        while not self.done.wait(self.lease.seconds / 3):
            try:
                held = beat()
            except Exception as exc:  # never die silently: say so and try again at the next beat
                if self.say:
                    self.say(f"sweep {self.lease.sweep_id}: heartbeat error: {type(exc).__name__}: {exc}")
                continue
            if held is False:
                if self._claimed_by_another():
                    self.lease.lost.set()
                    if self.say:
                        self.say(f"sweep {self.lease.sweep_id}: lease lost (claimed by another process)")
                return  # or cancelled/finished: nothing left to hold

    def _claimed_by_another(self) -> bool:
        try:
            with self.db.session() as s:
                sweep = repo.get_sweep(s, self.lease.sweep_id)
                return sweep is None or sweep.lease_epoch != self.lease.epoch
        except Exception:
            return True  # cannot tell: assume the worst, the fence refuses our writes either way

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


@contextlib.contextmanager
def kept(db: Database, lease: Lease, say: Callable[[str], None] | None = None) -> Iterator[Lease]:
    """Hold `lease` with a heartbeat for the duration of the block."""
    beat = Heartbeat(db, lease, say)
    beat.start()
    try:
        yield lease
    finally:
        beat.stop()
