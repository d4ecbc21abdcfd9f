"""Tests of sweep_service.paper_results: the paper's released results as a trials frame."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sweep_service import analysis as A
from sweep_service.paper_results import (
    convert_config,
    hparam_name,
    load_paper_non_embedding_params,
    load_paper_non_stable,
    load_paper_results,
    optimizer_name,
)


def _path() -> Path:
    repo = Path(__file__).parents[2]
    for candidate in (repo / "sweep_service" / "data" / "paper_results.json",
                      repo / ".." / "shared" / "data" / "paper_results.json"):  # fmt: skip
        if candidate.exists():
            return candidate
    pytest.skip("paper_results.json not found (package data or ../shared/data)")


def test_name_mapping() -> None:
    assert optimizer_name("soape") == "soap" and optimizer_name("mini") == "adam_mini"
    assert optimizer_name("AdamW") == "adamw"
    assert hparam_name("learning_rate") == "lr" and hparam_name("train_batch_size") == "batch_size"
    assert hparam_name("muon_epsilon") == "muon_eps" and hparam_name("gamma") == "gamma"
    assert convert_config({"weight_decay": 0.1, "epsilon": 1e-20}) == {"wd": 0.1, "eps": 1e-20}


def test_load_paper_results_schema() -> None:
    path = _path()
    trials = load_paper_results(path)
    raw = json.loads(path.read_text())
    assert len(trials) == len(raw["cells"]) == 134
    A.check_trials(trials)
    assert set(A.TRIAL_COLUMNS) <= set(trials.columns)
    assert not trials.duplicated(subset=list(A.CELL_KEY)).any()
    assert "soape" not in set(trials["optimizer"]) and {"soap", "adam_mini"} <= set(trials["optimizer"])
    for config in trials["config"]:
        assert not {"learning_rate", "weight_decay", "epsilon", "train_batch_size"} & set(config)
        assert "lr" in config
    assert (trials["status"] == "completed").all()
    n = load_paper_non_embedding_params(path)
    assert n["130m"] == 134_217_728  # PAPER.md section 2
    first = trials[(trials["optimizer"] == "adamw") & (trials["scale"] == "130m") & (trials["chinchilla"] == 1)]
    row = first.iloc[0]
    assert row["loss"] == pytest.approx(3.529, abs=5e-4)  # PAPER.md section 6
    assert row["tokens"] == 20 * 134_217_728
    assert row["config"]["lr"] == 8e-3 and row["config"]["batch_size"] == 128
    assert pd.isna(row["device_seconds"])


def test_load_paper_non_stable() -> None:
    unstable = load_paper_non_stable(_path())
    # PAPER.md section 4, Phase II: AdamW lr, wd, batch; NAdamW none; Soap includes precondition_frequency
    assert sorted(unstable["adamw"]) == ["batch_size", "lr", "wd"]
    assert unstable["nadamw"] == []
    assert "precondition_frequency" in unstable["soap"] and "adam_mini" in unstable


def test_not_a_results_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a paper results file"):
        load_paper_results(bad)
