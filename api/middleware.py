"""ASGI middleware: the request-body limit and read timeout, and the request metrics behind `GET /metrics`.

Both are plain ASGI (no BaseHTTPMiddleware), so streamed responses (the server-sent events) pass through
unbuffered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException

from api.problems import MEDIA_TYPE, problem_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = problem_body(status, detail)
    headers = [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse request bodies larger than `max_bytes` with 413 (SWEEP_MAX_BODY_BYTES).

    A declared Content-Length over the limit is refused before the body is read; a chunked body is counted as
    it arrives and refused once it passes the limit (the HTTPException raised from `receive` reaches FastAPI's
    exception handler, which answers 413 in JSON).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request body larger than {self.max_bytes} bytes (SWEEP_MAX_BODY_BYTES)"
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, "Content-Length is not a number")
                    return
                if declared > self.max_bytes:
                    await _send_json(send, 413, too_large)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, detail=too_large)
            return message

        await self.app(scope, limited_receive, send)


# nginx's "client closed request": what a request whose client went away mid-body is logged and counted as.
CLIENT_CLOSED = 499


class BodyTimeoutMiddleware:
    """A 408 when the next piece of a request body does not arrive within `seconds` (SWEEP_BODY_TIMEOUT_SECONDS),
    so a client sending its body slowly cannot hold a connection forever (issue 13: 200 such stayed open).

    Only reads of the body are timed: once the body is complete, a `receive` waits for the disconnect (the
    server-sent events do) without limit. The header read timeout is the server's (api/server.py).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                detail = f"no request body data for {self.seconds:g} s (SWEEP_BODY_TIMEOUT_SECONDS)"
                raise HTTPException(408, detail=detail, headers={"Connection": "close"}) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)


# Latency buckets in seconds: prometheus_client's default histogram buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"


@dataclass
class _Series:
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0


class RequestMetrics:
    """Request latency histograms and counts per (method, route template, status); thread-safe.

    Labels are bounded: the route is the template (`/sweeps/{sweep_id}`), never the raw path, unmatched paths
    share one label, and unusual methods are counted as OTHER, so a fuzzer cannot grow the label set.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: dict[tuple[str, str], _Series] = {}
        self.responses: dict[tuple[str, str, int], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        with self._lock:
            series = self.latency.setdefault((method, route), _Series())
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    series.buckets[i] += 1
            series.total += seconds
            series.count += 1
            key = (method, route, status)
            self.responses[key] = self.responses.get(key, 0) + 1

    def render(self) -> list[str]:
        """The Prometheus text-format lines of the request metrics."""
        with self._lock:
            latency = {k: _Series(list(v.buckets), v.total, v.count) for k, v in self.latency.items()}
            responses = dict(self.responses)
        lines = [
            "# HELP sweep_api_request_duration_seconds API request latency by route template.",
            "# TYPE sweep_api_request_duration_seconds histogram",
        ]
        for (method, route), s in sorted(latency.items()):
            labels = f'method="{_escape(method)}",route="{_escape(route)}"'
            for bound, n in zip(BUCKETS, s.buckets, strict=True):
                lines.append(f'sweep_api_request_duration_seconds_bucket{{{labels},le="{bound}"}} {n}')
            lines.append(f'sweep_api_request_duration_seconds_bucket{{{labels},le="+Inf"}} {s.count}')
            lines.append(f"sweep_api_request_duration_seconds_sum{{{labels}}} {s.total!r}")
            lines.append(f"sweep_api_request_duration_seconds_count{{{labels}}} {s.count}")
        lines += [
            "# HELP sweep_api_requests_total API responses by route template and status code.",
            "# TYPE sweep_api_requests_total counter",
        ]
        for (method, route, status), n in sorted(responses.items()):
            labels = f'method="{_escape(method)}",route="{_escape(route)}",status="{status}"'
            lines.append(f"sweep_api_requests_total{{{labels}}} {n}")
        return lines


def _escape(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """Time every HTTP request and record it under its route template (scope["route"], set by the router)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope.get("method", "")).upper()
            self.metrics.observe(method, route, status, time.perf_counter() - start)
