"""Engines for the registry database: SQLite tuned for several writing processes, or any other URL.

SQLite gets, on every new connection, foreign keys on, WAL journal mode (readers never block the
writer) and a busy timeout (a writer waits for the lock instead of failing). Write transactions start
with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two processes that read-then-write
never deadlock on a lock upgrade (SQLite's ``SQLITE_BUSY_SNAPSHOT``); reads stay deferred. A new
SQLite file is created owner-only (0600; SQLite gives its ``-wal`` and ``-shm`` files the same mode).

A URL's password never reaches a message: :func:`describe_url` hides it and :func:`redact` takes it
out of any text (a driver's error may quote the connection string).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import ConnectionPoolEntry

from fanbu.errors import RegistryError

BUSY_TIMEOUT_MS = 60_000
_BEGIN_OPTION = "fanbu_sqlite_begin"
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^\s]*)@")
HIDDEN = "***"


def open_engines(url: str, autocheckpoint: bool = True) -> tuple[Engine, Engine]:
    """Return ``(read_engine, write_engine)`` for ``url``; they share one connection pool.

    ``autocheckpoint=False`` (SQLite): no commit of these engines copies the write-ahead log into the
    database; a :class:`WalCheckpointer` must do it (other processes' connections still may).

    Raises:
        RegistryError: the URL cannot be parsed or names a database driver that is not installed.
    """
    try:
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        connect_args: dict[str, Any] = {"timeout": BUSY_TIMEOUT_MS / 1000} if is_sqlite else {}
        engine = create_engine(parsed, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        raise RegistryError(
            f"cannot open registry URL {describe_url(url)!r}: {redact(str(exc), url)} "
            "(use sqlite:///path/to/registry.db, or postgresql+psycopg://user@host/db with "
            "`pip install fanbu[postgres]`)"
        ) from None  # the original's message and arguments may hold the password
    if not is_sqlite:
        return engine, engine
    _create_private(parsed)
    event.listen(engine, "connect", _sqlite_on_connect)
    if not autocheckpoint:
        event.listen(engine, "connect", _sqlite_no_autocheckpoint)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine, engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a plain SQLite URL (``sqlite:///path``); ``None`` for any other URL (in
    memory, a ``file:`` URI, another database)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or "uri" in parsed.query:
        return None
    return Path(database)


def _create_private(parsed: URL) -> None:
    """Create a missing SQLite database file as an empty, owner-only (0600) file before SQLite opens it
    (SQLite would create it with the umask's mode, usually world-readable)."""
    path = sqlite_file(parsed)
    if path is None:
        return
    if path.exists() or not path.parent.is_dir():
        return  # an existing file keeps its mode; a missing directory is SQLite's error to report
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it meanwhile
    except OSError:
        return  # unwritable: SQLite reports it, with the reason, when it connects
    os.close(fd)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN (pysqlite's own implicit BEGIN is deferred-only).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_no_autocheckpoint(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA wal_autocheckpoint = 0")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def describe_url(url: str) -> str:
    """The URL with any password hidden, for messages and ``repr`` (also when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError, TypeError):
        return _PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}@", str(url))


def redact(text: str, url: str | None = None) -> str:
    """``text`` with ``url`` shown by :func:`describe_url`, and its password (as written, or percent-
    encoded) and that of any other ``scheme://user:password@`` in it replaced by ``***``."""
    secrets: set[str] = set()
    if url:
        try:
            password = make_url(url).password
        except (ArgumentError, ValueError, TypeError):
            match = _PASSWORD.search(str(url))
            password = match["password"] if match else None
        if password:
            secrets |= {str(password), quote(str(password), safe=""), quote_plus(str(password))}
        text = text.replace(str(url), describe_url(url))
    text = _PASSWORD.sub(lambda m: f"{m['head']}{HIDDEN}@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text
