"""The local Ray we start dies with us, even when we are killed with SIGKILL or leave through os._exit.

Ray's own clean-up runs at a normal exit (ray.shutdown at exit); after SIGKILL its raylet and GCS follow their
parent, but the agents the raylet started (DashboardAgent, RuntimeEnvAgent) and idle workers outlived the
driver by 30 s and more (issue 13). So `start()` launches this module as a small separate process, in its own
session (a Ctrl+C to our terminal does not reach it): it watches our pid and remembers the Ray processes below
us (every process under us whose command line mentions ray, and everything under those). When we are gone it
sends them SIGTERM, then SIGKILL to what is left after GRACE_SECONDS. Linux only (/proc); elsewhere a no-op.

Two races are closed. `start()` waits (up to READY_SECONDS) until the watchdog has taken its first snapshot, so a
driver killed right after ray.init does not leave a watchdog that knows nothing (CI saw the agents survive a
kill 9 s into a run). And a Ray process started after the last snapshot is found at the end all the same: once
its parent died it is an orphan, adopted by the process that adopted us, in our driver's session, started after
the driver, with ray in its command line.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

POLL_SECONDS = 0.5  # how often it looks whether we are alive
SNAPSHOT_SECONDS = 2.0  # how often it re-reads the process tree under us (Ray starts workers as it goes)
GRACE_SECONDS = 3.0  # between SIGTERM and SIGKILL: Ray's processes exit on SIGTERM within a second here
READY_SECONDS = 10.0  # how long start() waits for the first snapshot (a loaded 2-core CI machine: ~1-3 s)

Proc = tuple[int, int]  # (pid, start time in clock ticks): a pid reused by a new process is not the same one


def _fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on, None when the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if ")" not in raw:
        return None  # read while the process went away
    return raw[raw.rindex(")") + 2 :].split()  # the name (field 2) may hold spaces and parentheses


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of `pid` from /proc, None when it does not exist."""
    fields = _fields(pid)
    return None if fields is None else (fields[0], int(fields[1]), int(fields[19]))


def _session(pid: int) -> int | None:
    fields = _fields(pid)
    return None if fields is None else int(fields[3])  # field 6 of proc(5): the session id


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                tree.setdefault(st[1], []).append(int(entry.name))
    return tree


def _below(roots: list[int], tree: dict[int, list[int]]) -> list[int]:
    out, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(tree.get(pid, []))
    return out


def ray_processes(parent: int) -> set[Proc]:
    """The Ray processes under `parent`: its descendants whose command line mentions ray, and theirs."""
    tree = _children()
    me = os.getpid()
    ray_roots = [p for p in _below(tree.get(parent, []), tree) if p != me and "ray" in _cmdline(p)]
    found = set()
    for pid in _below(ray_roots, tree):
        st = _stat(pid)
        if st is not None and pid != me:
            found.add((pid, st[2]))
    return found


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie is dead, waiting to be reaped


def _same(proc: Proc) -> bool:
    st = _stat(proc[0])
    return st is not None and st[2] == proc[1] and st[0] not in ("Z", "X")


def reap(procs: set[Proc]) -> None:
    """SIGTERM the processes (and what they started since), then SIGKILL the survivors."""
    tree = _children()
    targets = set(procs)
    for pid in _below([p for p, _ in procs if _same((p, _))], tree):
        st = _stat(pid)
        if st is not None:
            targets.add((pid, st[2]))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in targets:
            if _same(proc):
                with contextlib.suppress(OSError):
                    os.kill(proc[0], sig)
        deadline = time.monotonic() + GRACE_SECONDS
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_same(p) for p in targets):
            time.sleep(0.1)


def orphans(session: int, since: int) -> set[Proc]:
    """Ray processes adopted by our own (new) parent: in `session`, started at or after `since`, not us."""
    me, adopter = os.getpid(), os.getppid()
    found = set()
    for pid in _children().get(adopter, []):
        st = _stat(pid)
        if pid != me and st is not None and st[2] >= since and _session(pid) == session and "ray" in _cmdline(pid):
            found.add((pid, st[2]))
    return found


def watch(parent: int, ready: Callable[[], None] = lambda: None) -> None:
    parent_stat, session = _stat(parent), _session(parent)
    known = ray_processes(parent)
    ready()
    last = time.monotonic()
    while alive(parent):
        if time.monotonic() - last >= SNAPSHOT_SECONDS:
            known = {p for p in known if _same(p)} | ray_processes(parent)
            last = time.monotonic()
        time.sleep(POLL_SECONDS)
    if parent_stat is not None and session is not None:
        known |= orphans(session, parent_stat[2])
    reap(known)


def start() -> subprocess.Popen[bytes] | None:
    """Watch this process: its local Ray is taken down when it dies. None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep_service.ray_watchdog", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert proc.stdout is not None
    # Its first snapshot is taken before we go on (it writes one line, then closes the pipe); a watchdog that
    # does not answer in time still watches, with what it sees from its first snapshot on.
    if select.select([proc.stdout], [], [], READY_SECONDS)[0]:
        proc.stdout.readline()
    proc.stdout.close()
    return proc


def _ready() -> None:
    with contextlib.suppress(OSError):
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdout.close()  # nothing more is written; the driver may close its end at any time
    with contextlib.suppress(OSError):
        os.close(1)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C is for the driver, which stops resumably
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    watch(int(sys.argv[1]), _ready)
