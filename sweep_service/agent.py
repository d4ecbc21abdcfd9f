"""`sweep-service agent SWEEP_ID -- CMD ARGS...`: run any training command on an external sweep's trials.

Like `wandb agent`: for each trial the service suggests, the agent runs CMD ARGS with the trial's config

- as JSON in the environment variable SWEEP_TRIAL_CONFIG, and
- as `--key=value` arguments appended to ARGS,

with SWEEP_TRIAL_ID, SWEEP_TRIAL_SEED, SWEEP_TRIAL_CELL, SWEEP_TRIAL_OPTIMIZER, SWEEP_TRIAL_SCALE and
SWEEP_TRIAL_CHINCHILLA set as well. While the command runs the agent heartbeats the trial's lease. Each line
`{"step": S, "loss": L}` on the command's stdout is a point of its curve; the last `{"final_loss": X}` line is
its result. A non-zero exit is a failed trial whose reason is the tail of its stderr; an exit without a
`final_loss` line is failed too. A point that breaks the paper's divergence rule ends the trial as diverged
and the command is stopped, as is a command whose lease was lost (handed to another worker). Other stdout
lines are passed through. `--count N` stops after N trials (over all workers); `--workers W` runs W commands
at once, each under its own worker name.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

# Lines of the command's stderr kept for a failed trial's reason (the last ones say why it stopped).
STDERR_TAIL_LINES = 20
REASON_CHARS = 2000


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help="the service (default: SWEEP_SERVICE_URL or http://127.0.0.1:8000)")
    p.add_argument("--token", default=None, help="a write token (default: the first of SWEEP_API_TOKEN)")
    p.add_argument("--count", type=int, default=None, help="stop after this many trials (default: until done)")
    p.add_argument("--workers", type=int, default=1, help="commands run at once (default 1)")
    p.add_argument("--worker", default=None, help="worker name prefix (default: host:pid)")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run CMD once per suggested trial of an external sweep (config in SWEEP_TRIAL_CONFIG and --key=value)",
        usage="sweep-service agent [OPTIONS] SWEEP_ID [OPTIONS] -- CMD ARGS...",
    )
    _options(p)
    p.add_argument("sweep_id", type=int)
    # Everything after SWEEP_ID: options, then `--` and the command (split in cmd_agent: argparse's subparsers
    # do not pass a `--` through).
    p.add_argument("rest", nargs=argparse.REMAINDER, help="[OPTIONS] -- CMD ARGS...: the training command")
    p.set_defaults(func=cmd_agent)


def _split(args: argparse.Namespace) -> tuple[argparse.Namespace, list[str]]:
    """Options given after SWEEP_ID, and the command after `--`."""
    rest = list(args.rest)
    if "--" not in rest:
        return args, rest  # argparse took the `--` itself (it came right after SWEEP_ID)
    cut = rest.index("--")
    late = argparse.ArgumentParser(prog="sweep-service agent", add_help=False, exit_on_error=False)
    _options(late)
    try:
        parsed = late.parse_args(rest[:cut], namespace=argparse.Namespace(**vars(args)))
    except argparse.ArgumentError as exc:
        raise UsageError(str(exc)) from None
    return parsed, rest[cut + 1 :]


class _Budget:
    """Trials left to start, over all workers; None: no limit."""

    def __init__(self, count: int | None) -> None:
        self.left = count
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def _arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the command's own session: its children go too


def run_trial(trial: Any, command: Sequence[str], say: Any) -> str:
    """Run the command on one leased trial and report it; returns what became of it."""
    from sweep_service.client import LeaseLost

    config = trial.config
    env = {
        **os.environ,
        "SWEEP_TRIAL_CONFIG": json.dumps(config),
        "SWEEP_TRIAL_ID": str(trial.id),
        "SWEEP_TRIAL_SEED": str(trial.seed),
        "SWEEP_TRIAL_CELL": trial.cell,
        "SWEEP_TRIAL_OPTIMIZER": str(trial.data.get("optimizer", "")),
        "SWEEP_TRIAL_SCALE": str(trial.data.get("scale", "")),
        "SWEEP_TRIAL_CHINCHILLA": str(trial.data.get("chinchilla", "")),
    }
    argv = [*command, *(f"--{k}={_arg(v)}" for k, v in config.items())]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            print(line, end="", file=sys.stderr, flush=True)

    def watch_lease() -> None:
        while proc.poll() is None:
            if trial.lost.wait(0.2):
                _kill(proc)
                return

    err = threading.Thread(target=read_stderr, daemon=True)
    err.start()
    threading.Thread(target=watch_lease, daemon=True).start()
    final: float | None = None
    stopped = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            record = _json_line(line)
            if record is not None and "step" in record and "loss" in record:
                if not stopped and not trial.report(int(record["step"]), float(record["loss"])):
                    stopped = True  # the divergence rule ended it: stop the command
                    _kill(proc)
            elif record is not None and "final_loss" in record:
                final = float(record["final_loss"])
            else:
                say(f"[trial {trial.id}] {line.rstrip()}")
        rc = proc.wait()
        err.join(timeout=5)
        if stopped:
            return "diverged"
        if trial.lost.is_set():
            return "lost (lease handed to another worker)"
        if rc != 0:
            reason = f"exit code {rc}: " + "\n".join(tail)
            trial.fail(reason[-REASON_CHARS:])
            return f"failed (exit code {rc})"
        if final is None:
            trial.fail('the command printed no {"final_loss": ...} line')
            return "failed (no final_loss line)"
        outcome = trial.complete(final)
        loss = outcome.get("final_loss")
        return f"{outcome['status']} {loss:.4f}" if isinstance(loss, float) else str(outcome["status"])
    except LeaseLost:
        _kill(proc)
        return "lost (lease handed to another worker)"
    finally:
        trial.stop_heartbeat()
        if proc.poll() is None:
            _kill(proc)
            proc.wait()


def _json_line(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _short(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


def agent(
    url: str,
    token: str | None,
    sweep_id: int,
    command: Sequence[str],
    count: int | None = None,
    workers: int = 1,
    worker: str | None = None,
    say: Any = print,
) -> int:
    """Run the agent until the sweep is done or `count` trials have run; returns how many ran."""
    from sweep_service.client import Client

    budget = _Budget(count)
    prefix = worker or f"{socket.gethostname()}:{os.getpid()}"
    ran = [0] * workers
    lock = threading.Lock()

    def say_locked(line: str) -> None:
        with lock:
            say(line)

    def loop(i: int) -> None:
        name = prefix if workers == 1 else f"{prefix}/{i}"
        with Client(url, token) as client:
            trials = client.trials(sweep_id, worker=name)
            while budget.take():
                trial = next(trials, None)
                if trial is None:
                    return
                say_locked(f"trial {trial.id} {trial.cell} seed {trial.seed}: {_short(trial.config)}")
                try:
                    what = run_trial(trial, command, say_locked)
                finally:
                    trial.stop_heartbeat()
                ran[i] += 1
                say_locked(f"trial {trial.id}: {what}")
            trials.close()

    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            loop(i)
        except BaseException as exc:  # re-raised in the caller's thread: one clear line, not a thread traceback
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), name=f"agent-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(ran)


class UsageError(ValueError):
    """One clear line from the CLI (sweep_service.cli.main prints a ValueError as `sweep-service: error: ...`)."""


def cmd_agent(args: argparse.Namespace) -> int:
    import httpx

    from sweep_service.client import ClientError
    from sweep_service.settings import get_settings

    args, command = _split(args)
    if not command:
        raise UsageError("give the training command after `--`, e.g. sweep-service agent 1 -- python train.py")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.count is not None and args.count < 1:
        raise UsageError(f"--count must be at least 1, got {args.count}")
    settings = get_settings()
    url = args.url or settings.service_url
    write_tokens, _ = settings.tokens()
    token = args.token or next(iter(sorted(write_tokens)), None)
    try:
        ran = agent(url, token, args.sweep_id, command, args.count, args.workers, args.worker)
    except ClientError as exc:
        raise UsageError(f"sweep {args.sweep_id}: {exc}") from None
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {url}: {exc}") from None
    except OSError as exc:  # the command cannot be started (not found, not executable)
        raise UsageError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from None
    print(f"agent: {ran} trial(s) run")
    return 0
