"""Impossible sweep specs are refused at submission with one line naming the field, and nothing is written
(issue 13, "Impossible specs are accepted"; "`run` exits 0 when the sweep ends failed"; read-only paths)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.cli import main
from sweep_service.settings import get_settings
from sweep_service.spec import SpecError, load_spec_file, plan_document

BASE: dict[str, Any] = {"name": "t", "optimizers": ["adamw"], "scales": ["tiny-130k"], "chinchilla": [1]}
TOO_LONG_WARMUP = {"adamw": {"fixed": {"warmup": 100_000}}}  # tiny-130k at 1x runs a few hundred steps


def errors(doc: dict[str, Any], max_cells: int | None = 2000) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        plan_document(doc, max_cells)
    return info.value.errors


@pytest.mark.parametrize("text", [".nan", ".inf", "-.inf", "1e308", "0", "0.0001", "1001"])
def test_multiples_must_be_finite_and_sane_in_yaml(text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\noptimizers: [adamw]\nscales: [tiny-130k]\nchinchilla: [{text}]\n")
    ((field, message),) = errors(load_spec_file(path))
    assert field == "chinchilla" and "within [0.001, 1000]" in message


def test_an_explicit_cell_s_multiple_is_checked_too() -> None:
    doc = {"name": "t", "cells": [{"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": float("inf")}]}
    ((field, message),) = errors(doc)
    assert field == "cells.0.chinchilla" and "finite" in message


def test_the_cell_cap_is_checked_before_any_planning() -> None:
    # 13 x 4 x 200 = 10,400 cells (the 10,000): refused by count, whatever the names.
    doc = {
        **BASE,
        "optimizers": [f"opt{i}" for i in range(13)],
        "scales": list("abcd"),
        "chinchilla": list(range(1, 201)),
    }
    ((field, message),) = errors(doc)
    assert field == "spec" and "10400 cells" in message and "SWEEP_MAX_CELLS=2000" in message
    three = {**BASE, "chinchilla": [1, 2, 4]}
    assert len(plan_document(three, max_cells=3).cells) == 3
    ((field, message),) = errors(three, max_cells=2)
    assert "3 cells" in message


def test_a_cell_whose_every_warmup_is_too_long_is_named() -> None:
    ((field, message),) = errors({**BASE, "search": TOO_LONG_WARMUP})
    assert field == "chinchilla"
    assert "adamw/tiny-130k/1 cannot run any config" in message and "warmup [100000]" in message
    doc = {
        "name": "t",
        "cells": [{"optimizer": "adamw", "scale": "tiny-130k", "chinchilla": 1}],
        "search": TOO_LONG_WARMUP,
    }
    ((field, _),) = errors(doc)
    assert field == "cells.0.chinchilla"
    # One config with a warmup short enough is enough: the others fail alone, as the trainer says why.
    ok = {"adamw": {"grid": {"warmup": [32, 100_000]}, "tune": ["lr", "warmup"]}}
    assert plan_document({**BASE, "search": ok}, 2000).cells


# ---- the CLI: one line, exit status 2, nothing written -------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path / "home"))
    for name in ("DATABASE_URL", "RAY_ADDRESS", "SWEEP_RAY_NUM_CPUS", "SWEEP_MAX_CELLS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(tmp_path: Path, doc: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["run", str(path)])
    err = capsys.readouterr().err
    return code, err


def sweeps_in(url: str) -> int:
    db = Database(url)
    try:
        with db.session() as s:
            return len(repo.list_sweeps(s))
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({**BASE, "chinchilla": [float("nan")]}, "chinchilla: multiples must be positive, finite"),
        ({**BASE, "chinchilla": [1e308]}, "within [0.001, 1000], got 1e+308"),
        ({**BASE, "search": TOO_LONG_WARMUP}, "cannot run any config"),
        ({**BASE, "data": "/no/such/tokens"}, "data: '/no/such/tokens' does not exist"),
        ({**BASE, "resources": {"cpu": 4096}}, "resources: this machine's Ray can never run a trial: {cpu: 4096}"),
        ({**BASE, "resources": {"gpu": 1}}, "{gpu: 1} per trial; there is {cpu: "),
    ],
)
def test_run_refuses_impossible_specs_in_one_line(
    doc: dict[str, Any], words: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if doc.get("resources", {}).get("gpu") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = run(home, doc, capsys)
    assert code == 2 and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    db_file = home / "home" / "sweep-service.db"
    assert not db_file.exists() or sweeps_in(f"sqlite:///{db_file}") == 0


def test_run_cell_cap_is_a_setting(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWEEP_MAX_CELLS", "2")
    get_settings.cache_clear()
    code, err = run(home, {**BASE, "chinchilla": [0.5, 1, 2]}, capsys)
    assert code == 2 and "3 cells is more than SWEEP_MAX_CELLS=2" in err


def test_run_with_a_read_only_database_writes_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / "ro.db"
    upgrade(f"sqlite:///{path}")
    # Read-only by the SQLite open mode: the tests run as root, whom file permissions do not stop.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///file:{path}?mode=ro&uri=true")
    get_settings.cache_clear()
    code, err = run(home, BASE, capsys)
    assert code == 2 and "cannot write the database" in err and "readonly" in err.replace("-", ""), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sweeps_in(f"sqlite:///{path}") == 0


def test_run_with_an_unwritable_sweep_home_writes_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / "db.sqlite"
    upgrade(f"sqlite:///{path}")
    blocker = home / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SWEEP_HOME", str(blocker / "home"))  # under a file: no directory can be made there
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    code, err = run(home, BASE, capsys)
    assert code == 2 and "cannot write Ray Tune's results under SWEEP_HOME" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sweeps_in(f"sqlite:///{path}") == 0


def test_run_exits_non_zero_when_the_sweep_ended_failed(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The sweep `run` would resume (same spec, same key) ended failed: the command says so and exits 1.
    url = get_settings().db_url()
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    upgrade(url)
    db = Database(url)
    key = "spec:" + hashlib.sha256(json.dumps(BASE, sort_keys=True).encode()).hexdigest()
    with db.session() as s:
        sweep = repo.create_sweep(s, "t", BASE, idempotency_key=key)
        repo.set_sweep_status(s, sweep.id, ["queued"], "failed", error="no cell produced a finite loss")
    db.dispose()
    code, err = run(home, BASE, capsys)
    assert code == 1 and "failed: no cell produced a finite loss" in err


@pytest.mark.postgres
def test_run_with_a_read_only_postgresql_writes_nothing(
    home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(postgres_url)
    # Every transaction read-only, as on a hot standby or for a read-only role.
    monkeypatch.setenv("DATABASE_URL", f"{postgres_url}?options=-c%20default_transaction_read_only%3Don")
    get_settings.cache_clear()
    before = sweeps_in(postgres_url)
    code, err = run(home, {**BASE, "name": "read-only"}, capsys)
    assert code == 2 and "cannot write the database" in err and "read-only transaction" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sweeps_in(postgres_url) == before
