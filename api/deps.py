"""Dependencies shared by the routers (the full-stack FastAPI template's deps.py): the database, the settings,
the bearer-token check, pagination and the filters' types.

The app factory (api.app.create_app) puts the Database, the Settings and the parsed token sets on `app.state`
once; nothing here reads the environment (STYLE.md rule 8).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from db.session import Database
from sweep_service.settings import Settings

# Largest id a path accepts: ids are 32-bit INTEGER columns (db/models.py), and a larger number would make the
# database driver fail (SQLite: OverflowError; PostgreSQL: integer out of range) instead of answering 404.
MAX_ID = 2**31 - 1
# Page sizes: a page of at most 500 rows keeps one response small; 50 by default.
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# Names in filters: printable, as long as the longest name column (cells.key is String(200)). Control
# characters are refused because PostgreSQL cannot bind a NUL in a string.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
NAME_MAX = 200


# The dependencies below are `async def` though they never await: they only read app state and headers, while FastAPI
# runs a sync dependency in its threadpool, one thread hop per dependency per request. The operations themselves stay
# sync: their database calls block.


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_database)]

_bearer = HTTPBearer(auto_error=False, description="SWEEP_API_TOKEN (read and write) or SWEEP_API_READ_TOKENS")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _matches(token: str, tokens: frozenset[str]) -> bool:
    # Compare against every token in constant time, so the time taken does not reveal a token's prefix.
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


async def authorize(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Bearer-token check when tokens are configured: 401 without a valid token, 403 for a read-only token on a
    write (any method but GET/HEAD/OPTIONS). Tokens are never logged or echoed back."""
    write_tokens, read_tokens = request.app.state.tokens
    if not write_tokens and not read_tokens:
        return
    token = credentials.credentials if credentials is not None else ""
    unauthorized = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="a valid `Authorization: Bearer <token>` header is required",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if not token:
        raise unauthorized
    if _matches(token, write_tokens):
        return
    if _matches(token, read_tokens):
        if request.method.upper() in READ_METHODS:
            return
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this token is read-only; writes need SWEEP_API_TOKEN")
    raise unauthorized


def _query_names(dependant: Any) -> set[str]:
    """Query parameter names an operation declares, its dependencies' included."""
    names = {str(getattr(p, "alias", None) or getattr(p, "name", "")) for p in getattr(dependant, "query_params", [])}
    for sub in getattr(dependant, "dependencies", []):
        names |= _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    """A query parameter the operation does not take is a 422 naming it, like an unknown field of the spec
    (extra="forbid"): a misspelt filter (`?stauts=queued`) must not silently return everything."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    allowed = _query_names(dependant)
    unknown = sorted(set(request.query_params.keys()) - allowed)
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["query", name],
                    "field": name,
                    "msg": f"unknown query parameter; valid: {valid}",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ],
        )


Authorized = [Depends(authorize)]
# What every resource router runs before its operation: the token check, then the unknown-parameter check.
Guarded = [Depends(authorize), Depends(reject_unknown_query)]
# Documented on every operation behind `authorize` (the answers depend on the configured tokens).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong bearer token (only when SWEEP_API_TOKEN or read tokens are set)"},
    403: {"description": "a read-only token on a write"},
}

IdPath = Annotated[int, PathParam(ge=1, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size, 1..{MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="rows to skip")]
NameFilter = Annotated[str | None, Query(min_length=1, max_length=NAME_MAX, pattern=NAME_PATTERN)]
ChinchillaFilter = Annotated[float | None, Query(gt=0, allow_inf_nan=False, description="data-to-model multiple")]


def unknown_name(field: str, name: str, valid: list[str]) -> HTTPException:
    """422 for a query value that names nothing in a registry (an optimizer, a scale), listing the valid names;
    the echoed value is cut at 100 characters so a huge query does not come back in full."""
    return HTTPException(
        422,
        detail=[
            {
                "loc": ["query", field],
                "field": field,
                "msg": f"unknown {field} {name[:100]!r}; valid: {', '.join(valid)}",
                "type": "value_error",
            }
        ],
    )


def json_response(model: BaseModel) -> Response:
    """`model` as JSON, serialized once by pydantic's Rust core. FastAPI sends a returned Response as is; a returned
    model it would first validate again against the operation's response_model (through a threadpool hop, for a
    sync operation) and only then serialize. The operation keeps `response_model` for its documented schema."""
    return Response(model.model_dump_json(), media_type="application/json")
