"""Operations: the health check (no auth, for load balancers) and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse

from api.deps import AUTH_RESPONSES, DatabaseDep, Guarded
from api.middleware import RequestMetrics
from api.schemas import Health
from sweep_service.service import ops

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)

# The Prometheus text exposition format, version 0.0.4.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"description": "the database does not answer"}},
)
def healthz(db: DatabaseDep) -> Health | JSONResponse:
    """Liveness and database reachability; never needs a token."""
    error = ops.database_error(db)
    if error is not None:
        log.warning("health check: database unavailable (%s)", error)
        return JSONResponse({"status": "unavailable", "database": "unavailable"}, status.HTTP_503_SERVICE_UNAVAILABLE)
    return Health(status="ok", database="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=Guarded,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **AUTH_RESPONSES},
)
def metrics(request: Request, db: DatabaseDep) -> Response:
    """Trials by status, queue depth (queued sweeps), sweeps by status and API request latency by route."""
    counts = ops.counts(db)
    lines = ["# HELP sweep_trials Trials by status over every sweep.", "# TYPE sweep_trials gauge"]
    lines += [f'sweep_trials{{status="{k}"}} {n}' for k, n in counts.trials.items()]
    lines += ["# HELP sweep_sweeps Sweeps by status.", "# TYPE sweep_sweeps gauge"]
    lines += [f'sweep_sweeps{{status="{k}"}} {n}' for k, n in counts.sweeps.items()]
    lines += [
        "# HELP sweep_queue_depth Sweeps queued for a dispatcher.",
        "# TYPE sweep_queue_depth gauge",
        f"sweep_queue_depth {counts.queued}",
    ]
    request_metrics: RequestMetrics = request.app.state.request_metrics
    lines += request_metrics.render()
    return PlainTextResponse("\n".join(lines) + "\n", media_type=PROMETHEUS_CONTENT_TYPE)
