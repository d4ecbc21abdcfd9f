"""The uvicorn server `sweep-service serve` runs: uvicorn's h11 protocol plus a header read timeout.

uvicorn has no limit on how long a client may take to send its request headers (its keep-alive timer is
cancelled by any byte received), so a client sending headers slowly held a connection open indefinitely
(issue 13: 200 such stayed open). Here a connection that has not finished its headers within
SWEEP_HEADER_TIMEOUT_SECONDS of connecting, or of its previous response, gets a 408 and is closed. The body read
timeout is api.middleware.BodyTimeoutMiddleware.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sweep_service.settings import Settings

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderTimeoutH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers are not complete in `header_timeout` s."""

    header_timeout = 30.0  # set per server by `make_server` (a subclass per timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._started = self.cycle
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._started = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._started:  # a new request's headers arrived: the app now has the request
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # the next request on this connection gets the same time for its headers
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.cycle is self._started and not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()


def make_server(app: Any, host: str, port: int, settings: Settings) -> uvicorn.Server:
    """A uvicorn server for `app` with the header read timeout of `settings`."""
    protocol = type("HeaderTimeout", (HeaderTimeoutH11Protocol,), {"header_timeout": settings.header_timeout_seconds})
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", http=protocol))
