"""SQLite databases (WAL mode) driven from asyncio.

All statements run on one dedicated thread per database, so a connection is never shared between threads and
the event loop never blocks on disk. ``durable=True`` sets ``synchronous=FULL``: a committed transaction
survives power loss, which is what "an accepted event is never lost" needs (the outbox; group commit keeps it
affordable). ``durable=False`` sets ``synchronous=NORMAL``: commits survive a process crash but the last
ones may be lost on power failure — right for the inbox, where a lost mark means one re-delivery carrying
the same idempotency key, never a lost event.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.errors import GatewayError, Reason

__all__ = ["Database", "transaction"]

T = TypeVar("T")


class Database:
    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.name}")
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        def _open() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            connection.execute("PRAGMA busy_timeout=5000")
            self.path.chmod(0o600)
            return connection

        try:
            self._connection = await self._run(_open)
        except sqlite3.Error as exc:
            raise GatewayError(Reason.CONFIG_INVALID, f"cannot open database {self.path}: {exc}") from exc

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the database thread."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("database is not open")
        return await self._run(lambda: work(connection))

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await self._run(connection.close)
        self._executor.shutdown(wait=True)


def transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any exception)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(connection)
    except BaseException:
        # SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR): a second ROLLBACK would raise
        # "no transaction is active" and hide the real error
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result
