"""HEAD, OPTIONS and a complete `Allow` header (RFC 9110 sections 9.3.2, 9.3.7 and 15.5.6).

FastAPI registers one route per (path, method), and Starlette answers a method a route lacks with the 405 of
the first route whose path matched, so `Allow` named only that route's methods (`GET /sweeps/{id}` and
`DELETE /sweeps/{id}` are two routes). This ASGI middleware computes a path's methods from all routes:
- HEAD on a path with GET runs the GET and sends its headers without the body;
- OPTIONS on a known path answers 204 with `Allow` (CORS preflights are answered before, by CORSMiddleware);
- every 405 carries the full `Allow`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import BaseRoute, Match, Route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """The methods the routes serve on this scope's path, HEAD with GET and OPTIONS with any; [] for none."""
    methods: set[str] = set()
    probe = {**scope, "method": "GET"}
    for route in routes:
        if not isinstance(route, Route) or not route.methods:
            continue
        match, _ = route.matches({**probe, "method": next(iter(route.methods))})
        if match == Match.FULL:
            methods |= route.methods
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return sorted(methods)


class MethodsMiddleware:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = allowed_methods(self.routes, scope)
        method = scope["method"]
        allow = (b"allow", ", ".join(allowed).encode())
        if method == "OPTIONS" and allowed:
            await send({"type": "http.response.start", "status": 204, "headers": [allow]})
            await send({"type": "http.response.body", "body": b""})
            return
        if method == "HEAD" and "GET" in allowed:
            await self.app({**scope, "method": "GET"}, receive, _headers_only(send))
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


def _headers_only(send: Send) -> Send:
    """Pass the response's start (its Content-Length included) and drop its body, as HEAD requires."""

    async def head_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return head_send
