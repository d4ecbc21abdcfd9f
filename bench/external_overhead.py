"""External-trial overhead: N fixed-duration trials through `sweep-service agent` against the same trials in-process.

Baseline ("in-process"): the engine's own planning loop (sweep_service.engine.SweepDriver: next_trial ->
work -> record_final, what Ray Tune's Searcher drives), running each trial's work in the same process.
Ours ("agent"): the same spec as an `executor: external` sweep served by the REST API (uvicorn, in this
process, on a fresh SQLite file) and run by `sweep-service agent SWEEP_ID -- python -c WORK` (one worker): per
trial a suggestions request, a new process for the command, heartbeats, a metrics line and a complete request.
The work is the same in both: sleep a fixed time, then a loss computed from the config. Both run one fixed
config under N seeds (N trials), one trial at a time, so the difference in wall time is the agent's overhead:
HTTP, leases, the database and the command's process start. Prints both wall times, the overhead per
trial ((wall - N x seconds) / N) and the ratio (agent / in-process) last.

    python bench/external_overhead.py [--trials 10] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from api.app import create_app
from db import repository as repo
from db.migrate import upgrade
from db.session import Database
from sweep_service.engine import SweepDriver
from sweep_service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
# The trial's work, as a command (the agent's) and as a function (in-process): sleep, then a loss from the config.
WORK = (
    "import json, os, sys, time; c = json.loads(os.environ['SWEEP_TRIAL_CONFIG']); time.sleep(float(sys.argv[1]));"
    " print(json.dumps({'step': 1, 'loss': 3.0})); print(json.dumps({'final_loss': 2.0 + c['lr']}))"
)


def spec(n: int, executor: str) -> dict[str, Any]:
    """One fixed config under N seeds: N trials, all runnable at once, planned without a sampler."""
    return {
        "name": f"external overhead ({executor})",
        "optimizers": ["adamw"],
        "scales": ["tiny-130k"],
        "chinchilla": [1],
        "search": {"adamw": {"tune": []}},
        "seeds": list(range(n)),
        "max_concurrent": 1,
        "executor": executor,
    }


def in_process(db: Database, n: int, seconds: float) -> float:
    with db.session() as s:
        sweep_id = repo.create_sweep(s, "in-process", spec(n, "ray")).id
    start = time.perf_counter()
    driver = SweepDriver(db, sweep_id)
    driver.prepare()
    ran = 0
    while True:
        nxt = driver.next_trial()
        if nxt == "FINISHED":
            break
        if not isinstance(nxt, dict):
            time.sleep(0.01)
            continue
        time.sleep(seconds)
        loss = 2.0 + float(nxt["run"]["hparams"]["lr"])
        driver.record_eval(nxt["trial_id"], 1, 3.0, None)
        driver.record_final(nxt["trial_id"], {"kind": "final", "status": "completed", "final_eval_loss": loss})
        ran += 1
    wall = time.perf_counter() - start
    assert ran == n, f"in-process ran {ran} trials, expected {n}"
    return wall


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def through_agent(url: str, db: Database, n: int, seconds: float) -> float:
    import httpx

    created = httpx.post(
        f"{url}/sweeps", json=spec(n, "external"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    )
    created.raise_for_status()
    sweep_id = int(created.json()["id"])
    argv = [sys.executable, "-m", "sweep_service.cli", "agent", str(sweep_id), "--url", url, "--token", TOKEN]
    argv += ["--", sys.executable, "-c", WORK, str(seconds)]
    start = time.perf_counter()
    out = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    with db.session() as s:
        done = repo.count_trials_by_status(s, sweep_id).get("completed", 0)
    assert done == n, f"the agent completed {done} trials, expected {n}:\n{out.stdout}\n{out.stderr}"
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seconds", type=float, default=0.5, help="each trial's work")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url_db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url_db)
        db = Database(url_db)
        env: dict[str, Any] = {"SWEEP_HOME": tmp, "SWEEP_API_TOKEN": TOKEN, "SWEEP_API_READ_TOKENS": ""}
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(url_db, Settings(**env)), port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        try:
            base = in_process(db, args.trials, args.seconds)
            agent = through_agent(url, db, args.trials, args.seconds)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            db.dispose()

    work = args.trials * args.seconds
    print(f"{args.trials} trials of {args.seconds:g} s each, one at a time (work {work:.1f} s)")
    for name, wall in (("in-process (SweepDriver, baseline)", base), ("agent (REST + a process per trial)", agent)):
        print(f"{name:<36} {wall:6.2f} s   overhead {(wall - work) / args.trials:.3f} s per trial")
    print(f"ratio agent/in-process: {agent / base:.3f}")


if __name__ == "__main__":
    main()
