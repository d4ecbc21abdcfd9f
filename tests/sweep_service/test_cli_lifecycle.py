"""`sweep-service pause`, `resume` and `delete`: the service's use cases from the command line, on the CLI's
default database (SQLite under SWEEP_HOME)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.cli import main
from sweep_service.settings import get_settings


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.setenv("SWEEP_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    url = get_settings().db_url()
    upgrade(url)
    db = Database(url)
    yield db
    db.dispose()
    get_settings.cache_clear()


def test_pause_resume_delete(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with home.session() as s:
        sweep_id = repo.create_sweep(s, "cli", {"name": "cli"}).id
    assert main(["pause", str(sweep_id)]) == 0 and "paused" in capsys.readouterr().out
    with home.session() as s:
        assert repo.get_sweep(s, sweep_id).status == "paused"  # type: ignore[union-attr]
    assert main(["resume", str(sweep_id)]) == 0 and "queued" in capsys.readouterr().out
    assert main(["delete", str(sweep_id)]) == 0 and "deleted" in capsys.readouterr().out
    with home.session() as s:
        assert repo.get_sweep(s, sweep_id) is None
    assert main(["delete", str(sweep_id)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"sweep-service: error: no sweep {sweep_id}" and "Traceback" not in err


def test_a_running_sweep_is_not_deleted(home: Database, capsys: pytest.CaptureFixture[str]) -> None:
    with home.session() as s:
        sweep_id = repo.create_sweep(s, "cli", {"name": "cli"}).id
        repo.set_sweep_status(s, sweep_id, ["queued"], "running")
    assert main(["delete", str(sweep_id)]) == 2
    assert "cancel or pause it" in capsys.readouterr().err
    assert main(["resume", str(sweep_id)]) == 0  # resuming a running sweep changes nothing
