"""The FastAPI app factory: `create_app()` is what `sweep-service serve` runs (under uvicorn).

The app reads its settings once (sweep_service.settings), applies the database migrations, and keeps one
Database for its lifetime. The OpenAPI schema documents every operation; `POST /sweeps` takes the sweep spec
itself, documented from sweep_service.spec.SweepSpec. When API tokens are set, everything but `/healthz`
needs a bearer token, the schema included; the docs page (api/docs.py) and the dashboard hold no data and ask for
the token. Errors are RFC 9457 problems (api/problems.py); HEAD, OPTIONS and Allow are api/methods.py's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from api import docs, problems
from api.deps import AUTH_RESPONSES, Authorized
from api.methods import MethodsMiddleware
from api.middleware import CLIENT_CLOSED, BodyLimitMiddleware, BodyTimeoutMiddleware, MetricsMiddleware, RequestMetrics
from api.routers import analysis, best, catalog, dashboard, events, exports, external, importance, ops, sweeps, trials
from db.migrate import upgrade
from db.session import Database
from sweep_service.settings import Settings, get_settings
from sweep_service.spec import SweepSpec

log = logging.getLogger(__name__)

DESCRIPTION = (
    "Fair optimizer benchmarking for language-model pretraining: submit sweeps (the protocol of 'Fantastic "
    "Pretraining Optimizers and Where to Find Them'), follow their progress, and ask for the best "
    "hyperparameters per optimizer and scale."
)


def _version() -> str:
    try:
        return metadata.version("sweep-service")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the sweep spec's, which `POST /sweeps` references (it parses the body itself)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        spec = SweepSpec.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(spec.pop("$defs", {}))
        components["SweepSpec"] = spec
        _name_enums(components)
        problems.document(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _name_enums(components: dict[str, Any]) -> None:
    """Document the valid optimizer and scale names (the registries') where the spec takes them, and that a spec
    needs cells; the spec's validation enforces both, so the schema only says what is checked anyway."""
    from sweep_service.spec import MAX_MULTIPLE, MIN_MULTIPLE
    from workers.model import SCALES
    from workers.optimizers import REGISTRY

    optimizer = {"type": "string", "enum": list(REGISTRY)}
    # No enum: an external sweep names its own scales in `custom_scales` (the catalog's are the examples).
    scale = {
        "type": "string",
        "examples": list(SCALES),
        "description": "a catalog scale (GET /scales) or, with executor: external, a key of custom_scales",
    }
    spec = components["SweepSpec"]["properties"]
    spec["optimizers"]["items"] = optimizer
    spec["scales"]["items"] = scale
    spec["search"]["propertyNames"] = optimizer
    multiple = spec["chinchilla"]["items"]  # SweepSpec._positive: finite, in [MIN_MULTIPLE, MAX_MULTIPLE]
    multiple.pop("exclusiveMinimum", None)
    multiple.update(minimum=MIN_MULTIPLE, maximum=MAX_MULTIPLE)
    # SweepSpec._has_cells: optimizers and scales, or a list of cells.
    components["SweepSpec"]["anyOf"] = [
        {
            "required": ["optimizers", "scales"],
            "properties": {"optimizers": {"minItems": 1}, "scales": {"minItems": 1}},
        },
        {"required": ["cells"], "properties": {"cells": {"minItems": 1}}},
    ]
    cell = components["CellSpec"]["properties"]
    cell["optimizer"] = {**optimizer, "title": "Optimizer"}
    cell["scale"] = {**scale, "title": "Scale"}


def create_app(database_url: str | None = None, settings: Settings | None = None, local_ray: bool = False) -> FastAPI:
    """The REST API on `database_url` (default: the settings' DATABASE_URL, else the SQLite file under
    SWEEP_HOME), with the migrations applied. `local_ray`: sweeps run on a Ray this process starts (`serve` with
    its dispatcher and no RAY_ADDRESS), so POST /sweeps refuses resources this machine lacks."""
    settings = settings if settings is not None else get_settings()
    url = database_url or settings.db_url()
    upgrade(url)
    db = Database(url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        db.dispose()

    app = FastAPI(
        title="sweep-service",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves it from packaged assets
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.tokens = settings.tokens()
    app.state.local_ray = local_ray
    app.state.request_metrics = RequestMetrics()
    app.state.events_poll_seconds = events.POLL_SECONDS

    for module in (sweeps, trials, exports, events, best, catalog, external):
        app.include_router(module.router, responses=AUTH_RESPONSES)
    app.include_router(analysis.router, responses=AUTH_RESPONSES)
    app.include_router(importance.router, responses=AUTH_RESPONSES)
    app.include_router(ops.router)
    app.include_router(dashboard.router)  # the page and its assets: no data, no token

    @app.get("/openapi.json", include_in_schema=False, dependencies=Authorized)
    def openapi_json() -> JSONResponse:
        return JSONResponse(_openapi(app))

    # The docs page and Swagger UI's packaged files hold no data, so they load without a token; the page asks
    # for one when the schema needs it (api/docs.py).
    app.include_router(docs.router)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(ClientDisconnect)
    async def client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
        # The client went away mid-body: nothing to answer and not our error. Logged and counted as nginx's 499.
        log.info("client closed the connection during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED)

    problems.install(app)  # every error as RFC 9457 problem+json

    # The last added middleware runs first: metrics see every request, 413s included; CORS answers preflights
    # before the methods middleware answers OPTIONS.
    app.add_middleware(MethodsMiddleware, routes=app.router.routes)
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.body_timeout_seconds)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    origins = settings.cors_origin_list()
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"], expose_headers=["Location"]
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.request_metrics)
    return app
