"""Engines and sessions, and the URL helpers that go with them (masking a password for printing, the file of a
SQLite URL). `db/` reads no settings: it is handed a URL (DESIGN.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# scheme://user:PASSWORD@...: SQLAlchemy's own parse (sqlalchemy.engine.url._parse_url: username [^:/]*, password
# [^@]*), so a password may hold an unescaped "/", ":" or "?"; any scheme, so that an unknown one is masked too.
_USERINFO = re.compile(r"[^:/?@]*://[^:/]*:(?P<password>[^@]*)@")
_SCHEME = re.compile(r"[^:/?@]*://")
# A password given as a query parameter (libpq's password=, MySQL drivers' passwd=, ODBC's PWD=).
_QUERY_PASSWORD = re.compile(r"[?&](?:password|passwd|pwd)=(?P<value>[^&]*)", re.IGNORECASE)
_PIECE_SEPARATORS = re.compile(r"[@/:?]")


def _secret_spans(url: str) -> list[tuple[int, int]]:
    """Where the passwords of `url` are, in order: the one before the host, then any in the query string.

    SQLAlchemy ends the password at its first "@" and gives the rest to the host (or the database), so a password
    with an unescaped "@" runs to the last "@" before the query string: "u:pa@ss@h/db" hides "pa@ss". A database
    name holding an "@" is hidden with it ("u:p@h/d@x" reads "u:***@x"): hiding too much beats printing a piece of
    a password. A SQLite path has no user part ("sqlite:////tmp/a@b/x.db" hides nothing). Text that is not
    scheme://... hides everything up to its last "@".
    """
    spans = []
    m = _USERINFO.match(url)
    if m is not None:
        start, first_at = m.span("password")
        query = url.find("?", first_at)
        spans.append((start, url.rfind("@", first_at, len(url) if query < 0 else query)))
    elif _SCHEME.match(url) is None and "@" in url:
        spans.append((0, url.rfind("@")))
    query = url.find("?", spans[-1][1] if spans else 0)
    if query >= 0:
        spans += [q.span("value") for q in _QUERY_PASSWORD.finditer(url, query)]
    return spans


def masked_url(url: str) -> str:
    """`url` fit to print: each password replaced by ***, the rest as written.

    Not URL.render_as_string(hide_password=True): that re-quotes the rest (a SQLite path's "@" becomes %40, the
    query is re-sorted), keeps a password= query parameter, and shows the tail of a password with an unescaped "@".
    """
    out, pos = [], 0
    for start, end in _secret_spans(url):
        out += [url[pos:start], "***"]
        pos = end
    return "".join(out) + url[pos:]


def scrub_password(text: str, url: str) -> str:
    """`text` (a driver's error) without the passwords of `url`, as written or percent-decoded, nor the pieces
    that an unescaped "@", "/", ":" or "?" split one into (SQLAlchemy hands them to the host, port or database)."""
    secrets: set[str] = set()
    for start, end in _secret_spans(url):
        for password in {url[start:end], unquote(url[start:end])}:
            secrets.add(password)
            # not a stray letter of the host name
            secrets.update(piece for piece in _PIECE_SEPARATORS.split(password) if len(piece) >= 3)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def sqlite_in_memory(url: str) -> bool:
    """Whether `url` is an in-memory SQLite database (sqlite://, sqlite:///, :memory:, mode=memory): every
    connection gets its own empty one. Raises as make_url does on a URL it cannot parse."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory"


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for another database, an in-memory one, or a file: URI (uri=true)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or sqlite_in_memory(url) or parsed.query.get("uri") == "true":
        return None
    return Path(str(parsed.database))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the API) never block the writer (the dispatcher)
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a power cut may lose the last commit only
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")  # wait for the writer's lock instead of failing at once
    cursor.close()


IDLE_IN_TRANSACTION_MS = 60_000


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's directory is made if missing."""
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "postgresql"
        and parsed.get_driver_name() == "psycopg2"
        and "options" not in parsed.query
    ):
        # A client paused or cut off inside a transaction (SIGSTOP, a network partition) would hold its row locks,
        # the sweep's lease row among them (db.repository.fence), forever: the server ends such a session after
        # 60 s, a little over the default lease (SWEEP_LEASE_SECONDS), so a new holder waits at most that long.
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"},
        )
    return create_engine(url, pool_pre_ping=True)


class Database:
    """One engine and its session factory for a URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
