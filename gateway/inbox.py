"""The inbox: which events (by ``source`` and ``id``) this gateway already handed to its agency system.

CloudEvents makes ``(source, id)`` unique per event, so it is the deduplication key. Kafka delivers at least
once (redelivery after a crash, a rebalance, or a producer retry after a lost ack); the inbox turns that into
"the agency system sees each event once". The one window left — a crash after the sink accepted an event and
before the mark is written — re-delivers that event with the same ``Idempotency-Key``, which the agency
system (and our simulators) use to drop the repeat. The subscriber writes each outcome before it delivers
the next event, so that window is one event; with its ``outcomes_per_batch`` option it writes a fetched
batch's outcomes in one transaction (:meth:`Inbox.record_many`) and the window is one batch, still before
the batch's offsets are committed. Outcomes are kept for ``retention`` and then pruned.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from gateway._sqlite import Database, transaction

__all__ = ["Inbox", "Outcome"]

Outcome = Literal["delivered", "dead-lettered"]

_DDL: Final = """
CREATE TABLE IF NOT EXISTS inbox (
    source TEXT NOT NULL,
    id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (source, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_at ON inbox (at);
"""
_INSERT: Final = "INSERT OR REPLACE INTO inbox (source, id, outcome, at) VALUES (?, ?, ?, ?)"


class Inbox:
    def __init__(self, db: Database, *, retention_seconds: float = 30 * 86400) -> None:
        self._db = db
        self.retention_seconds = retention_seconds

    async def attach(self) -> None:
        await self._db.run(lambda c: c.executescript(_DDL))

    async def seen(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The subset of ``(source, id)`` keys that already have an outcome."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()

        def _query(connection: sqlite3.Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for start in range(0, len(wanted), 400):  # stay under SQLite's bound-parameter limit
                chunk = wanted[start : start + 400]
                clause = " OR ".join(["(source = ? AND id = ?)"] * len(chunk))
                params = [part for key in chunk for part in key]
                found.update(connection.execute(f"SELECT source, id FROM inbox WHERE {clause}", params))  # noqa: S608 - placeholders only
            return found

        return await self._db.run(_query)

    async def record(self, source: str, event_id: str, outcome: Outcome) -> None:
        """Record the outcome of ``(source, event_id)`` (committed when this returns)."""
        row = (source, event_id, outcome, time.time())
        await self._db.run(lambda connection: connection.execute(_INSERT, row))

    async def record_many(self, outcomes: Sequence[tuple[str, str, Outcome]]) -> None:
        """Record several ``(source, id, outcome)`` in one transaction (committed when this returns)."""
        now = time.time()
        rows = [(source, event_id, outcome, now) for source, event_id, outcome in outcomes]

        def _insert(connection: sqlite3.Connection) -> None:
            transaction(connection, lambda c: c.executemany(_INSERT, rows))

        await self._db.run(_insert)

    async def prune(self) -> int:
        cutoff = time.time() - self.retention_seconds
        return await self._db.run(lambda c: c.execute("DELETE FROM inbox WHERE at < ?", (cutoff,)).rowcount)
