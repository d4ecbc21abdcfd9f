"""The REST client for outside workers of an `executor: external` sweep (httpx; imports no torch).

    from sweep_service.client import Client

    client = Client("http://127.0.0.1:8000", token="...")
    for trial in client.trials(sweep_id, worker="gpu-node-3"):
        loss = train(trial.config, seed=trial.seed)        # your own training code
        for step, value in curve: trial.report(step, value)
        trial.complete(loss)                                # or trial.fail("reason")

`trials` leases one trial at a time (POST /sweeps/{id}/suggestions), keeps its lease alive with a background
heartbeat while your code runs, waits while nothing is runnable (a coordinate-descent round still running on
other workers), and ends when the sweep is done. A trial whose lease was lost (the worker stalled past
SWEEP_TRIAL_LEASE_SECONDS and the trial was handed to another) has `lost` set; its writes raise LeaseLost.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

# Heartbeats at a third of the lease (as the dispatcher's, sweep_service/dispatcher.py): two may be lost in a row
# before the lease runs out.
HEARTBEAT_FRACTION = 1 / 3
# Waiting for a runnable trial: short at first, then at most this often.
MAX_POLL_SECONDS = 5.0
# How long a worker keeps retrying the service through network errors before giving up.
RETRY_SECONDS = 60.0


class ClientError(RuntimeError):
    """The service refused a request (the message is its `detail`)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {detail}")


class LeaseLost(ClientError):
    """HTTP 409: this worker no longer holds the trial (its lease expired and was handed on, or it is finished)."""


def default_worker() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        # NaN and inf are sent as JSON's common extension (Python's json writes them): a diverged loss is a result.
        content = json.dumps(body)
        r = self.http.post(path, content=content, headers={"Content-Type": "application/json", **(headers or {})})
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            kind = LeaseLost if r.status_code == 409 and path.startswith("/trials/") else ClientError
            raise kind(r.status_code, detail if isinstance(detail, str) else json.dumps(detail))
        return r.json()

    def suggest(self, sweep_id: int, worker: str, count: int = 1, key: str | None = None) -> dict[str, Any]:
        """One POST /sweeps/{id}/suggestions: {"trials": [...], "done": bool}. `key`: its Idempotency-Key."""
        headers = {"Idempotency-Key": key} if key else None
        return dict(self.post(f"/sweeps/{sweep_id}/suggestions", {"worker": worker, "count": count}, headers))

    def _suggest_retrying(self, sweep_id: int, worker: str) -> dict[str, Any]:
        """One ask, retried through network errors (a service restarting, a dropped connection) for up to
        RETRY_SECONDS. The same Idempotency-Key on every retry: an answer lost on the way is returned again rather
        than a second trial leased."""
        key = uuid.uuid4().hex
        deadline = time.monotonic() + RETRY_SECONDS
        wait = 0.5
        while True:
            try:
                return self.suggest(sweep_id, worker, 1, key=key)
            except httpx.TransportError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(wait)
                wait = min(wait * 2, MAX_POLL_SECONDS)

    def trials(
        self, sweep_id: int, worker: str | None = None, poll_seconds: float = 0.5, limit: int | None = None
    ) -> Generator[Trial, None, None]:
        """Leased trials until the sweep is done (or `limit` trials), each with a background heartbeat that
        stops when the trial is completed or failed, or when the loop moves on."""
        name = worker or default_worker()
        wait, served = poll_seconds, 0
        while limit is None or served < limit:
            answer = self._suggest_retrying(sweep_id, name)
            if answer["done"]:
                return
            if not answer["trials"]:
                time.sleep(wait)
                wait = min(wait * 2, MAX_POLL_SECONDS)
                continue
            wait = poll_seconds
            trial = Trial(self, name, answer["trials"][0])
            trial.start_heartbeat()
            try:
                yield trial
            finally:
                trial.stop_heartbeat()
            served += 1


@dataclass
class Trial:
    """One leased trial."""

    client: Client
    worker: str
    data: dict[str, Any]
    lost: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _beat: threading.Thread | None = None

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.data["config"])

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def cell(self) -> str:
        return str(self.data["cell"])

    def _lease_seconds(self) -> float:
        if isinstance(self.data.get("lease_seconds"), int | float):
            return float(self.data["lease_seconds"])
        until = datetime.fromisoformat(str(self.data["lease_expires_at"]).replace("Z", "+00:00"))
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        return max(0.05, (until - datetime.now(UTC)).total_seconds())

    def start_heartbeat(self) -> None:
        interval = max(0.05, self._lease_seconds() * HEARTBEAT_FRACTION)

        def beat() -> None:
            while not self._done.wait(interval):
                try:
                    self.client.post(f"/trials/{self.id}/heartbeat", {"worker": self.worker})
                except LeaseLost:
                    self.lost.set()
                    return
                except (httpx.HTTPError, ClientError):
                    continue  # a passing network error: the next beat may get through before the lease runs out

        self._beat = threading.Thread(target=beat, name=f"heartbeat-{self.id}", daemon=True)
        self._beat.start()

    def stop_heartbeat(self) -> None:
        self._done.set()

    def report(self, step: int, loss: float) -> bool:
        """Append a point to the curve; False when the divergence rule ended the trial (stop training)."""
        answer = self.client.post(
            f"/trials/{self.id}/metrics", {"worker": self.worker, "points": [{"step": step, "loss": loss}]}
        )
        if answer["stop"]:
            self.stop_heartbeat()
        return not answer["stop"]

    def complete(self, loss: float) -> dict[str, Any]:
        self.stop_heartbeat()
        return dict(self.client.post(f"/trials/{self.id}/complete", {"worker": self.worker, "final_loss": loss}))

    def fail(self, reason: str, status: str = "failed") -> dict[str, Any]:
        self.stop_heartbeat()
        body = {"worker": self.worker, "status": status, "reason": reason[-5000:]}
        return dict(self.client.post(f"/trials/{self.id}/complete", body))
