"""Every error as RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`, `detail` (a
string), and for a validation error an `errors` list of {field, message} (each also keeps pydantic's `loc` and
`type`, so a client can point at the exact place).

`type` is "about:blank" (RFC 9457 section 4.2.1: the problem is only what the status code says), so `title` is
the status code's reason phrase. The handlers map the service's errors (sweep_service.service) to 404, 409 and
422, FastAPI's and the routers' HTTPExceptions and validation errors to their status, and anything else to a
500 that shows no internals (the traceback goes to the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sweep_service import service

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
# Where a parameter comes from, as the first element of pydantic's `loc`; the field name is the rest.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None
) -> ProblemResponse:
    content: dict[str, Any] = {"type": "about:blank", "title": _title(status), "status": status, "detail": detail}
    if errors is not None:
        content["errors"] = errors
    return ProblemResponse(content, status_code=status, headers=dict(headers) if headers else None)


def problem_body(status: int, detail: str) -> bytes:
    """The JSON body of a problem, for ASGI middleware that answers before FastAPI does (api/middleware.py)."""
    return json.dumps({"type": "about:blank", "title": _title(status), "status": status, "detail": detail}).encode()


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Error"


def _field(item: Mapping[str, Any]) -> str:
    if item.get("field"):
        return str(item["field"])
    loc = [str(p) for p in item.get("loc", ())]
    if len(loc) > 1 and loc[0] in _SOURCES:
        loc = loc[1:]
    return ".".join(loc) or "request"


def errors_of(items: Sequence[Any]) -> list[dict[str, Any]]:
    """{field, message} per error, from pydantic's errors or the routers' {field, msg, loc, type} dicts."""
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, Mapping):
            out.append({"field": "request", "message": str(item)})
            continue
        entry: dict[str, Any] = {"field": _field(item), "message": str(item.get("msg", item.get("message", "")))}
        if "loc" in item:
            entry["loc"] = list(item["loc"])
        if "type" in item:
            entry["type"] = item["type"]
        out.append(entry)
    return out


def _summary(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors)


async def http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = getattr(exc, "headers", None)
    if isinstance(exc.detail, list):
        errors = errors_of(exc.detail)
        return problem(exc.status_code, _summary(errors), errors, headers)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return problem(exc.status_code, detail, None, headers)


async def validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    # pydantic's `input` and `ctx` are left out: an echoed input can be huge, and ctx may hold exceptions.
    errors = errors_of(exc.errors())
    return problem(422, _summary(errors), errors)


async def not_found(request: Request, exc: Exception) -> ProblemResponse:
    return problem(404, str(exc))


async def conflict(request: Request, exc: Exception) -> ProblemResponse:
    return problem(409, str(exc))


async def invalid(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, service.Invalid)
    return problem(422, str(exc), [{"field": exc.field, "message": exc.message}])


async def internal_error(request: Request, exc: Exception) -> ProblemResponse:
    # The traceback goes to the log; the client gets no internals (and no request headers are logged).
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal server error")


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(service.NotFound, not_found)
    app.add_exception_handler(service.Conflict, conflict)
    app.add_exception_handler(service.Invalid, invalid)
    app.add_exception_handler(Exception, internal_error)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "about:blank: the status code says what the problem is"},
        "title": {"type": "string", "description": "the status code's reason phrase"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "errors": {
            "type": "array",
            "description": "validation errors (422): one per bad field",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def document(schema: dict[str, Any]) -> None:
    """Make the OpenAPI schema say what the handlers send: every 4xx/5xx answer as problem+json (FastAPI
    documents its 422 as `HTTPValidationError`, which it no longer is); a 422 wherever FastAPI validates; a 400
    and a 413 wherever there is a body; and a 404 on every path with an id or a name in it (the routers document
    theirs more precisely where they can)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM_SCHEMA
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "{" in path:  # an id or name in the path that names nothing
                responses.setdefault("404", {"description": "nothing with this id or name"})
            responses.setdefault("422", {"description": "a bad parameter or body; `errors` names each field"})
            if "requestBody" in operation:
                responses.setdefault("400", {"description": "the body could not be parsed"})
                responses.setdefault("413", {"description": "the body is larger than SWEEP_MAX_BODY_BYTES"})
            for code, response in responses.items():
                if code[0] in "45":
                    response["content"] = content
