"""Whether a valid sweep spec can actually run: checked at submission, before anything is written.

Each check returns (field, message) pairs in the shape of sweep_service.spec.SpecError, so the CLI prints one
line and the API answers 422 naming the field:
- the number of cells, against SWEEP_MAX_CELLS (counted before any search space is built: a 10,000-cell spec
  cost 75 s of planning before, issue 13);
- every cell has at least one config the trainer accepts: warmup 0 or below the run's steps
  (workers.trainer.train refuses the others, so such a cell would end with no trial and no reason);
- a data path exists (the workers would fail every trial on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweep_service.spec import CellPlan

Problem = tuple[str, str]


def cell_count_problem(
    optimizers: list[str], scales: list[str], multiples: list[float], explicit: Iterable[str], max_cells: int
) -> Problem | None:
    """More distinct cells than `max_cells`; the product is bounded first, so a huge one costs nothing to refuse."""
    product = len(set(optimizers)) * len(set(scales)) * len(set(multiples))
    keys = set(explicit)
    if product + len(keys) > max_cells:
        # Only build the product's keys when it is small enough to matter for an exact count.
        if product <= max_cells:
            from sweep_service.spec import cell_key

            keys |= {cell_key(o, s, c) for o in optimizers for s in scales for c in multiples}
            if len(keys) <= max_cells:
                return None
            count = len(keys)
        else:
            count = product + len(keys)
        return ("spec", f"{count} cells is more than SWEEP_MAX_CELLS={max_cells} per sweep; split the sweep")
    return None


def _values(name: str, cell: CellPlan, resolved: dict[str, Any]) -> list[Any]:
    """The values a hyperparameter takes in a cell's configs: its grid, else its fixed value, else the default."""
    if name in cell.space.grid:
        return list(cell.space.grid[name])
    if name in cell.space.fixed:
        return [cell.space.fixed[name]]
    return [resolved[name]]


def warmup_problem(cell: CellPlan) -> str | None:
    """Why no config of the cell can run (every warmup >= the run's steps), or None when one can."""
    from workers.model import get_scale
    from workers.optimizers import get_spec, resolve_hparams
    from workers.trainer import plan_steps

    cfg = get_scale(cell.scale)
    resolved = resolve_hparams(get_spec(cell.optimizer), cfg.family)
    warmups = sorted({int(w) for w in _values("warmup", cell, resolved)})
    batches = sorted({int(b) for b in _values("batch_size", cell, resolved)})
    # Fewer steps with a larger batch: the smallest batch gives the longest run.
    steps = plan_steps(cfg, cell.chinchilla, batches[0])
    if warmups[0] == 0 or warmups[0] < steps:
        return None
    return (
        f"cell {cell.key} cannot run any config: every warmup {warmups} is >= its {steps} steps "
        f"(batch_size {batches[0]}); lower the warmup or raise the chinchilla multiple"
    )


def data_problem(data: str) -> Problem | None:
    """A `data` path (not "builtin") that does not exist where the sweep is submitted."""
    if data == "builtin":
        return None
    path = Path(data)
    try:
        exists = path.exists()
    except OSError:
        exists = False
    if not exists:
        return ("data", f"{data[:200]!r} does not exist (a directory with train.bin and val.bin, or a .bin file)")
    return None
