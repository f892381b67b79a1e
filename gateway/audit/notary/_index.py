"""``index.sqlite``: the notary's derived index of its log (leaf index -> position, event id, leaf hash).

Positions (the next offset to log per partition) and ``/proof`` look-ups use it, but it never outranks the
log: it is updated after each append, brought up to the log at start from the entries themselves, and
rebuilt from scratch when unreadable or when its last row disagrees with the log (``docs/AUDIT.md``
section 11.2).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import structlog

from gateway.audit import _fs
from gateway.audit.leaf import Leaf
from gateway.audit.merkle import leaf_hash
from gateway.audit.tiles import TileLog

_log = structlog.get_logger(__name__)

#: The index file, next to the tiles in the log directory.
INDEX_FILE: Final = "index.sqlite"


class LeafIndex:
    """``index.sqlite``: for every leaf its index, position and event id. Derived from the log, never ahead
    of it; used to resume (next offset per partition) and to find an event's leaf for ``/proof``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS leaves (idx INTEGER PRIMARY KEY, topic TEXT NOT NULL, "
            "part INTEGER NOT NULL, off INTEGER NOT NULL, event_id TEXT, source TEXT, hash BLOB NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS leaves_event ON leaves (event_id)")
        return db

    def sync_with(self, log: TileLog) -> int:
        """Make the index describe exactly the log's entries; returns how many entries were (re)indexed."""
        with self._lock:
            try:
                return self._sync(log)
            except sqlite3.DatabaseError:
                _log.warning("notary.index_rebuilt", reason="unreadable")
                self._db.close()
                _fs.remove_files([self._path, Path(f"{self._path}-wal"), Path(f"{self._path}-shm")])
                self._db = self._connect()
                return self._sync(log)

    def _sync(self, log: TileLog) -> int:
        size = log.size
        self._db.execute("DELETE FROM leaves WHERE idx >= ?", (size,))
        row = self._db.execute("SELECT idx, hash FROM leaves ORDER BY idx DESC LIMIT 1").fetchone()
        if row is not None and bytes(row[1]) != log.leaf_hash(int(row[0])):
            _log.warning("notary.index_rebuilt", reason="does not match the log")
            self._db.execute("DELETE FROM leaves")
            row = None
        start = 0 if row is None else int(row[0]) + 1
        batch: list[tuple[int, Leaf, bytes]] = []
        for index, entry in enumerate(log.iter_entries(start), start):
            batch.append((index, Leaf.decode(entry), entry))
            if len(batch) >= 1000:
                self._insert(batch)
                batch = []
        self._insert(batch)
        return size - start

    def add(self, first: int, leaves: Sequence[tuple[Leaf, bytes]]) -> None:
        with self._lock:
            self._insert([(index, leaf, entry) for index, (leaf, entry) in enumerate(leaves, first)])

    def _insert(self, batch: Sequence[tuple[int, Leaf, bytes]]) -> None:
        rows = [
            (index, leaf.topic, leaf.partition, leaf.offset, leaf.id, leaf.source, leaf_hash(entry))
            for index, leaf, entry in batch
        ]
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO leaves VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to log per (topic, partition): one past the highest offset logged."""
        with self._lock:
            rows = self._db.execute("SELECT topic, part, MAX(off) + 1 FROM leaves GROUP BY topic, part")
            return {(str(t), int(p)): int(n) for t, p, n in rows}

    def find(self, event_id: str, source: str | None, below: int) -> int | None:
        with self._lock:
            if source is None:
                row = self._db.execute(
                    "SELECT MIN(idx) FROM leaves WHERE event_id = ? AND idx < ?", (event_id, below)
                ).fetchone()
            else:
                row = self._db.execute(
                    "SELECT MIN(idx) FROM leaves WHERE event_id = ? AND source = ? AND idx < ?",
                    (event_id, source, below),
                ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
