"""Cell state transitions and the session hand-offs of a planning pass, so that the engine changes no ORM object
(it holds none: db.repository hands it frozen records, db/records.py).

A cell's status moves pending -> running -> converged | exhausted, or pending -> failed (it cannot start). Each
move is compare-and-set: one UPDATE ... WHERE status IN (expected), whose row count says whether this caller
won (db/repository.py does the same for sweeps and trials; STYLE.md rule 6). A record read before the change
stays as it was: read the cell again (db.repository.get_cell) to see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from db.models import Cell, Trial


def set_cell_status(s: Session, cell_id: int, expected: str | Sequence[str], new: str, **fields: Any) -> bool:
    """Compare-and-set a cell's status (and `fields` with it) if it is `expected` (one status or several);
    True when this call made the change, False when the cell was in another status (nothing written)."""
    statuses = [expected] if isinstance(expected, str) else list(expected)
    res = s.execute(
        update(Cell).where(Cell.id == cell_id, Cell.status.in_(statuses)).values(status=new, **fields),
        execution_options={"synchronize_session": False},
    )
    return isinstance(res, CursorResult) and res.rowcount == 1


def set_optuna_trial(s: Session, trial_id: int, number: int | None) -> None:
    """Link a trial to the Optuna trial asked for its config (its number in the cell's study)."""
    s.execute(
        update(Trial).where(Trial.id == trial_id).values(optuna_trial=number),
        execution_options={"synchronize_session": False},
    )


def end_transaction(s: Session) -> None:
    """Commit what `s` wrote so far and start a new transaction on it: before another connection writes to the
    same database (Optuna's storage), since SQLite has a single writer. A caller that fences its writes
    (sweep_service/lease.py) fences the new transaction before its next write."""
    s.commit()
