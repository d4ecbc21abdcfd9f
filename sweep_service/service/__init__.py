"""The use cases: one module per topic, each a set of functions over a `Database` that return plain dataclasses
(DESIGN.md, "Inside sweep_service/"). The REST routers (api/routers/) and the CLI (sweep_service/cli*.py) only
parse, call and render; neither touches db.models, db.queries, db.repository or db.results.

- errors: NotFound, Conflict, Invalid, raised by every use case.
- sweeps: submit, list, get, progress, cells.
- lifecycle: cancel, pause, resume, delete, update.
- trials: list, get, curve.
- best: the best config per cell across sweeps (GET /best and `sweep-service best`).
- exports, imports: a sweep's trials as CSV/Parquet/JSON; released results (e.g. the paper's) as a sweep.
- analysis: predict, speedups, sensitivity, flips, importance (sweep_data loads a sweep for them).
- ops: health and metrics counts.

Import the module you need (`from sweep_service.service import lifecycle`). The lifecycle use cases and the
errors are also re-exported here, as `sweep_service.service.cancel` etc., the names the first callers used.
"""

from sweep_service.service.errors import Conflict, Invalid, NotFound
from sweep_service.service.lifecycle import (
    BUDGET_RANGE,
    CANCEL_REASON,
    CANCELLABLE,
    DELETABLE,
    MAX_CONCURRENT_RANGE,
    NAME_MAX,
    PAUSABLE,
    PAUSE_REASON,
    Deleted,
    SweepState,
    cancel,
    delete,
    pause,
    resume,
    update,
)

__all__ = [
    "BUDGET_RANGE",
    "CANCELLABLE",
    "CANCEL_REASON",
    "DELETABLE",
    "MAX_CONCURRENT_RANGE",
    "NAME_MAX",
    "PAUSABLE",
    "PAUSE_REASON",
    "Conflict",
    "Deleted",
    "Invalid",
    "NotFound",
    "SweepState",
    "cancel",
    "delete",
    "pause",
    "resume",
    "update",
]
