"""The paper's released results as a trials DataFrame (the schema of `sweep_service.analysis`).

The file is the JSON built from marin-community/marin experiments/optimizer_sweep/Analysis/Results
(see its "about" field): per cell (optimizer, model size, Chinchilla multiple) the best run's final C4-en
loss and config, with the paper's own optimizer and hyperparameter names. Only the best run of each cell
was released, so the frame has one completed trial per cell; per-run losses, near-tie configs and seeds are
not in it (near-tie and run counts are kept as the extra columns `near_tie_count` and `n_runs_floor`).

Names are mapped to ours (workers/optimizers specs): learning_rate -> lr, weight_decay -> wd, epsilon -> eps,
train_batch_size -> batch_size, muon_epsilon -> muon_eps, scion_epsilon -> scion_eps; optimizer 'soape' ->
'soap', 'mini' -> 'adam_mini'. Every other name is kept as the paper wrote it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

# Paper (Levanter/Marin) hyperparameter name -> ours (workers/optimizers/*.py search spaces).
HPARAM_NAMES: dict[str, str] = {
    "learning_rate": "lr",
    "weight_decay": "wd",
    "epsilon": "eps",
    "train_batch_size": "batch_size",
    "muon_epsilon": "muon_eps",
    "scion_epsilon": "scion_eps",
}

# Paper optimizer name -> our registry name ("'soape' is Soap, 'mini' is Adam-mini": the JSON's "about").
OPTIMIZER_NAMES: dict[str, str] = {"soape": "soap", "mini": "adam_mini"}

# 1x Chinchilla = 20 tokens per non-embedding parameter (PAPER.md section 2).
TOKENS_PER_PARAM = 20


def optimizer_name(paper_name: str) -> str:
    """Our registry name for one of the paper's optimizer names."""
    lowered = paper_name.lower()
    return OPTIMIZER_NAMES.get(lowered, lowered)


def hparam_name(paper_name: str) -> str:
    """Our name for one of the paper's hyperparameter names."""
    return HPARAM_NAMES.get(paper_name, paper_name)


def convert_config(paper_config: dict[str, Any]) -> dict[str, Any]:
    """A paper config with our hyperparameter names (values unchanged)."""
    return {hparam_name(name): value for name, value in paper_config.items()}


def _read(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        payload: dict[str, Any] = json.load(f)
    if "cells" not in payload or "non_embedding_params" not in payload:
        raise ValueError(f"{path}: not a paper results file (needs 'cells' and 'non_embedding_params')")
    return payload


def load_paper_results(path: str | Path) -> pd.DataFrame:
    """The paper's released best runs as a trials frame: one completed trial per cell.

    Columns: the trials schema of `sweep_service.analysis` (seed 0, device_seconds NaN: the paper's compute
    per run was not released), plus `n_runs_floor` (the recorded runs of the cell's last round, a floor on
    its trial count) and `near_tie_count` (the size of its near-tie set, tolerance 3e-3).
    """
    payload = _read(path)
    params: dict[str, int] = {str(k): int(v) for k, v in payload["non_embedding_params"].items()}
    rows: list[dict[str, Any]] = []
    for cell in payload["cells"]:
        optimizer = optimizer_name(str(cell["optimizer"]))
        scale = str(cell["model_size"])
        chinchilla = float(cell["chinchilla"])
        if scale not in params:
            raise ValueError(f"{path}: scale {scale!r} has no non_embedding_params entry")
        n_params = params[scale]
        loss = float(cell["min_loss"])
        rows.append(
            {
                "optimizer": optimizer,
                "scale": scale,
                "chinchilla": chinchilla,
                "config": convert_config(dict(cell["best_config"])),
                "loss": loss if math.isfinite(loss) else math.inf,
                "status": "completed" if math.isfinite(loss) else "diverged",
                "seed": 0,
                "trial_id": f"paper/{optimizer}/{scale}/{cell['chinchilla']}",
                "non_embedding_params": n_params,
                "tokens": round(chinchilla * TOKENS_PER_PARAM * n_params),
                "device_seconds": math.nan,
                "n_runs_floor": int(cell.get("n_runs", 0)),
                "near_tie_count": int(cell.get("approximate_best_config_count", 1)),
            }
        )
    return pd.DataFrame(rows)


def load_paper_non_stable(path: str | Path) -> dict[str, list[str]]:
    """The paper's Phase I unstable hyperparameters per optimizer (PAPER.md section 4), with our names."""
    payload = _read(path)
    raw: dict[str, list[str]] = payload.get("non_stable_keys_phase1", {})
    return {optimizer_name(opt): [hparam_name(h) for h in names] for opt, names in raw.items()}


def load_paper_non_embedding_params(path: str | Path) -> dict[str, int]:
    """Non-embedding parameter count per paper scale (130m, 300m, 520m, 1.2b; PAPER.md section 2)."""
    payload = _read(path)
    return {str(k): int(v) for k, v in payload["non_embedding_params"].items()}
