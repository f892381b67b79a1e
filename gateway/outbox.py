"""The durable outbox: an event is accepted once it is committed here; it leaves when the broker acked it.

``put`` is group-committed: concurrent publishers share one SQLite transaction (one fsync), so durability
costs little per event at high rates. Entries are sent in sequence order (so one case's events stay in order)
and marked ``sent`` on acknowledgement. Sent entries are kept for ``retention`` and then pruned: an event id
that is re-published within that window (a source re-reading a file after a crash) is ignored instead of
being sent again under the same id.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from gateway._sqlite import Database, transaction
from gateway.envelope import Envelope, kafka_header_name
from gateway.errors import GatewayError, Reason

__all__ = ["Outbox", "OutboxEntry"]

_Row = tuple[str, str, bytes, bytes, str, float]  # event_id, topic, key, value, headers JSON, created_at
_NO_SEQ_LIMIT: Final = 2**63 - 1  # SQLite's largest integer: "every sequence number"

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
    """The durable queue between ``publish`` and the sender.

    Committed entries are also kept in memory (at most ``memory_entries`` of them, the newest, contiguous in
    sequence order) so the sender usually takes them from there instead of reading back what was just
    written; anything not in memory (the backlog found at start, or entries committed while the memory
    window was full) is read from disk first, by sequence number, so the order is the same either way. The
    disk stays the only truth: an entry enters memory only after its transaction committed, and leaves it
    when it is marked sent.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_backlog: int = 100_000,
        retention_seconds: float = 7 * 86400,
        memory_entries: int = 5_000,
    ):
        self._db = db
        self.max_backlog = max_backlog
        self.retention_seconds = retention_seconds
        self._memory: collections.deque[OutboxEntry] = collections.deque()
        self._memory_entries = memory_entries
        self._depth = 0
        self._waiting: list[tuple[str, Envelope, asyncio.Future[None]]] = []
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

    async def put(self, topic: str, event: Envelope) -> None:
        """Commit ``event`` durably (group commit). Returns once it is on disk."""
        if self._depth + len(self._waiting) >= self.max_backlog:
            raise GatewayError(
                Reason.OUTBOX_FULL, f"outbox holds {self._depth} unsent events (limit {self.max_backlog})"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((topic, event, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="outbox-flush")
        await future

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            rows: list[_Row] = []
            headers_of: list[list[list[str]]] = []
            for topic, event, _ in batch:
                # the Kafka record (Envelope.to_kafka), headers stored as JSON [[name, text], ...]
                headers = [[kafka_header_name(name), value] for name, value in event.attributes().items()]
                key = event.partitionkey.encode("utf-8")
                rows.append((event.id, topic, key, event.data, _dumps(headers), time.time()))
                headers_of.append(headers)

            try:
                seqs = await self._db.run(functools.partial(_insert_all, rows=rows))
            except Exception as exc:  # noqa: BLE001 - every waiter must learn about the failure
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._remember(rows, headers_of, seqs)
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)
            self.wakeup.set()

    def _remember(self, rows: list[_Row], headers_of: list[list[list[str]]], seqs: list[int | None]) -> None:
        """Count the committed rows and keep them in memory while the window has room (else: disk only)."""
        entries = [
            OutboxEntry(seq, event_id, topic, key, value, [(k, v.encode("utf-8")) for k, v in headers], at)
            for (event_id, topic, key, value, _, at), headers, seq in zip(rows, headers_of, seqs, strict=True)
            if seq is not None  # None: the event id was already in the outbox (a re-published record)
        ]
        self._depth += len(entries)
        if len(self._memory) + len(entries) > self._memory_entries:
            self._memory.clear()  # everything unsent is on disk: read from there until memory refills
        else:
            self._memory.extend(entries)

    async def pending(self, limit: int) -> list[OutboxEntry]:
        """The oldest unsent entries, in sequence order."""
        if self._depth <= len(self._memory):  # every unsent entry is in memory
            return list(itertools.islice(self._memory, limit))
        # entries older than the memory window (or all, when it is empty) live on disk only
        below = self._memory[0].seq if self._memory else _NO_SEQ_LIMIT

        def _select(connection: sqlite3.Connection) -> list[OutboxEntry]:
            rows = connection.execute(
                "SELECT seq, event_id, topic, key, value, headers, created_at FROM outbox "
                "WHERE sent_at IS NULL AND seq < ? ORDER BY seq LIMIT ?",
                (below, limit),
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

        entries = await self._db.run(_select)
        if len(entries) < limit and self._memory and self._memory[0].seq == below:
            # the disk-only entries are exhausted and the window did not move meanwhile: continue with it
            entries.extend(itertools.islice(self._memory, limit - len(entries)))
        return entries

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
        done = set(seqs)
        while self._memory and self._memory[0].seq in done:  # the usual case: the oldest were sent
            done.discard(self._memory.popleft().seq)
        if done and self._memory and self._memory[-1].seq >= min(done):  # a partial acknowledgement
            self._memory = collections.deque(entry for entry in self._memory if entry.seq not in done)

    async def wait_flushed(self) -> None:
        """Wait until every ``put`` that has started is committed (used when shutting down)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)


def _insert_all(connection: sqlite3.Connection, *, rows: list[_Row]) -> list[int | None]:
    """Insert ``rows`` in one transaction; each row's sequence number, None where its event id was known."""
    return transaction(connection, functools.partial(_insert, rows=rows))


def _insert(connection: sqlite3.Connection, *, rows: list[_Row]) -> list[int | None]:
    seqs: list[int | None] = []
    for row in rows:
        cursor = connection.execute(
            "INSERT OR IGNORE INTO outbox (event_id, topic, key, value, headers, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        seqs.append(cursor.lastrowid if cursor.rowcount == 1 else None)
    return seqs


def _dumps(headers: list[list[str]]) -> str:
    """The headers column: JSON text (orjson: the same document ``json.dumps`` wrote, without spaces)."""
    return orjson.dumps(headers).decode("utf-8")
