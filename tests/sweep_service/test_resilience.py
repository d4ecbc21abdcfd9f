"""Issue 13's "Why" bullets that need no Ray: `run` takes the lease (and refuses a held sweep, naming the
holder); a database outage does not end the dispatcher; trial.config holds what the worker resolved."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
import yaml
from sqlalchemy.exc import OperationalError

from db import repository as repo
from db.session import Database
from sweep_service import lease as leases
from sweep_service.cli import main
from sweep_service.dispatcher import Dispatcher
from sweep_service.engine import SweepDriver
from sweep_service.settings import get_settings
from tests.sweep_service.fake_sweep import final, new_sweep, spec


def test_run_refuses_a_sweep_a_dispatcher_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))
    get_settings.cache_clear()
    doc = spec(name="held")
    path = tmp_path / "held.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["db", "upgrade"]) == 0
    db = Database(url)
    key = "spec:" + hashlib.sha256(json.dumps(yaml.safe_load(path.read_text()), sort_keys=True).encode()).hexdigest()
    with db.session() as s:
        sweep_id = repo.create_sweep(s, "held", doc, idempotency_key=key).id
    assert leases.claim(db, sweep_id, "gpu-box:777:dispatch", 600) is not None
    try:
        assert main(["run", str(path)]) == 1
        err = capsys.readouterr().err
        assert "gpu-box:777:dispatch" in err and "Traceback" not in err
        with db.session() as s:
            assert repo.trials_of_sweep(s, sweep_id) == []  # nothing started
    finally:
        db.dispose()
        get_settings.cache_clear()


def test_the_dispatcher_waits_out_an_outage(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(db_url)
    real = repo.claimable_sweep_ids
    calls = {"n": 0}
    lines: list[str] = []
    stop = threading.Event()

    def down_then_up(*args: object, **kwargs: object) -> list[int]:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OperationalError("SELECT", {}, Exception("could not connect to server: Connection refused"))
        if calls["n"] >= 5:
            stop.set()
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(repo, "claimable_sweep_ids", down_then_up)
    d = Dispatcher(db, tmp_path, owner="x", progress=lines.append, stop=stop)
    d.run_forever(poll_seconds=0.01)  # returns only because `stop` was set: the outage did not end it
    assert calls["n"] >= 5
    assert any("database unavailable" in line for line in lines) and any("back" in line for line in lines)
    db.dispose()


def test_trial_config_holds_what_the_worker_resolved(db_url: str) -> None:
    db = Database(db_url)
    sweep_id = new_sweep(db, spec())
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    nxt = driver.next_trial()
    assert isinstance(nxt, dict)
    hparams = nxt["run"]["hparams"]
    resolved = {**hparams, "decay": 1.0, "eps": 1e-20, "lr": hparams["lr"]}
    driver.record_final(nxt["trial_id"], {**final(hparams), "hparams_json": json.dumps(resolved)})
    with db.session() as s:
        trial = repo.get_trial(s, nxt["trial_id"])
        assert trial is not None and trial.config == resolved
        assert trial.config_key == repo.config_key({k: hparams[k] for k in ("lr", "wd")})
    db.dispose()
