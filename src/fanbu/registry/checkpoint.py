"""Checkpoint a SQLite write-ahead log from a thread of its own, so that no commit waits for it.

SQLite's automatic checkpoint runs inside the commit that takes the log past 1,000 pages: that commit
then also copies the log into the database file and syncs both. The server answers a micro-batch only
after its commit, so every request of that batch, and of the batches queued behind it, waits for the
copy and the disk. With the server's connections opened with ``autocheckpoint=False``
(:func:`fanbu.registry.engine.open_engines`), this thread does that work instead: a ``PASSIVE``
checkpoint, which never waits for a reader or a writer, every ``interval`` seconds. Commits then only
append to the log.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("fanbu.registry")


class WalCheckpointer:
    """A daemon thread that checkpoints ``path``'s write-ahead log every ``interval`` seconds.

    Args:
        path: The SQLite database file.
        interval: Seconds between checkpoints. The log grows by what is committed in that time.
    """

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.path = path
        self.interval = interval
        self.checkpoints = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fanbu-wal-checkpoint", daemon=True)

    def start(self) -> WalCheckpointer:
        """Start the thread; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after one last checkpoint (a commit may have come after the previous one)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # its own connection: the pool's are busy committing, and a checkpoint must not sit in a transaction
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        try:
            while True:
                stopping = self._stop.wait(self.interval)
                self._checkpoint(conn)
                if stopping:
                    return
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # a busy or vanished file: the next round tries again
            log.warning("checkpoint of %s failed (will retry): %s", self.path, exc)
