"""Retry transient database errors with capped exponential backoff.

A PostgreSQL restart, a dropped connection or a network blip must not end a dispatcher, its heartbeat or a
running sweep: the call is repeated until the database answers again. Only errors of the connection are
retried (OperationalError, InterfaceError, a DBAPI error that invalidated its connection); an IntegrityError or
a bad statement is a bug and raises at once. Each retried call must be one whole transaction, so repeating it
is safe: our writes are compare-and-set (db.repository) and fenced (sweep_service.lease).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc

T = TypeVar("T")

# Delays 0.25 s, 0.5 s, ... capped at 8 s, each drawn in [0, delay] ("full jitter", AWS Architecture Blog,
# "Exponential Backoff And Jitter", 2015): a 30 s outage is noticed within 8 s of its end, and many clients
# do not reconnect in lockstep.
FIRST_DELAY = 0.25
MAX_DELAY = 8.0


def transient(error: BaseException | None) -> bool:
    """Whether `error` is the database (or the way to it) being unavailable, not a fault of the statement; also
    when it was raised from such an error (Optuna's StorageInternalError wraps the SQLAlchemy error it met)."""
    if error is None:
        return False
    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        return True
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return transient(error.__cause__)


def retrying(
    fn: Callable[[], T],
    what: str,
    say: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    attempts: int | None = None,
) -> Callable[[], T]:
    """`fn` wrapped: transient errors are retried (forever unless `attempts`; until `stop` is set), saying
    once when the database went away and once when it came back."""

    def call() -> T:
        failures = 0
        while True:
            try:
                value = fn()
            except Exception as error:
                failures += 1
                if not transient(error) or (attempts is not None and failures >= attempts):
                    raise
                if stop is not None and stop.is_set():
                    raise
                if failures == 1 and say is not None:
                    first = str(getattr(error, "orig", error)).strip().splitlines()
                    say(f"{what}: database unavailable ({first[0] if first else type(error).__name__}); retrying")
                delay = random.uniform(0, min(MAX_DELAY, FIRST_DELAY * 2 ** (failures - 1)))
                if stop is not None:
                    stop.wait(delay)
                else:
                    time.sleep(delay)
                continue
            if failures and say is not None:
                say(f"{what}: database back after {failures} failed attempt(s)")
            return value

    return call


def retry(fn: Callable[[], T], what: str, say: Callable[[str], None] | None = None) -> T:
    """Call `fn` once, retrying transient errors (see `retrying`)."""
    return retrying(fn, what, say)()
