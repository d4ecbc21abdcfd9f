"""GET /sweeps/{id}/events: server-sent progress events, read with httpx streaming."""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable
from typing import Any

from api_builders import T
from fastapi.testclient import TestClient

from db import repository as repo
from db.session import Database


def read_events(
    client: TestClient, url: str, after_each: list[Callable[[], None]] | None = None, timeout: float = 20.0
) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs until the server closes the stream; `after_each[i]` runs after event i."""
    pending = list(after_each or [])
    events: list[tuple[str, dict[str, Any]]] = []
    name = "message"
    deadline = time.monotonic() + timeout
    with client.stream("GET", url) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert time.monotonic() < deadline, "the stream did not end"
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if pending:
                    pending.pop(0)()
    return events


def test_a_finished_sweep_streams_its_progress_once_then_ends(client: TestClient, store: Any) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, loss=3.1), T({"lr": 2e-3}, loss=3.0)]}, status="completed")
    events = read_events(client, f"/sweeps/{stored.sweep_id}/events")
    assert [name for name, _ in events] == ["progress", "end"]
    progress = events[0][1]
    assert progress["id"] == stored.sweep_id and progress["status"] == "completed"
    assert progress["trials"]["completed"] == 2 and progress["best"]["config"] == {"lr": 2e-3}
    assert "spec" not in progress  # the progress view, not the whole sweep
    assert events[1][1] == {"sweep_id": stored.sweep_id, "status": "completed"}


def test_a_running_sweep_streams_each_change_until_it_finishes(client: TestClient, store: Any, db: Database) -> None:
    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="running"), T({"lr": 2e-3}, status="running")]})
    first, second = stored.trials

    def finish(trial_id: int, loss: float) -> None:
        with db.session() as s:
            repo.transition_trial(s, trial_id, ["running"], "completed", final_loss=loss)

    def complete_sweep() -> None:
        with db.session() as s:
            repo.set_sweep_status(s, stored.sweep_id, ["running"], "completed")

    # The engine's writes, one after each event the client has seen (so no state is skipped, however slow).
    changes = [lambda: finish(first, 3.2), lambda: finish(second, 3.1), complete_sweep]
    events = read_events(client, f"/sweeps/{stored.sweep_id}/events", after_each=changes)
    names = [name for name, _ in events]
    assert names[-1] == "end" and set(names[:-1]) == {"progress"}
    completed = [data["trials"]["completed"] for name, data in events if name == "progress"]
    # One event per change: 2 running -> 1 completed -> 2 completed -> sweep completed; no repeats.
    assert completed == [0, 1, 2, 2]
    assert [data["status"] for _, data in events[:-1]] == ["running", "running", "running", "completed"]
    assert events[-2][1]["cells"][0]["trials"] == {**events[0][1]["cells"][0]["trials"], "running": 0, "completed": 2}


def test_watchers_of_one_sweep_share_a_recent_snapshot(store: Any, db: Database, monkeypatch: Any) -> None:
    from api.routers import events

    stored = store({"adamw/tiny-130k/1": [T({"lr": 1e-3}, status="running"), T({"lr": 2e-3}, status="running")]})
    monkeypatch.setattr(events, "_shared", weakref.WeakKeyDictionary())  # nothing left from other tests
    taken: list[int] = []
    real = events._snapshot

    def counting(d: Database, sweep_id: int) -> Any:
        taken.append(sweep_id)
        return real(d, sweep_id)

    monkeypatch.setattr(events, "_snapshot", counting)
    first = events.shared_snapshot(db, stored.sweep_id, max_age=60.0)
    assert first is not None and first.trials.running == 2
    # Four more watchers within the age limit: the same snapshot, no query.
    assert all(events.shared_snapshot(db, stored.sweep_id, max_age=60.0) is first for _ in range(4))
    assert taken == [stored.sweep_id]
    with db.session() as s:
        repo.transition_trial(s, stored.trials[0], ["running"], "completed", final_loss=3.0)
    # Past the age limit a watcher queries again and sees the change.
    fresh = events.shared_snapshot(db, stored.sweep_id, max_age=0.0)
    assert fresh is not None and (fresh.trials.running, fresh.trials.completed) == (1, 1)
    assert taken == [stored.sweep_id] * 2
    assert events.shared_snapshot(db, stored.sweep_id, max_age=60.0) is fresh  # the newest one is shared
