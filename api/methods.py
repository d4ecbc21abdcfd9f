"""HEAD, OPTIONS and a complete `Allow` header (RFC 9110 sections 9.3.2, 9.3.7 and 15.5.6).

FastAPI registers one route per (path, method), and Starlette answers a method a route lacks with the 405 of
the first route whose path matched, so `Allow` named only that route's methods (`GET /sweeps/{id}` and
`DELETE /sweeps/{id}` are two routes). This ASGI middleware computes a path's methods from all routes:
- HEAD on a path with GET runs the GET and sends its headers without the body;
- OPTIONS on a known path answers 204 with `Allow` (CORS preflights are answered before, by CORSMiddleware);
- every 405 carries the full `Allow`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, compile_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


Table = list[tuple[re.Pattern[str], frozenset[str]]]


def route_table(routes: Sequence[BaseRoute]) -> Table:
    """(path regex, methods) of every route, those of included routers too. FastAPI 0.16x wraps an included
    router in one route object; `iter_route_contexts` (what its OpenAPI generator walks) flattens them."""
    table: Table = []
    for context in iter_route_contexts(routes):
        path, methods = context.path, context.methods
        if path and methods:
            regex, _, _ = compile_path(path)
            table.append((regex, frozenset(methods)))
    return table


def allowed_methods(table: Table, path: str) -> list[str]:
    """The methods served on `path`, HEAD with GET and OPTIONS with any; [] for none."""
    methods: set[str] = set()
    for regex, route_methods in table:
        if regex.match(path):
            methods |= route_methods
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return sorted(methods)


class MethodsMiddleware:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self.table: Table | None = None  # built on the first request: routes are all added by then

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.table is None:
            self.table = route_table(self.routes)
        allowed = allowed_methods(self.table, scope["path"])
        method = scope["method"]
        allow = (b"allow", ", ".join(allowed).encode())
        if method == "OPTIONS" and allowed:
            await send({"type": "http.response.start", "status": 204, "headers": [allow]})
            await send({"type": "http.response.body", "body": b""})
            return
        if method == "HEAD" and "GET" in allowed:
            await _head(self.app, scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, allow]}
            await send(message)

        await self.app(scope, receive, send_with_allow)


async def _head(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run the GET and send its headers (Content-Length included) without the body, as HEAD requires. A stream
    (the event stream of a running sweep) is told the client left once its headers are out: the app sees
    `http.disconnect` (ASGI spec 2.0's signal, which Starlette's StreamingResponse listens for) and stops."""
    state = {"started": False, "done": False, "received": False}

    async def head_receive() -> Message:
        if state["received"]:
            return {"type": "http.disconnect"}
        state["received"] = True
        return await receive()

    async def head_send(message: Message) -> None:
        if state["done"]:
            return
        if message["type"] == "http.response.start":
            state["started"] = True
            await send(message)
            return
        if message["type"] == "http.response.body":
            state["done"] = True
            await send({"type": "http.response.body", "body": b""})
            return
        await send(message)

    asgi = {**scope.get("asgi", {}), "spec_version": "2.0"}
    await app({**scope, "method": "GET", "asgi": asgi}, head_receive, head_send)
    if state["started"] and not state["done"]:
        await send({"type": "http.response.body", "body": b""})
