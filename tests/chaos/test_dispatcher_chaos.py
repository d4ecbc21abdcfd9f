"""A dispatcher on PostgreSQL under faults (issue 13): seeded random SIGINT/SIGTERM/SIGKILL, a SIGSTOP past its
lease while another dispatcher takes the sweep over, and PostgreSQL outages of 1-30 s through a TCP proxy.

Each ends with the sweep completed and equal to the uninterrupted run (every trial's result, each cell's best),
no finished trial run again, never more than max_concurrent trials running, and a truthful status on the way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import (
    MAX_CONCURRENT,
    Proxy,
    Watcher,
    cli,
    count,
    iterations,
    log_text,
    outcome,
    query,
    rng,
    session_processes,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
LEASE = 9.0  # seconds: the outage test's lease (see there)


def _status(url: str) -> tuple[str, str | None, int]:
    ((status, holder, epoch),) = query(url, "SELECT status, claimed_by, lease_epoch FROM sweeps WHERE id = 1")
    return str(status), holder, int(epoch)


def _stop(proc: subprocess.Popen[str], home: Path) -> None:
    """SIGTERM an idle dispatcher: it exits 143."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, log_text(home)


def _check(url: str, watcher: Watcher, reference: dict[str, Any], home: Path) -> None:
    watcher.poll()
    assert _status(url)[0] == "completed", log_text(home)
    assert outcome(url, 1) == reference, log_text(home)
    assert watcher.max_running <= MAX_CONCURRENT
    assert not watcher.changed, watcher.changed


def test_dispatcher_survives_random_signals(tmp_path: Path, pg_url: str, reference: dict[str, Any]) -> None:
    r = rng("dispatcher")
    n = iterations(1)
    submit(pg_url)
    watcher = Watcher(pg_url, 1)
    with watcher.watching():
        for i in range(n):
            if _status(pg_url)[0] == "completed":
                break
            sig = r.choice(SIGNALS) if n > 1 else signal.SIGINT  # the case
            home = tmp_path / f"d{i}"
            proc = cli(home, "dispatcher", "--poll", "0.5", db_url=pg_url)
            wait_for(lambda: count(pg_url, 1, "running") > 0, 600, "trials to run", proc)
            time.sleep(r.uniform(0, 4))
            if sig == signal.SIGINT:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
            code = proc.wait(timeout=300)
            if sig != signal.SIGKILL:
                assert code == 128 + sig, log_text(home)
                assert "Traceback" not in log_text(home)
                status, holder, _ = _status(pg_url)
                assert status in ("running", "completed") and holder is None, log_text(home)
                assert count(pg_url, 1, "running") == 0
            wait_for(lambda pid=proc.pid: not session_processes(pid), 60, "its Ray processes to exit")
        home = tmp_path / "last"
        proc = cli(home, "dispatcher", "--poll", "0.5", db_url=pg_url)
        wait_for(lambda: _status(pg_url)[0] == "completed", 900, "the sweep to complete", proc)
        _stop(proc, home)
    _check(pg_url, watcher, reference, home)


def test_a_dispatcher_paused_past_its_lease_writes_nothing_more(
    tmp_path: Path, pg_url: str, reference: dict[str, Any]
) -> None:
    submit(pg_url)
    lease = 4.0  # seconds (SWEEP_LEASE_SECONDS): short, so that the takeover comes soon
    watcher = Watcher(pg_url, 1)
    with watcher.watching():
        a = cli(tmp_path / "a", "dispatcher", "--poll", "0.5", db_url=pg_url, lease=lease)
        wait_for(lambda: count(pg_url, 1, "running") > 0, 600, "A's trials to run", a)
        os.kill(a.pid, signal.SIGSTOP)
        try:
            b = cli(tmp_path / "b", "dispatcher", "--poll", "0.5", db_url=pg_url, lease=lease)
            wait_for(lambda: _status(pg_url)[2] == 2, 600, "B to take the sweep over", b)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        # A stops its Tune run and writes nothing more: it says so, and the sweep ends as if A had never been.
        wait_for(lambda: "lease" in log_text(tmp_path / "a") and "lost" in log_text(tmp_path / "a"), 300, "A to stop")
        assert a.poll() is None  # the dispatcher itself goes on
        wait_for(lambda: _status(pg_url)[0] == "completed", 900, "B to complete the sweep", b)
        _stop(a, tmp_path / "a")
        _stop(b, tmp_path / "b")
    _check(pg_url, watcher, reference, tmp_path / "b")


def test_a_dispatcher_waits_out_database_outages(tmp_path: Path, pg_url: str, reference: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    r = rng("outage")
    n = iterations(2)
    # A lease of LEASE s beats every LEASE/3 s, so an outage longer than that always meets a heartbeat: the
    # dispatcher must notice it and say so. (With the default 60 s lease a short outage could fall between two
    # database accesses unseen, and whether it was noticed was chance: CI of 2026-12-03.)
    beat = LEASE / 3
    server = make_url(pg_url)
    proxy = Proxy((server.host or "127.0.0.1", server.port or 5432))
    via_proxy = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    submit(pg_url)
    watcher = Watcher(pg_url, 1)
    home = tmp_path / "d"
    cuts = 0
    try:
        with watcher.watching():
            proc = cli(home, "dispatcher", "--poll", "0.5", db_url=via_proxy, lease=LEASE)
            wait_for(lambda: count(pg_url, 1, "running") > 0, 600, "trials to run", proc)
            for _ in range(n):
                if _status(pg_url)[0] == "completed":
                    break
                time.sleep(r.uniform(0, 5))
                seconds = r.uniform(beat + 0.5, 30) if n > 2 else r.uniform(beat + 0.5, 8)
                proxy.cut(seconds)
                cuts += 1
                time.sleep(seconds)
                assert proc.poll() is None, log_text(home)  # the dispatcher never exits on an outage
            wait_for(lambda: _status(pg_url)[0] == "completed", 900, "the sweep to complete", proc)
            assert cuts == 0 or "database unavailable" in log_text(home), log_text(home)
            _stop(proc, home)
    finally:
        proxy.close()
    _check(pg_url, watcher, reference, home)
