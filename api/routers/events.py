"""Server-sent events of a sweep's progress.

The stream polls the database (about once a second) and sends a `progress` event (the SweepProgress JSON)
whenever anything in it changed: trial counts, a cell's best, the status. When the sweep has finished
(completed, failed or cancelled) it sends an `end` event and closes. A comment line keeps idle connections
alive through proxies.

The streams watching one sweep share their snapshots: a snapshot taken less than half a poll period ago is
reused, so a sweep watched by many clients costs about two progress queries per period, not one per client.
A change is then seen at most half a period later than it would have been, and never missed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import DatabaseDep, Guarded, IdPath
from api.schemas import SweepProgress
from db.session import Database
from sweep_service.service import NotFound, sweeps

router = APIRouter(tags=["sweeps"], dependencies=Guarded)

POLL_SECONDS = 1.0  # default poll period; app.state.events_poll_seconds overrides it (tests use less)
KEEPALIVE_SECONDS = 15.0  # the SSE spec's suggestion for a keep-alive comment on an idle stream
FINISHED = sweeps.FINISHED_SWEEP_STATUSES


def _snapshot(db: Database, sweep_id: int) -> SweepProgress | None:
    """The sweep's progress as the stream sends it; None once the sweep is gone."""
    try:
        return views.sweep_progress(sweeps.progress(db, sweep_id))
    except NotFound:
        return None


# Per database, per sweep: (when the snapshot's query started, the snapshot). Entries older than a minute are
# dropped whenever a snapshot is stored, so the table holds only the sweeps being watched.
_shared: weakref.WeakKeyDictionary[Database, dict[int, tuple[float, SweepProgress | None]]] = (
    weakref.WeakKeyDictionary()
)
_shared_lock = threading.Lock()
SHARED_KEEP_SECONDS = 60.0


def shared_snapshot(db: Database, sweep_id: int, max_age: float) -> SweepProgress | None:
    """_snapshot, or the one another stream took of this sweep less than `max_age` seconds ago."""
    with _shared_lock:
        held = _shared.get(db, {}).get(sweep_id)
    if held is not None and time.monotonic() - held[0] < max_age:
        return held[1]
    started = time.monotonic()  # the snapshot shows the database as of about now, not as of when it is stored
    progress = _snapshot(db, sweep_id)
    with _shared_lock:
        table = _shared.setdefault(db, {})
        held = table.get(sweep_id)
        if held is None or held[0] < started:
            table[sweep_id] = (started, progress)
        for stale in [k for k, (at, _) in table.items() if started - at > SHARED_KEEP_SECONDS]:
            del table[stale]
    return progress


def _event(name: str, data: str, event_id: int) -> bytes:
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n".encode()


async def _stream(db: Database, sweep_id: int, first: SweepProgress, poll: float) -> AsyncIterator[bytes]:
    seq = 0
    last = ""
    quiet_since = time.monotonic()
    progress: SweepProgress | None = first
    while True:
        if progress is None:  # deleted while watched
            yield _event("end", json.dumps({"sweep_id": sweep_id, "status": None}), seq + 1)
            return
        text = progress.model_dump_json()
        if text != last:
            seq += 1
            last = text
            quiet_since = time.monotonic()
            yield _event("progress", text, seq)
        if progress.status in FINISHED:
            yield _event("end", json.dumps({"sweep_id": sweep_id, "status": progress.status}), seq + 1)
            return
        if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield b": keep-alive\n\n"
        await asyncio.sleep(poll)
        progress = await run_in_threadpool(shared_snapshot, db, sweep_id, poll / 2)


@router.get(
    "/sweeps/{sweep_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"description": "`progress` events, then one `end` event", "content": {"text/event-stream": {}}},
        404: {"description": "no such sweep"},
    },
)
async def sweep_events(sweep_id: IdPath, db: DatabaseDep, request: Request) -> StreamingResponse:
    """Progress of a sweep as server-sent events, until it finishes."""
    first = await run_in_threadpool(_snapshot, db, sweep_id)
    if first is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no sweep {sweep_id}")
    poll = float(getattr(request.app.state, "events_poll_seconds", POLL_SECONDS))
    return StreamingResponse(
        _stream(db, sweep_id, first, poll),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
