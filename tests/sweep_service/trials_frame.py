"""Trials frames for the analysis tests (tests/sweep_service/test_ranking.py, test_speedups.py): one row per
trial as sweep_service.analysis documents it, and the paper's released results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

ADAMW_130M_BEST: dict[str, Any] = {  # PAPER.md section 6
    "lr": 8e-3,
    "wd": 0.1,
    "beta1": 0.9,
    "beta2": 0.98,
    "eps": 1e-20,
    "max_grad_norm": 1.0,
    "batch_size": 128,
    "warmup": 2000,
}


def trial(
    config: dict[str, Any],
    loss: float,
    optimizer: str = "adamw",
    scale: str = "130m",
    chinchilla: float = 1.0,
    status: str = "completed",
    seed: int = 0,
    n_params: int = 134_217_728,
    device_seconds: float = math.nan,
) -> dict[str, Any]:
    return {
        "optimizer": optimizer,
        "scale": scale,
        "chinchilla": chinchilla,
        "config": dict(config),
        "loss": loss,
        "status": status,
        "seed": seed,
        "trial_id": f"{optimizer}/{scale}/{chinchilla}/{len(config)}/{loss}/{seed}",
        "non_embedding_params": n_params,
        "tokens": int(chinchilla * 20 * n_params),
        "device_seconds": device_seconds,
    }


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): v for k, v in r.items()} for r in df.to_dict("records")]


def by_key(df: pd.DataFrame, *keys: str) -> dict[Any, dict[str, Any]]:
    """Rows keyed by the values of `keys` (one key: the bare value)."""
    out: dict[Any, dict[str, Any]] = {}
    for r in records(df):
        out[r[keys[0]] if len(keys) == 1 else tuple(r[k] for k in keys)] = r
    return out


def curve(d: float, alpha: float = 0.5, b: float = 0.5, beta: float = 3.0) -> float:
    return alpha * d ** (-b) + beta


def paper_results_path() -> Path | None:
    """The package copy if the lead has shipped it, else the shared folder next to the repository."""
    repo = Path(__file__).parents[2]
    for candidate in (repo / "sweep_service" / "data" / "paper_results.json",
                      repo / ".." / "shared" / "data" / "paper_results.json"):  # fmt: skip
        if candidate.exists():
            return candidate
    return None
