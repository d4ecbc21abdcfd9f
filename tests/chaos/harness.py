"""What the chaos tests share: a tiny real sweep, the CLI as a subprocess, a watcher of the database that checks
the invariants all along, and a TCP proxy that can cut the way to PostgreSQL.

The sweep: tiny-130k at 0.05x Chinchilla (32 steps, seconds a trial) on the built-in corpus, a 2x2 grid,
max_concurrent 2: a real Ray Tune run of real training, small enough to be killed and resumed many times.
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

SPEC = """\
name: chaos
optimizers: [adamw]
scales: [tiny-130k]
chinchilla: [0.05]
search:
  adamw:
    tune: [lr, beta2]
    grid: {lr: [3e-3, 1.2e-2], beta2: [0.95, 0.98]}
    baseline: {lr: 3e-3, beta2: 0.95}
    fixed: {warmup: 4}
max_concurrent: 2
eval_every: 8
"""
MAX_CONCURRENT = 2
ROOT = Path(__file__).resolve().parents[2]


def iterations(default: int) -> int:
    """How many random faults a test injects: SWEEP_CHAOS_ITERATIONS, or a few in CI."""
    return int(os.environ.get("SWEEP_CHAOS_ITERATIONS", default))


def rng(name: str) -> random.Random:
    """Seeded: SWEEP_CHAOS_SEED (default 13), so that a failure replays."""
    return random.Random(f"{os.environ.get('SWEEP_CHAOS_SEED', '13')}/{name}")


def cli(home: Path, *args: str, db_url: str | None = None, lease: float | None = None) -> subprocess.Popen[str]:
    """`sweep-service ARGS` in its own session (its Ray with it), output to home/log-N.txt."""
    env = {**os.environ, "SWEEP_HOME": str(home), "SWEEP_RAY_NUM_CPUS": "2", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    env.pop("DATABASE_URL", None)
    if db_url:
        env["DATABASE_URL"] = db_url
    if lease is not None:
        env["SWEEP_LEASE_SECONDS"] = str(lease)
    home.mkdir(parents=True, exist_ok=True)
    n = len(list(home.glob("log-*.txt")))
    log = (home / f"log-{n}.txt").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "sweep_service.cli", *args],
        env=env,
        cwd=ROOT,
        text=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def log_text(home: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(home.glob("log-*.txt")))


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'sweep-service.db'}"


def query(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def outcome(url: str, sweep_id: int) -> dict[str, Any]:
    """What an uninterrupted and an interrupted run must agree on: every trial's result and each cell's best."""
    trials = query(
        url,
        "SELECT config_key, seed, status, final_loss FROM sweep_trials WHERE sweep_id = :s ORDER BY config_key, seed",
        s=sweep_id,
    )
    cells = query(
        url, "SELECT key, status, best_loss, best_config FROM cells WHERE sweep_id = :s ORDER BY key", s=sweep_id
    )
    return {"trials": trials, "cells": [(k, st, loss, _canonical(cfg)) for k, st, loss, cfg in cells]}


def _canonical(value: Any) -> str:
    """A JSON column as SQLite (text) and PostgreSQL (decoded) return it, in one form."""
    return json.dumps(json.loads(value) if isinstance(value, str) else value, sort_keys=True)


@dataclass
class Watcher:
    """Polls the database while faults happen: the most trials ever `running` at once, and every finished trial's
    result as first seen (a finished trial must never change: it was not run again)."""

    url: str
    sweep_id: int
    max_running: int = 0
    finished: dict[tuple[str, int], tuple[str, float | None, int]] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        rows = query(
            self.url,
            "SELECT config_key, seed, status, final_loss, attempts FROM sweep_trials WHERE sweep_id = :s",
            s=self.sweep_id,
        )
        self.max_running = max(self.max_running, sum(1 for r in rows if r[2] == "running"))
        for key, seed, status, loss, attempts in rows:
            if status in ("completed", "diverged", "failed"):
                seen = self.finished.setdefault((key, seed), (status, loss, attempts))
                if seen != (status, loss, attempts):
                    self.changed.append(f"{key} seed {seed}: {seen} -> {(status, loss, attempts)}")

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            try:
                self.poll()
            except DBAPIError:
                continue  # the database is cut off on purpose, or being created

    @contextmanager
    def watching(self) -> Iterator[Watcher]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)


def count(url: str, sweep_id: int, status: str) -> int:
    try:
        return int(
            query(url, "SELECT COUNT(*) FROM sweep_trials WHERE sweep_id = :s AND status = :t", s=sweep_id, t=status)[
                0
            ][0]
        )
    except DBAPIError:
        return 0


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) while waiting for {what}")
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def session_processes(sid: int) -> list[str]:
    """Live processes of session `sid` (a CLI started with start_new_session leads its own): 'pid cmdline'."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            if fields[0] in ("Z", "X") or int(fields[3]) != sid:
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        out.append(f"{entry.name} {cmd[:120]}")
    return out


class Proxy:
    """A TCP proxy to PostgreSQL that the test controls: `cut(seconds)` drops every connection and refuses new
    ones for that long (a database outage as its clients see it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.down_until = 0.0
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                with suppress(OSError):
                    s.close()

    def cut(self, seconds: float) -> None:
        """Drop every open connection now and refuse new ones for `seconds`."""
        self.down_until = time.monotonic() + seconds
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.server.close()
        self.cut(0)


def submit(url: str) -> int:
    """Queue the chaos sweep as POST /sweeps does: a `queued` row a dispatcher claims."""
    import yaml

    from db import repository as repo
    from db.session import Database

    db = Database(url)
    try:
        with db.session() as s:
            return repo.create_sweep(s, "chaos", yaml.safe_load(SPEC)).id
    finally:
        db.dispose()
