"""Cell state transitions and the session hand-offs of a planning pass, so that the engine changes no ORM object.

A cell's status moves pending -> running -> converged | exhausted, or pending -> failed (it cannot start). Each
move is compare-and-set: one UPDATE ... WHERE status IN (expected), whose row count says whether this caller
won (db/repository.py does the same for sweeps and trials; STYLE.md rule 6). Like repository.update_cell, the
UPDATE does not touch Cell objects already loaded in the session: call `reload` where the caller reads the row
again in the same session.
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


def reload(s: Session, row: Cell | Trial) -> None:
    """Read `row` again from the database (this transaction's view): after an UPDATE made through this module
    or db.repository, which leave loaded objects as they were."""
    s.refresh(row)


def end_transaction(s: Session) -> None:
    """Commit what `s` wrote so far and start a new transaction on it: before another connection writes to the
    same database (Optuna's storage), since SQLite has a single writer. A caller that fences its writes
    (sweep_service/lease.py) fences the new transaction before its next write."""
    s.commit()
