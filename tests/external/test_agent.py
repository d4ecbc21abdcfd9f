"""Two `sweep-service agent` processes on one external sweep against a live API; one is killed mid-trial.

Its trial is offered again once its lease has run out, the sweep completes with the same bests as the
in-process engine on the same deterministic objective (tests/external/objective.py), a late `complete` from
the dead worker gets 409, and no config runs twice for a seed. SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from objective import SPEC
from test_planner import _bests, _in_process_bests

from api.app import create_app
from db import repository as repo
from db.session import Database
from sweep_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVE = Path(__file__).with_name("objective.py")
TOKEN = "agent-test-token"
LEASE_SECONDS = 2.0  # short, so the dead agent's trial comes back within the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[str]:
    env: dict[str, Any] = {
        "SWEEP_HOME": str(tmp_path),
        "SWEEP_API_TOKEN": TOKEN,
        "SWEEP_API_READ_TOKENS": "",
        "SWEEP_DATA_ROOTS": "",
        "SWEEP_TRIAL_LEASE_SECONDS": LEASE_SECONDS,
    }
    settings = Settings(**env)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(db_url, settings), port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _agent(url: str, sweep_id: int, name: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "sweep_service.cli", "agent", str(sweep_id), "--url", url, "--token", TOKEN]
    argv += ["--worker", name, *extra, "--", sys.executable, str(OBJECTIVE)]
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(
        argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def test_two_agents_one_killed_mid_trial(server: str, db_url: str, tmp_path: Path) -> None:
    db = Database(db_url)
    try:
        expected = _in_process_bests(db)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        created = httpx.post(f"{server}/sweeps", json=SPEC, headers=headers, timeout=60)
        assert created.status_code == 201, created.text
        sweep_id = int(created.json()["id"])
        hang = tmp_path / "hang.pid"
        doomed = _agent(server, sweep_id, "agent-a", env={"OBJECTIVE_HANG_FILE": str(hang)})
        survivor: subprocess.Popen[str] | None = None
        try:
            deadline = time.monotonic() + 120
            while not (hang.exists() and hang.read_text()):
                assert doomed.poll() is None, doomed.communicate()[0]
                assert time.monotonic() < deadline, "agent a never started a trial"
                time.sleep(0.05)
            survivor = _agent(server, sweep_id, "agent-b", "--workers", "2")
            os.killpg(doomed.pid, signal.SIGKILL)  # agent a dies mid-trial: no complete, no more heartbeats
            doomed.wait()
            os.kill(int(hang.read_text()), signal.SIGKILL)  # and its orphaned command with it
            with db.session() as s:
                (lost,) = [t for t in repo.trials_of_sweep(s, sweep_id, ["running"]) if t.worker == "agent-a"]
                lost_id = lost.id
            out, _ = survivor.communicate(timeout=600)
            assert survivor.returncode == 0, out
        finally:
            for proc in (doomed, survivor):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        assert f"trial {lost_id}: completed" in out  # re-offered to agent b after the lease ran out
        assert _bests(db, sweep_id) == expected
        with db.session() as s:
            sweep = repo.get_sweep(s, sweep_id)
            assert sweep is not None and sweep.status == "completed"
            trials = repo.trials_of_sweep(s, sweep_id)
            assert all(t.status == "completed" and t.worker.startswith("agent-b/") for t in trials)  # type: ignore[union-attr]
            runs: dict[Any, int] = {}
            for t in trials:
                runs[(t.config_key, t.seed)] = runs.get((t.config_key, t.seed), 0) + t.attempts
            # Each config ran once per seed, but the killed one, which ran twice (its first run never finished).
            assert {k: n for k, n in runs.items() if n != 1} == {(lost.config_key, lost.seed): 2}
        late = httpx.post(
            f"{server}/trials/{lost_id}/complete", json={"worker": "agent-a", "final_loss": 1.0}, headers=headers
        )
        assert late.status_code == 409
    finally:
        db.dispose()


def test_failures_and_divergence_through_the_agent(server: str, db_url: str) -> None:
    from sweep_service.agent import agent

    db = Database(db_url)
    try:
        spec = {**SPEC, "divergence": {"max_loss": 100}}
        created = httpx.post(f"{server}/sweeps", json=spec, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        sweep_id = int(created.json()["id"])
        lines: list[str] = []
        crash = (
            "import sys; print('loading', file=sys.stderr); print('boom: out of memory', file=sys.stderr); sys.exit(3)"
        )
        silent = "print('no result here')"
        # The second point breaks the divergence rule (> max_loss 100): the command is stopped there.
        diverge = "import json, time; print(json.dumps({'step': 1, 'loss': 5.0}), flush=True);"
        diverge += " print(json.dumps({'step': 2, 'loss': 1e6}), flush=True); time.sleep(600)"
        for code in (crash, silent, diverge):
            assert agent(server, TOKEN, sweep_id, [sys.executable, "-c", code], count=1, say=lines.append) == 1
        with db.session() as s:
            first, second, third = repo.trials_of_sweep(s, sweep_id)[:3]
        assert first.status == "failed" and first.reason is not None
        assert first.reason.startswith("exit code 3:") and first.reason.endswith("boom: out of memory")
        assert second.status == "failed" and "final_loss" in (second.reason or "")
        assert third.status == "diverged" and "> 100" in (third.reason or "")
        assert any("no result here" in line for line in lines)  # other stdout lines are passed through
    finally:
        db.dispose()
