"""The durable outbox: an event is accepted once it is committed here; it leaves when the broker acked it.

``put`` is group-committed: concurrent publishers share one SQLite transaction (one fsync), so durability
costs little per event at high rates. Entries are sent in sequence order (so one case's events stay in order)
and marked ``sent`` on acknowledgement. Sent entries are kept for ``retention`` and then pruned: an event id
that is re-published within that window (a source re-reading a file after a crash) is ignored instead of
being sent again under the same id.

An entry put with ``expected`` recipients is also *tracked*, in the same transaction: a row of
``sent_events`` holds its topic, type, the digest of the record as it is sent (the ``record_sha256`` a
recipient's delivery receipt names) and the parties whose receipts it expects. The delivery ledger
(:mod:`gateway.bus.receipts`) matches receipts against it; it outlives the outbox row (its own retention).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from gateway.bus.database import Database, transaction
from gateway.contract.envelope import Envelope, kafka_header_name
from gateway.contract.receipt import record_digest
from gateway.errors import GatewayError, Reason

__all__ = ["Outbox", "OutboxEntry"]

_DDL: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS sent_events (
    event_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    type TEXT NOT NULL,
    record_sha256 TEXT NOT NULL,
    expected TEXT NOT NULL,
    pending INTEGER NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sent_events_pending ON sent_events (created_at) WHERE pending > 0;
CREATE INDEX IF NOT EXISTS sent_events_created ON sent_events (created_at);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    event_id: str
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    created_at: float


class Outbox:
    def __init__(self, db: Database, *, max_backlog: int = 100_000, retention_seconds: float = 7 * 86400):
        self._db = db
        self.max_backlog = max_backlog
        self.retention_seconds = retention_seconds
        self._depth = 0
        self._waiting: list[tuple[str, Envelope, tuple[str, ...] | None, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.wakeup = asyncio.Event()
        """Set whenever new entries are committed (the sender waits on it)."""

    async def attach(self) -> None:
        def _setup(connection: sqlite3.Connection) -> int:
            connection.executescript(_DDL)
            row = connection.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
            return int(row[0])

        self._depth = await self._db.run(_setup)
        if self._depth:
            self.wakeup.set()

    @property
    def depth(self) -> int:
        """Entries committed and not yet acknowledged by the broker."""
        return self._depth

    async def put(self, topic: str, event: Envelope, *, expected: Sequence[str] | None = None) -> None:
        """Commit ``event`` durably (group commit). Returns once it is on disk.

        ``expected``: track the event for delivery receipts from these parties (module docstring); None
        (receipts themselves) does not track it.

        Raises ``GatewayError``: ``outbox.full`` at the backlog limit, ``outbox.unavailable`` when the
        database cannot be written (a full disk): both say "not now", and the caller keeps its copy."""
        if self._depth + len(self._waiting) >= self.max_backlog:
            raise GatewayError(
                Reason.OUTBOX_FULL, f"outbox holds {self._depth} unsent events (limit {self.max_backlog})"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((topic, event, None if expected is None else tuple(expected), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="outbox-flush")
        await future

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            rows: list[tuple[object, ...]] = []
            tracked: list[tuple[object, ...]] = []
            for topic, event, expected, _ in batch:
                # the Kafka record (Envelope.to_kafka), headers stored as JSON [[name, text], ...]
                headers = [[kafka_header_name(name), value] for name, value in event.attributes().items()]
                key = event.partitionkey.encode("utf-8")
                now = time.time()
                rows.append((event.id, topic, key, event.data, _dumps(headers), now))
                if expected is not None:
                    digest = record_digest(key, event.data, [(n, v.encode("utf-8")) for n, v in headers])
                    parties = sorted(set(expected))
                    tracked.append((event.id, topic, event.type, digest, _dumps(parties), len(parties), now))

            try:
                inserted = await self._db.run(functools.partial(_insert_all, rows=rows, tracked=tracked))
            except Exception as exc:  # noqa: BLE001 - every waiter must learn about the failure
                # a full disk, a read-only or corrupt file: the gateway's state, not the events' fault
                error = GatewayError(
                    Reason.OUTBOX_UNAVAILABLE, f"the outbox cannot be written ({type(exc).__name__})"
                )
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self._depth += inserted
            for *_, future in batch:
                if not future.done():
                    future.set_result(None)
            self.wakeup.set()

    async def pending(self, limit: int) -> list[OutboxEntry]:
        """The oldest unsent entries, in sequence order."""

        def _select(connection: sqlite3.Connection) -> list[OutboxEntry]:
            rows = connection.execute(
                "SELECT seq, event_id, topic, key, value, headers, created_at FROM outbox "
                "WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                OutboxEntry(
                    seq,
                    event_id,
                    topic,
                    key,
                    value,
                    [(k, v.encode("utf-8")) for k, v in orjson.loads(headers)],
                    created_at,
                )
                for seq, event_id, topic, key, value, headers, created_at in rows
            ]

        return await self._db.run(_select)

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        now = time.time()

        def _mark(connection: sqlite3.Connection) -> int:
            def work(c: sqlite3.Connection) -> int:
                updated = 0
                for start in range(0, len(seqs), 500):  # one statement per 500 (SQLite's parameter limit)
                    chunk = list(seqs[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    updated += c.execute(
                        f"UPDATE outbox SET sent_at = ? WHERE seq IN ({marks}) AND sent_at IS NULL",  # noqa: S608 - placeholders only
                        [now, *chunk],
                    ).rowcount
                c.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                          (now - self.retention_seconds,))  # fmt: skip
                return updated

            return transaction(connection, work)

        self._depth = max(0, self._depth - await self._db.run(_mark))

    async def wait_flushed(self) -> None:
        """Wait until every ``put`` that has started is committed (used when shutting down)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)


def _insert_all(
    connection: sqlite3.Connection, *, rows: list[tuple[object, ...]], tracked: list[tuple[object, ...]]
) -> int:
    return transaction(connection, functools.partial(_insert, rows=rows, tracked=tracked))


def _insert(
    connection: sqlite3.Connection, *, rows: list[tuple[object, ...]], tracked: list[tuple[object, ...]]
) -> int:
    inserted = connection.executemany(
        "INSERT OR IGNORE INTO outbox (event_id, topic, key, value, headers, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    ).rowcount
    if tracked:
        connection.executemany(
            "INSERT OR IGNORE INTO sent_events (event_id, topic, type, record_sha256, expected, pending, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            tracked,
        )
    return int(inserted)


def _dumps(headers: list[list[str]] | list[str]) -> str:
    """The headers column: JSON text (orjson: the same document ``json.dumps`` wrote, without spaces)."""
    return orjson.dumps(headers).decode("utf-8")
