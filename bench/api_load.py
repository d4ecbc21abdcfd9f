"""API load: latency p50/p99 and throughput of `GET /sweeps/{id}`, `GET /best` and a trials page under load.

Baseline: the target of the issue, p99 under 50 ms at 100 requests/s on loopback, with 100k trials and 1M
curve points in the database. The database is filled with bulk inserts shaped like the engine's rows
(sweep_service/engine.py: resolved configs of ~10 hyperparameters, mostly completed trials with some diverged
and failed ones, each cell's recorded best), then the real app (api.app.create_app) is served by uvicorn with
one worker in a subprocess on 127.0.0.1, and this process drives it with httpx.AsyncClient at a fixed
open-loop rate, the three endpoints in turn, with a bounded number of requests in flight.

Latency is measured from the moment a request was due to be sent, not from when it was sent, so a client
that falls behind (all slots busy) counts the wait (the "coordinated omission" correction). The server
process also times each request inside the app and each SQL statement it runs, which says where the time
goes and which statement is slowest, and counts its CPU time per request, which says what rate one worker can
sustain at all (a figure that depends little on what else the machine runs). A request not answered within
10 s of its due time is an error, so an overloaded server cannot stretch the run. Runs on SQLite (a temporary
file) and PostgreSQL (a throwaway database, dropped at the end; skipped with a note when the server does not
answer).

Baseline, measured in the same run on the same server: `GET /healthz` (one trivial `SELECT 1` round trip to
the database, a tiny JSON body) at the same rate and concurrency, for the same number of seconds, after the
endpoints: the fixed cost of a request through this stack (client, uvicorn, FastAPI, a database session) here.
Prints the p99 last, with its ratio to the baseline's p99.

While the clients read, a writer process does what the dispatcher does in `sweep-service serve`: it runs trials
through the running sweep with the engine's own repository calls and transactions (db/repository.py: add the
trial, start it, report each evaluation point, finish it; one transaction each, sweep_service/engine.py), at
`--writes` trials per second (default 2, with 10 evaluation reports each: ~26 write transactions/s, more than a
16-worker cluster at the paper's scales commits). So the reads are measured against a database being written, as
they are in service, and the writer's own commit latency is reported (SQLite allows one writer at a time).

    python bench/api_load.py [--db sqlite|postgres|both] [--trials 100000] [--points-per-trial 10]
                             [--rate 100] [--seconds 20] [--writes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import product
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

from api.middleware import ASGIApp, Receive, Scope, Send
from db.migrate import upgrade
from db.models import TRIAL_ENDED
from db.repository import bulk_insert, config_key
from db.session import make_engine, masked_url, scrub_password

HOST = "127.0.0.1"  # loopback only: nothing leaves the machine
POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TARGET_P99_MS = 50.0  # the target, at 100 requests/s
REQUEST_TIMEOUT_S = 10.0  # a request that takes longer counts as an error; bounds the run's length
STATS_PATH = "/__bench/stats"  # answered by the server wrapper below (SqlTimer), never by the app

# The three operations under test, in the order the load cycles through them.
SWEEP = "GET /sweeps/{id}"
BEST = "GET /best"
PAGE = "GET /sweeps/{id}/trials"
KINDS = (SWEEP, BEST, PAGE)
HEALTH = "GET /healthz"  # the baseline: one SELECT 1, a tiny body
PAGE_SIZE = 50  # the API's default page size (api/deps.py DEFAULT_LIMIT)

# Populated rows. 13 optimizers x 4 paper scales x 4 multiples (PAPER.md: 1, 2, 4, 8x Chinchilla) make 208
# distinct cells; each sweep takes a window of them, so sweeps overlap and /best compares cells across sweeps.
SCALES = ("130m", "300m", "520m", "1.2b")
CHINCHILLA = (1.0, 2.0, 4.0, 8.0)
# Searched hyperparameters: AdamW's grid (PAPER.md section 3; lr 2e-3 is the 1.2B prediction of section 4),
# 5 x 3 x 4 x 3 x 4 = 720 distinct configs per seed, more than a cell's 500 trials.
GRID: dict[str, list[Any]] = {
    "lr": [0.002, 0.004, 0.008, 0.016, 0.032],
    "wd": [0.0, 0.1, 0.2],
    "warmup": [500, 1000, 2000, 4000],
    "beta2": [0.9, 0.95, 0.98],
    "batch_size": [128, 256, 512, 1024],
}
# The rest of a resolved AdamW config (Space.fixed, sweep_service/spec.py; values from PAPER.md section 3's grid).
FIXED: dict[str, Any] = {"beta1": 0.9, "eps": 1e-20, "max_grad_norm": 1.0, "min_lr_ratio": 0.0}
BASELINE = {k: v[len(v) // 2] for k, v in GRID.items()}  # coordinate descent starts from the grid's middle
TOLERANCE = 3e-3  # near-tie tolerance (PAPER.md section 4, sweep_service.analysis.NEAR_TIE_TOLERANCE)
INSERT_CHUNK = 10_000  # trials per executemany (x10 for curve points): bounded memory, few round trips


# ---- the database ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    sweeps: int
    cells_per_sweep: int
    trials_per_cell: int
    points_per_trial: int

    @property
    def trials_per_sweep(self) -> int:
        return self.cells_per_sweep * self.trials_per_cell


@dataclass
class Population:
    sweeps: int = 0
    cells: int = 0
    trials: int = 0
    points: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _cell_keys(shape: Shape, optimizers: list[str]) -> list[list[tuple[str, str, float]]]:
    """Each sweep's (optimizer, scale, chinchilla) cells: a window over all combinations, shifted per sweep."""
    combos = list(product(optimizers, SCALES, CHINCHILLA))
    if shape.cells_per_sweep > len(combos):
        raise SystemExit(f"--cells-per-sweep at most {len(combos)}")
    step = max(1, shape.cells_per_sweep // 3)  # consecutive sweeps share two thirds of their cells
    return [[combos[(k * step + j) % len(combos)] for j in range(shape.cells_per_sweep)] for k in range(shape.sweeps)]


def _spec(name: str, cells: list[tuple[str, str, float]]) -> dict[str, Any]:
    """A sweep spec document like the ones POST /sweeps stores (examples/quickstart.json, with explicit cells)."""
    optimizers = sorted({o for o, _, _ in cells})
    return {
        "name": name,
        "cells": [{"optimizer": o, "scale": s, "chinchilla": c} for o, s, c in cells],
        "search": {o: {"tune": list(GRID), "grid": GRID, "baseline": BASELINE, "fixed": FIXED} for o in optimizers},
        "strategy": "coordinate_descent",
        "tolerance": TOLERANCE,
        "budget": 500,
        "seeds": [0],
        "resources": {"cpu": 1, "gpu": 1},
        "max_concurrent": 16,
        "eval_every": 1000,
        "data": "builtin",
    }


def _repro(scale: str) -> dict[str, Any]:
    """A reproducibility record shaped like workers.trainer._repro_info's (the fields a finished trial stores)."""
    from workers.model import SCALES as MODELS

    return {
        "sweep_service": "0.1.0",
        "torch": "2.13.0",
        "python": "3.11.7",
        "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
        "device": "NVIDIA H100 80GB HBM3",
        "threads": 16,
        "data": {
            "name": "fineweb-edu",
            "train_tokens": 10**11,
            "val_tokens": 10**7,
            "vocab_size": 128256,
            "sha256": "0" * 64,
        },
        "model": dataclasses.asdict(MODELS[scale]),
    }


def _status(rng: random.Random, running_sweep: bool) -> str:
    """Mostly completed, some diverged and failed; a running sweep also has trials running and pending."""
    u = rng.random()
    if running_sweep and u < 0.05:
        return "running" if u < 0.02 else "pending"
    if u < 0.12:
        return "diverged"
    if u < 0.15:
        return "failed"
    return "completed"


def populate(engine: Engine, shape: Shape, seed: int) -> Population:
    """Bulk-insert sweeps, cells, trials and curve points (SQLAlchemy Core executemany, explicit ids)."""
    from workers.optimizers import REGISTRY

    rng = random.Random(seed)
    keys = _cell_keys(shape, sorted(REGISTRY))
    repro = {scale: _repro(scale) for scale in SCALES}
    vocab = {scale: int(repro[scale]["model"]["vocab_size"]) for scale in SCALES}
    configs = [dict(zip(GRID, values, strict=True)) for values in product(*GRID.values())]
    base = datetime(2025, 9, 1)
    out = Population(seconds={"sweeps+cells": 0.0, "trials": 0.0, "curve points": 0.0})
    trial_id = 0
    start = time.perf_counter()
    with engine.begin() as conn:
        # One sweep at a time: its rows are built in memory (10k trials, 100k points by default), then inserted
        # parents first for the foreign keys: the sweep, its cells (with their best), its trials, their points.
        for k, sweep_cells in enumerate(keys):
            sweep_id = k + 1
            running = k == shape.sweeps - 1  # the newest sweep is still running; the others finished
            name = f"bench-{sweep_id}"
            created = base + timedelta(days=k)
            sweep = {
                "id": sweep_id,
                "name": name,
                "status": "running" if running else "completed",
                "spec": _spec(name, sweep_cells),
                "imported": False,
                "claimed_by": "dispatcher-0" if running else None,
                "created_at": created,
                "started_at": created,
                "finished_at": None if running else created + timedelta(hours=20),
            }
            cells: list[dict[str, Any]] = []
            trials: list[dict[str, Any]] = []
            points: list[dict[str, Any]] = []
            for j, (optimizer, scale, chinchilla) in enumerate(sweep_cells):
                cell_id = out.cells + len(cells) + 1
                completed: list[tuple[float, int, dict[str, Any]]] = []
                for n in range(shape.trials_per_cell):
                    trial_id += 1
                    searched = configs[(n * 7 + j) % len(configs)]  # 7 is coprime to 720: distinct within a seed
                    config = {**FIXED, **searched}
                    status = _status(rng, running)
                    started = created + timedelta(seconds=30 * trial_id % 72_000)
                    duration = rng.uniform(60.0, 900.0)
                    done = status in TRIAL_ENDED
                    total_steps = 20_000
                    steps = total_steps if status == "completed" else rng.randrange(100, total_steps)
                    # A loss bowl around lr 0.008 plus seed noise: a best config and near-ties emerge.
                    loss = 3.0 + 0.25 * abs(math.log2(searched["lr"] / 0.008)) + rng.gauss(0.0, 0.02)
                    if status == "completed":
                        completed.append((loss, trial_id, config))
                    reason = {  # the trainer's and engine's wording (workers/trainer.py DivergenceRule)
                        "diverged": f"loss is nan at step {steps}",
                        "failed": "the worker failed (Ray Tune gave up after retries)",
                    }.get(status)
                    trials.append(
                        {
                            "id": trial_id,
                            "sweep_id": sweep_id,
                            "cell_id": cell_id,
                            "config_key": config_key(searched),
                            "config": config,
                            "seed": n // len(configs),
                            "round": n // 50,
                            "status": status,
                            "attempts": 0 if status == "pending" else 1,
                            "final_loss": loss if status == "completed" else None,
                            # An untrained model predicts uniformly: the first evaluation is about ln(vocab).
                            "initial_loss": math.log(vocab[scale]) if status != "pending" else None,
                            "reason": reason,
                            "steps": steps if status != "pending" else None,
                            "total_steps": total_steps,
                            "tokens": steps * searched["batch_size"] * repro[scale]["model"]["seq_len"]
                            if done
                            else None,
                            "tokens_per_second": rng.uniform(2e5, 4e5) if done else None,
                            "device_seconds": duration if done else None,
                            "repro": repro[scale] if done else None,
                            "worker": f"worker-{trial_id % 16}" if status != "pending" else None,
                            "created_at": started,
                            "started_at": started if status != "pending" else None,
                            "finished_at": started + timedelta(seconds=duration) if done else None,
                        }
                    )
                    if status != "pending":
                        # Evaluation points spread over the run: (step, eval loss, train loss), loss decaying.
                        for p in range(shape.points_per_trial):
                            step = (p + 1) * total_steps // shape.points_per_trial
                            eval_loss = loss + 8.0 / (1 + p)
                            points.append(
                                {"trial_id": trial_id, "step": step, "eval_loss": eval_loss, "train_loss": eval_loss}
                            )
                completed.sort(key=lambda x: x[0])
                best = completed[0] if completed else None
                cells.append(
                    {
                        "id": cell_id,
                        "sweep_id": sweep_id,
                        "key": f"{optimizer}/{scale}/{chinchilla:g}",
                        "optimizer": optimizer,
                        "scale": scale,
                        "chinchilla": chinchilla,
                        "strategy": "coordinate_descent",
                        "space": {"grid": GRID, "baseline": BASELINE, "fixed": FIXED},
                        "settings": {"baseline_from": None, "tolerance": TOLERANCE},
                        "status": "running" if running else "converged",
                        "round": shape.trials_per_cell // 50,
                        "best_trial_id": best[1] if best else None,
                        "best_loss": best[0] if best else None,
                        "best_config": best[2] if best else None,
                        # Other configs within the tolerance of the best (PAPER.md: near-ties are reported).
                        "near_ties": [c for loss, _, c in completed[1:4] if best and loss - best[0] <= TOLERANCE],
                    }
                )
            t0 = time.perf_counter()
            bulk_insert(conn, "sweeps", [sweep])
            bulk_insert(conn, "cells", cells)
            t1 = time.perf_counter()
            for i in range(0, len(trials), INSERT_CHUNK):
                bulk_insert(conn, "sweep_trials", trials[i : i + INSERT_CHUNK])
            t2 = time.perf_counter()
            for i in range(0, len(points), INSERT_CHUNK * 10):
                bulk_insert(conn, "curve_points", points[i : i + INSERT_CHUNK * 10])
            t3 = time.perf_counter()
            out.seconds["sweeps+cells"] += t1 - t0
            out.seconds["trials"] += t2 - t1
            out.seconds["curve points"] += t3 - t2
            out.sweeps += 1
            out.cells += len(cells)
            out.trials += len(trials)
            out.points += len(points)
    out.seconds["total"] = time.perf_counter() - start  # row building and the commit included
    return out


@contextmanager
def sqlite_database() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as tmp:
        yield f"sqlite:///{tmp}/bench.db"


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str | None]:
    """A throwaway database on the server of `admin_url`, dropped at the end; None when the server is down."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"sweep_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = scrub_password(str(exc.orig).strip().splitlines()[0], admin_url)
        print(f"postgres: skipped, {masked_url(admin_url)} did not answer ({reason})")
        yield None
        return
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))  # FORCE: PostgreSQL >= 13
        admin.dispose()


# ---- the server (a subprocess) --------------------------------------------------------------------------


def kind_of(path: str) -> str:
    if re.fullmatch(r"/sweeps/\d+", path):
        return SWEEP
    if re.fullmatch(r"/sweeps/\d+/trials", path):
        return PAGE
    return BEST if path == "/best" else "other"


# Per request: [statements, SQL seconds, {statement: [count, seconds]}]; set by SqlTimer for each request and
# read by the engine's cursor events, which run in the threadpool thread of the (sync) endpoint; Starlette
# runs it in a copy of the request's context, so the list is the request's own.
_request_sql: ContextVar[list[Any] | None] = ContextVar("_request_sql", default=None)


class SqlTimer:
    """ASGI wrapper around the app: times each request inside the app and each SQL statement it runs, per
    endpoint, and answers GET /__bench/stats with the totals (JSON). The bench's instrument, not the app's.

    A statement's time runs from the driver call to the return into Python, so on an overloaded server it
    includes waiting for the GIL; the app time includes waiting for a threadpool thread. Both are exact when
    the server keeps up. It does not include fetching the rows: sqlite3 runs most of a grouped query (every row it
    reads) in fetchall, after the call returned, so for SQLite the server CPU per request is the better figure."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.stats: dict[str, dict[str, Any]] = {}
        # The server's CPU time (all threads) since the last reset: unlike latency, CPU per request barely
        # depends on what else the machine runs, so it says what one worker can sustain (1000 ms / CPU ms).
        self.cpu0 = time.process_time()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    @staticmethod
    def _before(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info.setdefault("bench_t0", []).append(time.perf_counter())

    @staticmethod
    def _after(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        elapsed = time.perf_counter() - conn.info["bench_t0"].pop()
        acc = _request_sql.get()
        if acc is not None:
            acc[0] += 1
            acc[1] += elapsed
            per = acc[2].setdefault(" ".join(statement.split()), [0, 0.0])
            per[0] += 1
            per[1] += elapsed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == STATS_PATH:
            body = json.dumps({"endpoints": self.stats, "cpu_seconds": time.process_time() - self.cpu0}).encode()
            if scope.get("query_string") == b"reset=1":
                self.stats, self.cpu0 = {}, time.process_time()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        acc: list[Any] = [0, 0.0, {}]
        token = _request_sql.set(acc)
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - t0
            _request_sql.reset(token)
            s = self.stats.setdefault(
                kind_of(scope["path"]), {"app_seconds": [], "statements": 0, "sql_seconds": 0.0, "by_statement": {}}
            )
            s["app_seconds"].append(elapsed)
            s["statements"] += acc[0]
            s["sql_seconds"] += acc[1]
            for statement, (n, seconds) in acc[2].items():
                per = s["by_statement"].setdefault(statement, [0, 0.0])
                per[0] += n
                per[1] += seconds


def serve(database_url: str) -> None:
    """The server process: the real app under uvicorn, one worker, on a free loopback port printed first."""
    import uvicorn

    from api.app import create_app
    from sweep_service.settings import get_settings

    # No bearer tokens whatever the environment says: the bench measures the endpoints, not the auth check.
    settings = get_settings().model_copy(update={"api_tokens": "", "api_read_tokens": ""})
    app = create_app(database_url, settings=settings)
    wrapped = SqlTimer(app, app.state.db.engine)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and this one's is 0: without it, Nagle
    # holds the response body until the client's delayed ACK of the headers, +40 ms a request (the connections
    # accepted from this socket inherit the option).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((HOST, 0))  # port 0: the kernel picks a free one, no race with other processes
    print(sock.getsockname()[1], flush=True)
    os.dup2(2, 1)  # anything printed later goes to stderr: nobody reads the pipe after the port
    config = uvicorn.Config(wrapped, workers=1, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def wait_for_health(base: str, proc: subprocess.Popen[str], seconds: float) -> None:
    """Poll `base`/healthz until it answers 200; SystemExit (with the server's last stderr, when it was piped and
    the server exited) if the server exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read()[-2000:] if proc.stderr is not None and proc.poll() is not None else ""
            raise SystemExit(f"the server did not answer /healthz within {seconds:g} s\n{err}".rstrip())
        time.sleep(0.1)


@contextmanager
def server(database_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", database_url], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.isdigit():
            raise SystemExit(f"the server did not start (exit code {proc.wait(timeout=30)})")
        base = f"http://{HOST}:{int(line)}"
        wait_for_health(base, proc, 60)
        yield proc, base
    finally:
        # An overloaded server still works through requests the client gave up on (uvicorn does not cancel a
        # request whose client left); after a short grace the throwaway server is killed.
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write(database_url: str, rate: float, points: int) -> None:
    """The writer process: trials run through the running sweep's cells as the engine records them, `rate` a second.

    Each trial is added (pending), started, given `points` evaluation reports and finished, each step its own
    transaction through db.repository (the engine's calls, sweep_service/engine.py). Runs until terminated (SIGTERM),
    then prints one JSON line: trials finished, transactions committed, and the commit latencies' p50/p99/max.
    """
    import signal

    from db import repository as repo
    from db.session import Database

    db = Database(database_url)
    stop = False

    def _stop(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    with db.session() as s:
        sweep_id = s.scalar(text("SELECT id FROM sweeps WHERE status = 'running' ORDER BY id LIMIT 1"))
        cells = repo.cells_of(s, sweep_id) if sweep_id is not None else []
    if not cells:
        print(json.dumps({"error": "no running sweep to write into"}), flush=True)
        return
    commits: list[float] = []
    trials = 0

    @contextmanager
    def tx() -> Iterator[Any]:
        t0 = time.perf_counter()
        with db.session() as s:  # Database.session commits on exit
            yield s
        commits.append(time.perf_counter() - t0)

    print("ready", flush=True)
    start = time.perf_counter()
    while not stop:
        cell = cells[trials % len(cells)]
        # The baseline config under a seed no populated trial has (they use seeds 0 and 1): the engine never adds
        # a (cell, config, seed) twice, so each trial is new.
        with tx() as s:
            trial = repo.add_trial(s, cell, BASELINE, {**FIXED, **BASELINE}, seed=1000 + trials, round_=99)
            assert trial is not None
            trial_id = trial.id
        with tx() as s:
            repo.transition_trial(s, trial_id, ["pending"], "running", worker="bench-writer")
        for k in range(points):
            loss = 3.0 + 8.0 / (1 + k)
            with tx() as s:
                repo.add_curve_points(s, trial_id, [((k + 1) * 100, loss, loss)])
        with tx() as s:
            repo.transition_trial(s, trial_id, ["running"], "completed", final_loss=3.0, steps=points * 100)
        trials += 1
        due = start + trials / rate  # open loop: the next trial starts on time, or at once when behind
        time.sleep(max(0.0, due - time.perf_counter()))
    ms = [1000 * t for t in commits]
    out = {"trials": trials, "commits": len(commits), "seconds": time.perf_counter() - start}
    if ms:
        out.update(p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), max_ms=max(ms))
    print(json.dumps(out), flush=True)
    db.dispose()


@contextmanager
def writer(database_url: str, rate: float, points: int) -> Iterator[dict[str, Any]]:
    """Runs the writer process while the body runs; the dict it yields holds the writer's figures afterwards."""
    figures: dict[str, Any] = {}
    if rate <= 0:
        yield figures
        return
    cmd = [sys.executable, __file__, "--write", database_url, "--writes", str(rate), "--points-per-trial", str(points)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise SystemExit(f"the writer did not start: {line or proc.wait(timeout=30)}")
        yield figures
    finally:
        proc.terminate()
        try:
            tail, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            tail, _ = proc.communicate()
        if tail.strip():
            figures.update(json.loads(tail.strip().splitlines()[-1]))


# ---- the client -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    latency: float  # from when the request was due to when the response was read, seconds
    service: float  # from when it was sent (a slot was free) to when the response was read; nan if never
    ok: bool


def plan_requests(shape: Shape, n: int, seed: int) -> list[tuple[str, str]]:
    """(kind, path) of each request: the three endpoints in turn, random sweeps and pages."""
    rng = random.Random(seed)
    pages = max(1, shape.trials_per_sweep // PAGE_SIZE)
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        sweep_id = rng.randint(1, shape.sweeps)
        if kind == SWEEP:
            out.append((kind, f"/sweeps/{sweep_id}"))
        elif kind == BEST:
            out.append((kind, "/best"))
        else:
            offset = rng.randrange(pages) * PAGE_SIZE
            out.append((kind, f"/sweeps/{sweep_id}/trials?limit={PAGE_SIZE}&offset={offset}"))
    return out


async def drive(
    base: str, requests: list[tuple[str, str]], rate: float, warmup: int, concurrency: int
) -> tuple[list[Sample], float]:
    """Send `requests` open-loop at `rate` per second, at most `concurrency` in flight; samples after the first
    `warmup` requests, and the seconds from the first recorded request's due time to the last response."""
    samples: list[Sample] = []
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        async def one(i: int, kind: str, path: str, due: float) -> None:
            sent, ok = math.nan, False
            try:
                # Answered within REQUEST_TIMEOUT_S of its due time, waiting for a slot included, or an error:
                # a server that falls behind cannot stretch the run past its schedule plus this timeout.
                async with asyncio.timeout(due + REQUEST_TIMEOUT_S - time.perf_counter()), slots:
                    sent = time.perf_counter()
                    response = await client.get(path)
                    ok = response.status_code == 200
            except (TimeoutError, httpx.HTTPError):
                ok = False
            done = time.perf_counter()
            if i >= warmup:
                samples.append(Sample(kind, done - due, done - sent, ok))

        start = time.perf_counter() + 0.05
        tasks = []
        for i, (kind, path) in enumerate(requests):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, kind, path, due)))
        await asyncio.gather(*tasks)
        end = time.perf_counter()
    return samples, end - (start + warmup / rate)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# ---- one database ---------------------------------------------------------------------------------------


def bench_database(label: str, url: str, shape: Shape, args: argparse.Namespace) -> tuple[float, float]:
    """Populate, serve, load; prints the figures and returns the overall p99 and the baseline's p99, in ms."""
    upgrade(url)
    engine = make_engine(url)
    try:
        pop = populate(engine, shape, args.seed)
        if engine.dialect.name == "postgresql":
            # The rows were inserted with explicit ids, which PostgreSQL's sequences do not see: move each past its
            # table's largest id, so that rows added later (the writer's trials) get fresh ids as in service.
            with engine.begin() as conn:
                for table in ("sweeps", "cells", "sweep_trials"):
                    conn.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                    )
            # What autovacuum does after a bulk load anyway: statistics for the planner, the visibility map for
            # index-only scans. Done now so the run does not depend on when autovacuum wakes up.
            t0 = time.perf_counter()
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
            pop.seconds["vacuum analyze"] = time.perf_counter() - t0
    finally:
        engine.dispose()
    rate_rows = (pop.trials + pop.points) / (pop.seconds["trials"] + pop.seconds["curve points"])
    print(
        f"{label}: populated {pop.sweeps} sweeps, {pop.cells} cells, {pop.trials:,} trials, {pop.points:,} curve "
        f"points in {pop.seconds['total']:.1f} s ({rate_rows:,.0f} rows/s; "
        + ", ".join(f"{k} {v:.1f} s" for k, v in pop.seconds.items() if k != "total")
        + ")"
    )
    warmup = max(len(KINDS), round(args.warmup * args.rate))
    requests = plan_requests(shape, warmup + round(args.seconds * args.rate), args.seed)
    with server(url) as (_, base):
        # One request per endpoint first, alone: the cold start (imports such as workers.model's torch on the
        # first /best, statement compilation) is reported apart and kept out of the server's statistics.
        cold = []
        for kind in KINDS:
            path = next(p for k, p in requests if k == kind)
            t0 = time.perf_counter()
            httpx.get(base + path, timeout=60).raise_for_status()
            cold.append(f"{kind} {1000 * (time.perf_counter() - t0):.0f} ms")
        httpx.get(base + STATS_PATH + "?reset=1", timeout=10)
        print(f"{label}: first request of each endpoint, alone (cold): " + ", ".join(cold))
        with writer(url, args.writes, args.points_per_trial) as written:
            samples, window = asyncio.run(drive(base, requests, args.rate, warmup, args.concurrency))
        stats: dict[str, Any] = httpx.get(base + STATS_PATH, timeout=10).json()
        # The baseline: the same load on /healthz, same server, same rate, no writer.
        health = [(HEALTH, "/healthz")] * len(requests)
        baseline, _ = asyncio.run(drive(base, health, args.rate, warmup, args.concurrency))
    base_ms = [1000 * x.latency for x in baseline]
    print(
        f"{label}: baseline {HEALTH} at {args.rate:g}/s: p50 {percentile(base_ms, 50):.1f} ms, "
        f"p99 {percentile(base_ms, 99):.1f} ms, {len(base_ms) - sum(x.ok for x in baseline)} errors"
    )
    if written.get("commits"):
        print(
            f"{label}: meanwhile the writer ran {written['trials']} trials through the running sweep "
            f"({written['trials'] / written['seconds']:.1f}/s, {written['commits'] / written['seconds']:.0f} "
            f"transactions/s); commit latency p50 {written['p50_ms']:.1f} ms, p99 {written['p99_ms']:.1f} ms, "
            f"max {written['max_ms']:.1f} ms"
        )
    elif args.writes > 0:
        print(f"{label}: the writer wrote nothing: {written.get('error', 'no figures came back')}")
    return report(label, samples, window, stats, args), percentile(base_ms, 99)


def report(label: str, samples: list[Sample], window: float, stats: dict[str, Any], args: argparse.Namespace) -> float:
    print(
        f"{label}: {len(samples)} requests over {window:.1f} s at {args.rate:g}/s offered, at most {args.concurrency} "
        "in flight. Latency from the due time; 'sent' from when a slot was free; 'app' and SQL timed in the server; "
        f"err: not a 200, or no answer within {REQUEST_TIMEOUT_S:g} s of the due time."
    )
    print(
        f"  {'endpoint':<24} {'n':>5} {'err':>4} {'ok/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'sent p99':>8} {'app p50':>8} {'app p99':>8} {'SQL/req':>8} {'stmts':>6}"
    )
    for kind in (*KINDS, "all"):
        mine = [x for x in samples if kind in (x.kind, "all")]
        if not mine:
            continue
        ms = [1000 * x.latency for x in mine]
        sent = [1000 * x.service for x in mine if not math.isnan(x.service)]
        ok = sum(x.ok for x in mine)
        line = (
            f"  {kind:<24} {len(mine):>5} {len(mine) - ok:>4} {ok / window:>6.1f} "
            f"{percentile(ms, 50):>7.1f} {percentile(ms, 99):>7.1f} {max(ms):>7.1f} "
            f"{percentile(sent, 99) if sent else math.nan:>8.1f}"
        )
        s = stats["endpoints"].get(kind)
        if s and s["app_seconds"]:
            n = len(s["app_seconds"])  # the server counts the warm-up requests too
            app_ms = [1000 * t for t in s["app_seconds"]]
            line += (
                f" {percentile(app_ms, 50):>8.1f} {percentile(app_ms, 99):>8.1f} "
                f"{1000 * s['sql_seconds'] / n:>6.1f}ms {s['statements'] / n:>6.1f}"
            )
        print(line)
    served = sum(len(s["app_seconds"]) for s in stats["endpoints"].values())
    if served:
        cpu_ms = 1000 * stats["cpu_seconds"] / served
        print(
            f"  server CPU {cpu_ms:.1f} ms per request over {served} requests (warm-up included): one worker "
            f"sustains at most ~{1000 / cpu_ms:.0f} requests/s of this mix on one free core"
            + (" plus the database server's own CPU" if label == "postgres" else "")
        )
    for kind in KINDS:
        s = stats["endpoints"].get(kind)
        if not s or not args.top_sql:
            continue
        n = len(s["app_seconds"])
        top = sorted(s["by_statement"].items(), key=lambda kv: -kv[1][1])[: args.top_sql]
        for statement, (count, seconds) in top:
            short = re.sub(r"^SELECT .{40,}? FROM ", "SELECT ... FROM ", statement)  # the WHERE says more
            short = short if len(short) <= 140 else short[:137] + "..."
            print(f"    {kind:<24} {1000 * seconds / n:6.2f} ms/req x{count / n:.0f}  {short}")
    ms_all = [1000 * x.latency for x in samples]
    return percentile(ms_all, 99) if ms_all else math.nan


# ---- main -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--trials", type=int, default=100_000, help="trials in all (split over sweeps and cells)")
    parser.add_argument("--points-per-trial", type=int, default=10, help="curve points per started trial")
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--cells-per-sweep", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second offered, all endpoints")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per database")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--concurrency", type=int, default=32, help="most requests in flight")
    parser.add_argument("--top-sql", type=int, default=3, help="slowest statements to show per endpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="a database to CREATE DATABASE from")
    parser.add_argument(
        "--writes", type=float, default=2.0, help="trials a second the writer runs through the running sweep (0: none)"
    )
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)  # internal: the server subprocess
    parser.add_argument("--write", metavar="URL", help=argparse.SUPPRESS)  # internal: the writer subprocess
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.write:
        write(args.write, args.writes, args.points_per_trial)
        return
    if min(args.rate, args.seconds, args.concurrency, args.trials, args.sweeps, args.cells_per_sweep) <= 0:
        parser.error("--rate, --seconds, --concurrency, --trials, --sweeps and --cells-per-sweep must be positive")
    if args.points_per_trial < 0 or args.warmup < 0 or args.writes < 0:
        parser.error("--points-per-trial, --warmup and --writes must not be negative")
    per_cell = max(1, args.trials // (args.sweeps * args.cells_per_sweep))
    shape = Shape(args.sweeps, args.cells_per_sweep, per_cell, args.points_per_trial)
    p99: dict[str, tuple[float, float]] = {}  # database -> (p99 of the endpoints, p99 of the baseline), ms
    if args.db in ("sqlite", "both"):
        with sqlite_database() as url:
            p99["sqlite"] = bench_database("sqlite", url, shape, args)
    if args.db in ("postgres", "both"):
        with postgres_database(args.postgres_url) as pg_url:
            if pg_url is not None:
                p99["postgres"] = bench_database("postgres", pg_url, shape, args)
    verdict = ", ".join(
        f"{k} {v:.1f} ms ({'meets' if v < TARGET_P99_MS else 'misses'}; {v / b:.1f}x the {HEALTH} baseline's "
        f"{b:.1f} ms)"
        for k, (v, b) in p99.items()
    )
    verdict = verdict or "no database measured"
    print(f"p99 latency, all endpoints at {args.rate:g} req/s: {verdict}; target < {TARGET_P99_MS:g} ms")


if __name__ == "__main__":
    main()
