"""The inbox: which events (by ``source`` and ``id``) this gateway already handed to its agency system.

CloudEvents makes ``(source, id)`` unique per event, so it is the deduplication key. Kafka delivers at least
once (redelivery after a crash, a rebalance, or a producer retry after a lost ack); the inbox turns that into
"the agency system sees each event once". The one window left — a crash after the sink accepted an event and
before its outcome is noted — re-delivers that event with the same ``Idempotency-Key``, which the agency
system (and our simulators) use to drop the repeat.

How outcomes are kept (docs/PERFORMANCE.md has the measurements behind this):

* :meth:`Inbox.note` appends the outcome to a small journal file (``<database>.outcomes``, one JSON line per
  outcome) with one ``write`` system call, on the caller's thread, before the subscriber delivers the next
  event. Once ``write`` returns the kernel holds the line, so it survives a crash of the process: the crash
  window is one event. Nothing is fsynced, exactly as the SQLite database runs with ``synchronous=NORMAL``:
  a power failure may lose the last outcomes, which means re-deliveries under the same idempotency key,
  never a lost event.
* :meth:`Inbox.settle` writes the outcomes noted since the last settle into SQLite in one transaction (on the
  database thread) and then empties the journal. The subscriber settles at the end of each fetched batch,
  before the batch's offsets may be committed.
* :meth:`Inbox.attach` replays a journal left by a crash into SQLite before anything is consumed, so an
  outcome noted just before the crash still deduplicates the redelivered batch.

Why not one SQLite transaction per event: it costs a hand-off to the database thread and back for every
event — about half of the subscriber's CPU — while the journal's ``write`` gives the same one-event window
for a few microseconds. Why not block the event loop: a ``write`` of ~150 bytes to the page cache does not
wait for the disk; SQLite commits and checkpoints, which may, stay on the database thread.

Outcomes are kept for ``retention_seconds`` (30 days, the exchange topics' default retention: an event the
broker can still redeliver is still deduplicated) and then deleted by :meth:`Inbox.settle`, at most once per
:data:`PRUNE_INTERVAL` and in the same transaction as the outcomes it writes. Only ``(source, id)`` pairs are
kept, never content, but a store that only grows is neither lawful retention (docs/PRIVACY.md) nor bounded.
A topic kept longer than that (``gateway deploy render --retention-days``) needs a longer inbox retention.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Literal

import orjson
import structlog

from gateway.bus.database import Database, transaction

__all__ = ["PRUNE_INTERVAL", "Inbox", "Outcome"]

Outcome = Literal["delivered", "dead-lettered"]
_OUTCOMES: Final = frozenset({"delivered", "dead-lettered"})
_JOURNAL_MODE: Final = 0o600
#: Seconds between two deletions of outcomes past retention (done by :meth:`Inbox.settle`).
PRUNE_INTERVAL: Final = 3600.0

_log = structlog.get_logger(__name__)

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
_DELETE_OLD: Final = "DELETE FROM inbox WHERE at < ?"


class Inbox:
    def __init__(
        self, db: Database, *, retention_seconds: float = 30 * 86400, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._next_prune = 0.0  # the first settle prunes what a long stop left past retention
        self.journal_path = db.path.with_name(f"{db.path.name}.outcomes")
        self._journal: int | None = None  # file descriptor, O_APPEND
        self._noted: list[tuple[str, str, Outcome, float]] = []

    async def attach(self) -> None:
        """Create the table, replay a journal left by a crash, and open the journal for :meth:`note`."""
        await self._db.run(lambda c: c.executescript(_DDL))
        left = _read_journal(self.journal_path)
        if left:
            await self._db.run(lambda c: transaction(c, lambda t: t.executemany(_INSERT, left)))
            _log.info("inbox journal replayed", outcomes=len(left))
        self._journal = os.open(
            self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _JOURNAL_MODE
        )
        os.ftruncate(self._journal, 0)  # replayed (or empty): start afresh

    def note(self, source: str, event_id: str, outcome: Outcome) -> None:
        """Record an outcome now (one ``write``: it survives a process crash once this returns); it reaches
        the database at the next :meth:`settle`. Raises ``OSError`` if the journal cannot be written."""
        if self._journal is None:
            raise RuntimeError("inbox is not attached")
        row = (source, event_id, outcome, self._clock())
        line = orjson.dumps(row) + b"\n"
        if os.write(self._journal, line) != len(line):  # a regular file takes it whole, or raises
            raise OSError(f"short write to {self.journal_path}")
        self._noted.append(row)

    async def settle(self) -> None:
        """Move the outcomes noted so far into the database (one transaction), then empty the journal."""
        if not self._noted:
            return
        rows, self._noted = self._noted, []
        now = self._clock()
        cutoff = now - self.retention_seconds if now >= self._next_prune else None

        def _write(connection: sqlite3.Connection) -> int:
            connection.executemany(_INSERT, rows)
            return 0 if cutoff is None else connection.execute(_DELETE_OLD, (cutoff,)).rowcount

        try:
            pruned = await self._db.run(lambda c: transaction(c, _write))
        except BaseException:
            self._noted = rows + self._noted  # still in the journal; the next settle (or start) retries
            raise
        if cutoff is not None:
            self._next_prune = now + PRUNE_INTERVAL
            if pruned:
                _log.info("inbox outcomes past retention deleted", outcomes=pruned)
        if self._journal is not None and not self._noted:
            os.ftruncate(self._journal, 0)

    def close(self) -> None:
        """Close the journal (the database is closed by its owner). Unsettled outcomes stay in the journal."""
        if self._journal is not None:
            journal, self._journal = self._journal, None
            os.close(journal)

    async def seen(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The subset of ``(source, id)`` keys that already have an outcome."""
        return set(await self.outcomes(keys))

    async def outcomes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Outcome]:
        """The outcome of each ``(source, id)`` key that has one (a re-drive delivers a dead-lettered one)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}

        def _query(connection: sqlite3.Connection) -> dict[tuple[str, str], Outcome]:
            found: dict[tuple[str, str], Outcome] = {}
            for start in range(0, len(wanted), 400):  # stay under SQLite's bound-parameter limit
                chunk = wanted[start : start + 400]
                clause = " OR ".join(["(source = ? AND id = ?)"] * len(chunk))
                params = [part for key in chunk for part in key]
                rows = connection.execute(f"SELECT source, id, outcome FROM inbox WHERE {clause}", params)  # noqa: S608 - placeholders only
                found.update(((source, event_id), outcome) for source, event_id, outcome in rows)
            return found

        return await self._db.run(_query)

    async def prune(self) -> int:
        """Delete the outcomes past retention now (:meth:`settle` does it once per :data:`PRUNE_INTERVAL`)."""
        cutoff = self._clock() - self.retention_seconds
        return await self._db.run(lambda c: c.execute(_DELETE_OLD, (cutoff,)).rowcount)


def _read_journal(path: Path) -> list[tuple[str, str, Outcome, float]]:
    """The outcomes in a journal; a torn or foreign last line (power loss mid-write) ends the replay."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return []
    rows: list[tuple[str, str, Outcome, float]] = []
    for number, line in enumerate(content.splitlines(), start=1):
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError):
            source, event_id, outcome, at = orjson.loads(line)
            if (
                isinstance(source, str) and isinstance(event_id, str) and outcome in _OUTCOMES
                and isinstance(at, float | int)
            ):  # fmt: skip
                rows.append((source, event_id, outcome, float(at)))
                continue
        _log.warning("inbox journal line unreadable; replay stops there", path=str(path), line=number)
        break
    return rows
