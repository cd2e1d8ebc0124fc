"""The plumbing every fanbu store shares: two engines on one database, its tables, one transaction per use.

The lineage registry and the serving log store both sit on the registry's database. Subclasses name
their tables (``metadata``), the error they raise, and the messages that say what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Self

from sqlalchemy import MetaData
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from fanbu.errors import FanbuError
from fanbu.registry.checkpoint import WalCheckpointer
from fanbu.registry.engine import describe_url, open_engines, redact, sqlite_file


class SqlStore:
    """Open ``url`` (tables created if missing) and hand out transactions.

    Class attributes:
        error: The exception raised for database trouble.
        open_message: Why opening failed, formatted with ``url`` and ``reason``.
        busy_message: Why a transaction failed, formatted with ``url`` and ``reason``.
    """

    error: ClassVar[type[FanbuError]] = FanbuError
    open_message: ClassVar[str] = "cannot open {url}: {reason}"
    busy_message: ClassVar[str] = "{url}: {reason} (retry)"

    def __init__(self, url: str, metadata: MetaData, background_checkpoint: bool = False) -> None:
        self.url = url
        # SQLite only: a thread checkpoints the write-ahead log, no commit does (fanbu.registry.checkpoint)
        path = sqlite_file(url) if background_checkpoint else None
        self._engine, self._write_engine = open_engines(url, autocheckpoint=path is None)
        self._checkpointer: WalCheckpointer | None = None
        try:
            with self._write_engine.begin() as conn:
                metadata.create_all(conn)
        except DBAPIError as exc:  # cannot connect (OperationalError), a bad connection option, no rights
            self._engine.dispose()
            reason = redact(str(exc.orig), url)
            raise self.error(self.open_message.format(url=describe_url(url), reason=reason)) from None
        if path is not None:
            self._checkpointer = WalCheckpointer(path).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every pooled database connection (after a last checkpoint, if a thread runs them)."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._engine.dispose()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        engine = self._write_engine if write else self._engine
        try:
            with Session(engine, expire_on_commit=False) as session, session.begin():
                yield session
        except OperationalError as exc:
            reason = redact(str(exc.orig), self.url)
            raise self.error(self.busy_message.format(url=describe_url(self.url), reason=reason)) from exc
