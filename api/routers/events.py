"""Server-sent events of a sweep's progress.

The stream polls the database (about once a second) and sends a `progress` event (the SweepProgress JSON)
whenever anything in it changed: trial counts, a cell's best, the status. When the sweep has finished
(completed, failed or cancelled) it sends an `end` event and closes. A comment line keeps idle connections
alive through proxies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import DatabaseDep, Guarded, IdPath
from api.schemas import SweepProgress
from db import repository as repo
from db.session import Database

router = APIRouter(tags=["sweeps"], dependencies=Guarded)

POLL_SECONDS = 1.0  # default poll period; app.state.events_poll_seconds overrides it (tests use less)
KEEPALIVE_SECONDS = 15.0  # the SSE spec's suggestion for a keep-alive comment on an idle stream
FINISHED = ("completed", "failed", "cancelled")


def _snapshot(db: Database, sweep_id: int) -> SweepProgress | None:
    with db.session() as s:
        sweep = repo.get_sweep(s, sweep_id)
        return views.sweep_progress(s, sweep) if sweep is not None else None


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
        progress = await run_in_threadpool(_snapshot, db, sweep_id)


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
