"""Engines for the registry database: SQLite tuned for several writing processes, or any other URL.

SQLite gets, on every new connection, foreign keys on, WAL journal mode (readers never block the
writer) and a busy timeout (a writer waits for the lock instead of failing). Write transactions start
with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two processes that read-then-write
never deadlock on a lock upgrade (SQLite's ``SQLITE_BUSY_SNAPSHOT``); reads stay deferred.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import ConnectionPoolEntry

from fanbu.errors import RegistryError

BUSY_TIMEOUT_MS = 60_000
_BEGIN_OPTION = "fanbu_sqlite_begin"


def open_engines(url: str) -> tuple[Engine, Engine]:
    """Return ``(read_engine, write_engine)`` for ``url``; they share one connection pool.

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
            f"cannot open registry URL {url!r}: {exc} "
            "(use sqlite:///path/to/registry.db, or postgresql+psycopg://user@host/db with "
            "`pip install fanbu[postgres]`)"
        ) from exc
    if not is_sqlite:
        return engine, engine
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine, engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


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


def _sqlite_on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def describe_url(url: str) -> str:
    """The URL with any password hidden, for messages and ``repr``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
