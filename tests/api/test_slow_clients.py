"""Clients that send slowly or go away, against the real server `serve` runs (api/server.py: uvicorn's h11 with
a header timeout; api/middleware.py: the body timeout). Issue 13: a client dropping a POST mid-body was logged
and counted as a 500; clients sending headers or a body slowly held connections open indefinitely."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_builders import make_settings

from api.app import create_app
from api.server import make_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`host:port` of a real server with 1 s header and body timeouts, on a fresh SQLite database."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    settings = make_settings(tmp_path, SWEEP_HEADER_TIMEOUT_SECONDS=1, SWEEP_BODY_TIMEOUT_SECONDS=1)
    app = create_app(url, settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = make_server(app, "127.0.0.1", port, settings)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)
    app.state.db.dispose()


def connect(address: str) -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the 30 s socket timeout fails the test)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def post_counts(address: str) -> dict[str, int]:
    """POST /sweeps responses by status, from GET /metrics."""
    text = httpx.get(f"http://{address}/metrics", timeout=30).text
    counts = {}
    for line in text.splitlines():
        if line.startswith('sweep_api_requests_total{method="POST",route="/sweeps"'):
            status = line.split('status="')[1].split('"')[0]
            counts[status] = int(float(line.rsplit(" ", 1)[1]))
    return counts


HEAD = b"POST /sweeps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"


def test_a_client_that_drops_a_post_mid_body_is_not_a_500(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        sock = connect(server)
        sock.sendall(HEAD + b'{"name": "x", ')
        time.sleep(0.2)  # the app is reading the body
        sock.close()
    deadline = time.monotonic() + 30
    while sum(post_counts(server).values()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert post_counts(server) == {"499": 3}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "client closed the connection during POST /sweeps" in caplog.text


def test_slow_headers_get_a_408_and_the_connection_closes(server: str) -> None:
    sock = connect(server)
    start = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the headers never end
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 25
    # A keep-alive connection gets the same limit for its next request's headers.
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    for _ in range(3):  # a byte now and then does not reset the clock
        time.sleep(0.4)
        sock.sendall(b"X")
    assert b"HTTP/1.1 408" in read_all(sock)
    sock.close()


def test_a_slow_body_gets_a_408_and_the_connection_closes(server: str) -> None:
    sock = connect(server)
    start = time.monotonic()
    sock.sendall(HEAD + b'{"name": ')  # 491 bytes never come
    answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"SWEEP_BODY_TIMEOUT_SECONDS" in answer and time.monotonic() - start < 25
    assert post_counts(server) == {"408": 1}


def test_many_slow_clients_do_not_stay_connected(server: str) -> None:
    socks = [connect(server) for _ in range(50)]
    for i, sock in enumerate(socks):
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" if i % 2 else HEAD + b"{")
    for sock in socks:
        assert read_all(sock).startswith(b"HTTP/1.1 408")
        sock.close()
    assert httpx.get(f"http://{server}/healthz", timeout=30).status_code == 200
