"""Import released results (the paper's, or any file of the same shape) into the database as a finished sweep.

The imported sweep is an ordinary sweep marked `imported` (never dispatched), status completed, so `/best`,
`/sweeps/{id}/speedups`, `/predict`, the export, the report and the dashboard work on it with no compute:
- one `cells` row per result cell: its best config and loss, status converged (exhausted when the released
  best diverged), strategy "imported", and in `settings` the cell's non-embedding parameter count and
  whatever the file says about the cell's search (`n_runs_floor`, `near_tie_count`);
- the best config as a completed `sweep_trials` row (seed 0, tokens = C x 20 x N when N is known), and any
  other run the file holds for the cell (the optional `runs` list below) as a trial too, so the sensitivity
  and near-tie analyses see them.

The file (sweep_service/data/paper_results.json is the example, `PAPER_RESULTS`):
    {"about": "...", "name": "optional sweep name",
     "non_embedding_params": {"130m": 134217728, ...},   # per scale; the catalog's count is used if absent
     "cells": [{"optimizer": "adamw", "model_size": "130m", "chinchilla": 1, "min_loss": 3.529,
                "best_config": {"learning_rate": 0.008, ...},
                "n_runs": 19, "approximate_best_config_count": 14,            # optional
                "runs": [{"config": {...}, "loss": 3.55, "seed": 0}, ...]}]}   # optional, other runs
Names are mapped to ours as sweep_service.paper_results does (learning_rate -> lr, soape -> soap, ...).
A scale the catalog (workers.model.SCALES) does not know is imported all the same; its parameter count
comes from the file, or stays unknown (then it is left out of the hyperparameter fits, which need N).

Importing is idempotent: the sweep's `idempotency_key` is a hash of the file's content (canonical JSON), so
importing the same results twice returns the first sweep.

This module reads and checks the file (`read_results`); the use case that writes the sweep is
sweep_service.service.imports.import_results (`import_file` and `import_results` here call it).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db import results
from db.models import config_key
from db.session import Database
from sweep_service import catalog
from sweep_service.coordinate_descent import TOLERANCE as NEAR_TIE_TOLERANCE
from sweep_service.coordinate_descent import near_tie
from sweep_service.paper_results import TOKENS_PER_PARAM, convert_config, optimizer_name
from sweep_service.spec import cell_key

if TYPE_CHECKING:
    from sweep_service.service.imports import ImportOutcome

PAPER_RESULTS = Path(__file__).parent / "data" / "paper_results.json"
KEY_PREFIX = "import:sha256:"
# Column widths of cells.optimizer and cells.scale (db/models.py): a longer name cannot be stored.
NAME_MAX = 64


@dataclass(frozen=True)
class ParsedResults:
    """A results file read and checked, ready to write (sweep_service.service.imports writes it)."""

    file: Path
    name: str  # the sweep's name
    key: str  # the sweep's idempotency key (KEY_PREFIX + the content's hash)
    spec: dict[str, Any]  # the sweep's spec: what was imported, from where
    cells: list[results.ImportedCell]
    catalog: dict[str, int]  # the catalog's non-embedding parameter count per scale, when read


def resolve_path(name: str | Path) -> Path:
    """The literal `paper` names the shipped paper results; anything else is a path."""
    return PAPER_RESULTS if str(name) == "paper" else Path(name)


def _read(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed file and the hash of its content (canonical JSON: formatting does not change it)."""
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; pass the results JSON file in it (or `paper`)")
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("cells"), list) or not payload["cells"]:
        raise ValueError(f"{path}: not a results file (needs a non-empty 'cells' list)")
    try:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError) as exc:  # pragma: no cover - json.loads output always serializes
        raise ValueError(f"{path}: {exc}") from None
    return payload, hashlib.sha256(canonical.encode()).hexdigest()


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX:
        raise ValueError(f"{where}: must be a non-empty name of at most {NAME_MAX} characters, got {value!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or "/" in value:
        raise ValueError(f"{where}: {value!r} holds a control character or '/'")
    return value.strip()


def _loss(value: object, where: str) -> float:
    """A run's final loss; null, NaN or infinite means it diverged (+inf, as the analysis ranks it)."""
    if value is None:
        return math.inf
    number = _number(value)
    if number is None:
        raise ValueError(f"{where}: must be a number (or null for a diverged run), got {value!r}")
    return number if math.isfinite(number) else math.inf


def _config(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: must be a non-empty object of hyperparameters")
    for k, v in value.items():
        if not (isinstance(v, bool | int | float | str) or v is None):
            raise ValueError(f"{where}.{k}: must be a number, boolean or string, got {type(v).__name__}")
        if isinstance(v, float) and not math.isfinite(v):  # JSON columns (PostgreSQL's) cannot hold NaN or inf
            raise ValueError(f"{where}.{k}: must be a finite number, got {v}")
    return convert_config(dict(value))


def _params_table(payload: dict[str, Any], path: Path) -> dict[str, int]:
    raw = payload.get("non_embedding_params", {})
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: non_embedding_params must be an object of scale -> count")
    out: dict[str, int] = {}
    for scale, value in raw.items():
        number = _number(value)
        if number is None or not math.isfinite(number) or number <= 0:
            raise ValueError(f"{path}: non_embedding_params.{scale}: must be a positive number, got {value!r}")
        out[str(scale)] = int(number)
    return out


def parse_results(path: Path, payload: dict[str, Any], catalog: dict[str, int]) -> list[results.ImportedCell]:
    """The file's cells as rows to write; a malformed entry raises a ValueError naming it."""
    params = {**catalog, **_params_table(payload, path)}  # the file's count wins: it is what was trained
    cells: dict[str, results.ImportedCell] = {}
    for i, raw in enumerate(payload["cells"]):
        where = f"{path.name}: cells[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: must be an object")
        optimizer = optimizer_name(_name(raw.get("optimizer"), f"{where}.optimizer"))
        scale = _name(raw.get("model_size", raw.get("scale")), f"{where}.model_size")
        multiple = _number(raw.get("chinchilla"))
        if multiple is None or not math.isfinite(multiple) or multiple <= 0:
            raise ValueError(f"{where}.chinchilla: must be a positive number, got {raw.get('chinchilla')!r}")
        n_params = params.get(scale)
        tokens = round(multiple * TOKENS_PER_PARAM * n_params) if n_params is not None else None
        best = results.ImportedTrial(
            config=_config(raw.get("best_config"), f"{where}.best_config"),
            loss=_loss(raw.get("min_loss", raw.get("loss")), f"{where}.min_loss"),
            tokens=tokens,
        )
        others: list[results.ImportedTrial] = []
        stored = {(config_key(best.config), best.seed)}
        runs = raw.get("runs", [])
        if not isinstance(runs, list):
            raise ValueError(f"{where}.runs: must be a list of {{config, loss, seed}}")
        for j, run in enumerate(runs):
            if not isinstance(run, dict):
                raise ValueError(f"{where}.runs[{j}]: must be an object with config and loss")
            seed = run.get("seed", 0)
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
                raise ValueError(f"{where}.runs[{j}].seed: must be a non-negative integer, got {seed!r}")
            other = results.ImportedTrial(
                config=_config(run.get("config"), f"{where}.runs[{j}].config"),
                loss=_loss(run.get("loss"), f"{where}.runs[{j}].loss"),
                seed=seed,
                tokens=tokens,
            )
            if (config_key(other.config), seed) in stored:  # the best run listed again: one trial per (config, seed)
                continue
            stored.add((config_key(other.config), seed))
            others.append(other)
        # Near-ties from the runs the file holds (PAPER.md section 4, Phase I step 3: within 3e-3 of the best).
        ties = [best.config] if math.isfinite(best.loss) else []
        if ties:
            seen = {config_key(best.config)}
            for run in sorted(others, key=lambda r: r.loss):
                if near_tie(run.loss, best.loss, NEAR_TIE_TOLERANCE) and config_key(run.config) not in seen:
                    seen.add(config_key(run.config))
                    ties.append(run.config)
        settings: dict[str, Any] = {"tolerance": NEAR_TIE_TOLERANCE}
        if n_params is not None:
            settings["non_embedding_params"] = n_params
        for source, target in (("n_runs", "n_runs_floor"), ("approximate_best_config_count", "near_tie_count")):
            value = _number(raw.get(source))
            if value is not None and math.isfinite(value):
                settings[target] = int(value)
        key = cell_key(optimizer, scale, multiple)
        if key in cells:
            raise ValueError(f"{where}: cell {key} appears twice in the file")
        cells[key] = results.ImportedCell(
            key=key,
            optimizer=optimizer,
            scale=scale,
            chinchilla=multiple,
            best=best,
            others=tuple(others),
            settings=settings,
            near_ties=tuple(ties),
        )
    return list(cells.values())


def read_results(path: str | Path) -> ParsedResults:
    """Read and check a results file (`paper`: the shipped paper results); a malformed one raises a ValueError
    naming the entry. Nothing is written."""
    file = resolve_path(path)
    payload, digest = _read(file)
    counts = catalog.scale_params()
    cells = parse_results(file, payload, counts)
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        name = (
            "paper results (arXiv 2509.02046)" if file.resolve() == PAPER_RESULTS.resolve() else f"import {file.name}"
        )
    name = name.strip()[:200]  # sweeps.name is String(200)
    optimizers = sorted({c.optimizer for c in cells})
    scales = sorted({c.scale for c in cells}, key=lambda sc: (counts.get(sc, math.inf), sc))
    multiples = sorted({c.chinchilla for c in cells})
    params = {c.scale: c.settings["non_embedding_params"] for c in cells if "non_embedding_params" in c.settings}
    about = payload.get("about")
    spec: dict[str, Any] = {
        "name": name,
        "imported": True,
        "source": {
            "file": file.name,
            "sha256": digest,
            "about": about if isinstance(about, str) else None,
        },
        "optimizers": optimizers,
        "scales": scales,
        "chinchilla": multiples,
        "non_embedding_params": params,
        "tolerance": NEAR_TIE_TOLERANCE,
    }
    return ParsedResults(file, name, KEY_PREFIX + digest, spec, cells, counts)


def import_file(database: Database, path: str | Path) -> ImportOutcome:
    """Import a results file (`paper`: the shipped paper results); the same content twice gives one sweep.
    The use case is sweep_service.service.imports.import_results; this name stays for its callers."""
    from sweep_service.service import imports

    return imports.import_results(database, path)


def import_results(database: Database, path: str | Path) -> int:
    """Load released results (e.g. sweep_service/data/paper_results.json) as a finished, imported sweep;
    returns its id (the existing sweep's when the same content was imported before)."""
    return import_file(database, path).sweep_id
