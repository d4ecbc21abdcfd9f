"""Import released results (the paper's, or any file of the same shape) as a finished, imported sweep
(`sweep-service import-results`). The file's format and its checks are sweep_service/importer.py's; this use case
reads the file, writes the sweep (db.results.write_imported_sweep) and says what it holds. A function over a
`Database` returning a plain dataclass, raising sweep_service.service.errors (DESIGN.md, "Inside sweep_service/").

Importing is idempotent: the same content (canonical JSON) imported twice returns the first sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from db import results
from db.session import Database
from sweep_service import importer
from sweep_service.service.errors import Invalid


@dataclass(frozen=True)
class ImportOutcome:
    sweep_id: int
    created: bool  # False: the same results were imported before (this is that sweep)
    name: str
    n_cells: int
    n_trials: int
    optimizers: tuple[str, ...]
    scales: tuple[str, ...]  # smallest first (the catalog's count; unknown ones last)
    chinchilla: tuple[float, ...]
    unknown_scales: tuple[str, ...]  # not in the catalog (imported all the same)
    unknown_params: tuple[str, ...]  # scales whose non-embedding parameter count is unknown


def import_results(db: Database, path: str | Path) -> ImportOutcome:
    """Import a results file (`paper`: the shipped paper results). A file that cannot be read or holds a malformed
    entry is Invalid("file", what is wrong and where); nothing is written then."""
    try:
        parsed = importer.read_results(path)
    except ValueError as exc:
        raise Invalid("file", str(exc)) from None
    with db.session() as s:
        sweep_id, created = results.write_imported_sweep(s, parsed.name, parsed.spec, parsed.key, parsed.cells)
    scales = tuple(parsed.spec["scales"])
    return ImportOutcome(
        sweep_id=sweep_id,
        created=created,
        name=parsed.name,
        n_cells=len(parsed.cells),
        n_trials=sum(1 + len(c.others) for c in parsed.cells),
        optimizers=tuple(parsed.spec["optimizers"]),
        scales=scales,
        chinchilla=tuple(parsed.spec["chinchilla"]),
        unknown_scales=tuple(sc for sc in scales if sc not in parsed.catalog),
        unknown_params=tuple(sc for sc in scales if sc not in parsed.spec["non_embedding_params"]),
    )
