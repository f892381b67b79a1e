"""The case-coordination store: the timeline, SOP step instances, capacity snapshots and statistical
profiles, in SQLite (default, a file in the gateway's data folder) or PostgreSQL (production option).

One SQL text serves both: ``?`` placeholders (rewritten to ``%s`` for psycopg), ``ON CONFLICT DO NOTHING``,
``DOUBLE PRECISION``/``TEXT``/``BIGINT`` columns, times as epoch seconds. Every statement runs on one
dedicated thread per store (a connection is never shared between threads; the event loop never blocks on
disk or network), each call of a public method in one transaction.

PostgreSQL is reached with psycopg 3 (the maintained successor of psycopg2, by the PostgreSQL driver's
own maintainers: libpq-based, so it speaks every authentication and TLS mode the server offers, with binary
wheels; its plain synchronous API is what this one-thread store needs). The connection string is a secret
(it may carry a password) and is read from a file (``dsn_file``).

Writes are idempotent (an event is keyed by its CloudEvents ``(source, id)``), so a redelivered event
changes nothing; ``add`` reports which entries were new and which arrived out of order.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from gateway.coordination.projection import Profile, TimelineEntry
from gateway.errors import GatewayError, Reason

__all__ = ["Instance", "Session", "Store", "StoreKind"]

T = TypeVar("T")
StoreKind = Literal["sqlite", "postgresql"]

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS xc_events (
        source TEXT NOT NULL, event_id TEXT NOT NULL, message TEXT NOT NULL, kind TEXT NOT NULL,
        subject TEXT NOT NULL, stage TEXT NOT NULL, stage_rank INTEGER, at DOUBLE PRECISION NOT NULL,
        event_time DOUBLE PRECISION NOT NULL, party TEXT, place TEXT, code TEXT, facts TEXT NOT NULL,
        anomaly TEXT, PRIMARY KEY (source, event_id))""",
    "CREATE INDEX IF NOT EXISTS xc_events_subject ON xc_events (subject, stage_rank)",
    "CREATE INDEX IF NOT EXISTS xc_events_stage_at ON xc_events (stage, at)",
    """CREATE TABLE IF NOT EXISTS xc_profiles (
        case_id TEXT PRIMARY KEY, year INTEGER NOT NULL, sex TEXT NOT NULL, age_band TEXT NOT NULL,
        citizenship TEXT NOT NULL, exploitation TEXT NOT NULL, exploitation_country TEXT NOT NULL,
        first_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS xc_erasures (
        case_id TEXT NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (source, event_id))""",
    """CREATE TABLE IF NOT EXISTS xc_instances (
        instance TEXT PRIMARY KEY, step TEXT NOT NULL, subject TEXT NOT NULL, kind TEXT NOT NULL,
        responsible TEXT NOT NULL, place TEXT, trigger_source TEXT NOT NULL, trigger_id TEXT NOT NULL,
        trigger_message TEXT NOT NULL, opened DOUBLE PRECISION NOT NULL, due DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL, overdue_at DOUBLE PRECISION, alerted INTEGER NOT NULL DEFAULT 0,
        resolved_at DOUBLE PRECISION, resolved_source TEXT, resolved_id TEXT,
        resolution_alerted INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS xc_instances_subject ON xc_instances (subject, state)",
    "CREATE INDEX IF NOT EXISTS xc_instances_due ON xc_instances (state, due)",
)
_OPEN_STATES: Final = ("open", "overdue")


@dataclass(frozen=True, slots=True)
class Instance:
    """One step of the SOP for one subject: opened by a trigger, due at ``due``, then met or late."""

    instance: str
    step: str
    subject: str
    kind: str
    responsible: str
    place: str | None
    trigger_source: str
    trigger_id: str
    trigger_message: str
    opened: float
    due: float
    state: str
    """``open`` -> ``overdue`` -> ``late``; or ``open`` -> ``met``."""
    overdue_at: float | None
    alerted: bool
    resolved_at: float | None
    resolved_source: str | None
    resolved_id: str | None
    resolution_alerted: bool


_INSTANCE_COLUMNS: Final = ", ".join(Instance.__dataclass_fields__)


class Store:
    """See the module docstring. ``Store.sqlite(path)`` or ``Store.postgresql(dsn)``; ``await open()``."""

    def __init__(self, kind: StoreKind, connect: Callable[[], Any]) -> None:
        self.kind = kind
        self._connect = connect
        self._connection: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"coordination-{kind}")

    @classmethod
    def sqlite(cls, path: Path) -> Store:
        def connect() -> sqlite3.Connection:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("PRAGMA cache_size=-65536")  # 64 MiB: the timeline's indexes stay in memory
            path.chmod(0o600)
            return connection

        return cls("sqlite", connect)

    @classmethod
    def postgresql(cls, dsn: str) -> Store:
        def connect() -> Any:
            import psycopg  # noqa: PLC0415 - only deployments that choose PostgreSQL need the driver

            return psycopg.connect(dsn, autocommit=True)

        return cls("postgresql", connect)

    # ---- plumbing ---------------------------------------------------------------------------------------
    async def open(self) -> None:
        def _open() -> None:
            self._connection = self._connect()
            self._transaction(lambda run: [run(statement) for statement in _SCHEMA])

        try:
            await self._run(_open)
        except GatewayError:
            raise
        except Exception as exc:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"coordination store ({self.kind}): cannot open: {type(exc).__name__}"
            ) from exc

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await self._run(connection.close)
        self._executor.shutdown(wait=True)

    async def _run(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.kind == "postgresql" else text

    def _transaction(self, work: Callable[[Callable[..., Any]], T]) -> T:
        """Run ``work(run)`` in one transaction; ``run(sql, params)`` returns the cursor."""
        connection = self._connection
        if connection is None:
            raise RuntimeError("coordination store is not open")

        def run(sql: str, params: Sequence[Any] = ()) -> Any:
            return connection.execute(self._sql(sql), tuple(params))

        if self.kind == "sqlite":
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(run)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result
        with connection.transaction():
            return work(run)

    async def call(self, work: Callable[[Callable[..., Any]], T]) -> T:
        """Run ``work(run)`` in one transaction on the store's thread (for queries of other modules)."""
        return await self._run(lambda: self._transaction(work))

    # ---- timeline ---------------------------------------------------------------------------------------
    async def add(self, entries: Sequence[TimelineEntry]) -> list[tuple[TimelineEntry, str | None]]:
        """Record ``entries`` (idempotently); returns each *new* entry with its anomaly (or None)."""
        return await self._run(
            lambda: self._transaction(
                lambda run: [result for entry in entries if (result := _add_one(run, entry)) is not None]
            )
        )

    async def events(self, subject: str) -> list[dict[str, Any]]:
        """Every recorded event of a case or alert, oldest business time first (facts decoded)."""
        return await self.call(lambda run: Session(run).events(subject))

    async def anomalies(self) -> list[tuple[str, str, str]]:
        """(subject, stage, anomaly) of every event recorded out of order."""
        return await self.call(
            lambda run: [
                tuple(r)
                for r in run(
                    "SELECT subject, stage, anomaly FROM xc_events WHERE anomaly IS NOT NULL"
                    " ORDER BY subject, at"
                ).fetchall()
            ]
        )

    async def erasures(self) -> list[tuple[str, float]]:
        return await self.call(
            lambda run: [tuple(r) for r in run("SELECT case_id, at FROM xc_erasures ORDER BY at").fetchall()]
        )

    async def prune(self, before: float) -> int:
        """Retention: delete timeline events, closed instances and erasure records older than ``before``."""

        def work(run: Callable[..., Any]) -> int:
            count = int(run("DELETE FROM xc_events WHERE event_time < ?", (before,)).rowcount or 0)
            count += int(
                run(
                    "DELETE FROM xc_instances WHERE state IN ('met', 'late') AND resolved_at < ?", (before,)
                ).rowcount
                or 0
            )
            count += int(run("DELETE FROM xc_profiles WHERE first_at < ?", (before,)).rowcount or 0)
            count += int(run("DELETE FROM xc_erasures WHERE at < ?", (before,)).rowcount or 0)
            return count

        return await self.call(work)

    # ---- SOP step instances -------------------------------------------------------------------------------
    async def open_instance(self, instance: Instance) -> bool:
        """Store a new instance unless one of the same step, subject and responsible party is unresolved."""
        return await self.call(lambda run: Session(run).open_instance(instance))

    async def unresolved(self, subject: str) -> list[Instance]:
        return await self.call(lambda run: Session(run).unresolved(subject))

    async def due(self, now: float) -> list[Instance]:
        """Open instances whose deadline has passed, and overdue/late ones whose alert is not yet out."""
        return await self._instances(
            "(state = 'open' AND due <= ?) OR (state IN ('overdue', 'late') AND alerted = 0)"
            " OR (state = 'late' AND resolution_alerted = 0)",
            (now,),
        )

    async def instances(self) -> list[Instance]:
        return await self._instances("1 = 1", ())

    async def _instances(self, where: str, params: tuple[Any, ...]) -> list[Instance]:
        return await self.call(lambda run: Session(run).instances(where, params))

    async def unresolved_counts(self) -> dict[tuple[str, str], int]:
        return await self.call(lambda run: Session(run).unresolved_counts())

    async def mark_overdue(self, instance: str, at: float) -> bool:
        """``open`` -> ``overdue`` (once: False when another transition got there first)."""
        return await self.call(
            lambda run: bool(
                run(
                    "UPDATE xc_instances SET state = 'overdue', overdue_at = ?"
                    " WHERE instance = ? AND state = 'open'",
                    (at, instance),
                ).rowcount
            )
        )

    async def mark_alerted(self, instance: str, *, resolution: bool = False) -> None:
        column = "resolution_alerted" if resolution else "alerted"
        await self.call(
            lambda run: run(f"UPDATE xc_instances SET {column} = 1 WHERE instance = ?", (instance,))  # noqa: S608
        )

    async def resolve(self, instance: str, at: float, source: str, event_id: str) -> str | None:
        """Close an unresolved instance: ``met`` if it was open, ``late`` if overdue; None if closed."""
        return await self.call(lambda run: Session(run).resolve(instance, at, source, event_id))

    # ---- profiles (statistics) ----------------------------------------------------------------------
    async def erase_profile(self, case_id: str) -> None:
        await self.call(lambda run: run("DELETE FROM xc_profiles WHERE case_id = ?", (case_id,)))


class Session:
    """The store's operations inside one transaction (on the store's thread): :meth:`Store.call` gives
    ``run``; the coordinator records an event and runs the SOP engine in one transaction this way."""

    def __init__(self, run: Callable[..., Any]) -> None:
        self.run = run
        self.opened = 0
        """Step instances this session opened."""
        self.resolved: list[tuple[str, str]] = []
        """``(step, met | late)`` of every instance this session closed (metrics count them after commit)."""

    def add(self, entry: TimelineEntry) -> tuple[TimelineEntry, str | None] | None:
        return _add_one(self.run, entry)

    def events(self, subject: str) -> list[dict[str, Any]]:
        rows = self.run(
            "SELECT source, event_id, message, stage, at, event_time, party, place, code, facts, anomaly"
            " FROM xc_events WHERE subject = ? ORDER BY at, event_time",
            (subject,),
        ).fetchall()
        return [{**dict(zip(_EVENT_COLUMNS, row, strict=True)), "facts": json.loads(row[9])} for row in rows]

    def instances(self, where: str, params: tuple[Any, ...]) -> list[Instance]:
        sql = f"SELECT {_INSTANCE_COLUMNS} FROM xc_instances WHERE {where} ORDER BY due"  # noqa: S608 - internal
        return [_instance(row) for row in self.run(sql, params).fetchall()]

    def unresolved(self, subject: str) -> list[Instance]:
        return self.instances("subject = ? AND state IN ('open', 'overdue')", (subject,))

    def open_instance(self, instance: Instance) -> bool:
        busy = self.run(
            "SELECT 1 FROM xc_instances WHERE step = ? AND subject = ? AND responsible = ?"
            " AND state IN ('open', 'overdue')",
            (instance.step, instance.subject, instance.responsible),
        ).fetchone()
        if busy:
            return False
        values = [getattr(instance, name) for name in Instance.__dataclass_fields__]
        values = [int(v) if isinstance(v, bool) else v for v in values]
        cursor = self.run(
            f"INSERT INTO xc_instances ({_INSTANCE_COLUMNS}) VALUES ({', '.join('?' * len(values))})"  # noqa: S608 - fixed column names
            " ON CONFLICT DO NOTHING",
            values,
        )
        if cursor.rowcount:
            self.opened += 1
        return bool(cursor.rowcount)

    def unresolved_counts(self) -> dict[tuple[str, str], int]:
        """``{(step, state): instances}`` of the unresolved states (``open``, ``overdue``)."""
        rows = self.run(
            "SELECT step, state, COUNT(*) FROM xc_instances WHERE state IN ('open', 'overdue')"
            " GROUP BY step, state"
        ).fetchall()
        return {(str(step), str(state)): int(count) for step, state, count in rows}

    def resolve(self, instance: str, at: float, source: str, event_id: str) -> str | None:
        """``met`` if the instance was open; ``late`` if it was overdue, resolved no earlier than it was
        found overdue (an answer made in time but learned of after the escalation still closes a breach)."""
        row = self.run(
            "SELECT state, overdue_at, step FROM xc_instances WHERE instance = ?", (instance,)
        ).fetchone()
        if row is None or row[0] not in _OPEN_STATES:
            return None
        state = "met" if row[0] == "open" else "late"
        if state == "late" and row[1] is not None:
            at = max(at, float(row[1]))
        self.run(
            "UPDATE xc_instances SET state = ?, resolved_at = ?, resolved_source = ?, resolved_id = ?"
            " WHERE instance = ?",
            (state, at, source, event_id, instance),
        )
        self.resolved.append((str(row[2]), state))
        return state


_EVENT_COLUMNS: Final = (
    "source",
    "event_id",
    "message",
    "stage",
    "at",
    "event_time",
    "party",
    "place",
    "code",
    "facts",
    "anomaly",
)


def _add_one(run: Callable[..., Any], entry: TimelineEntry) -> tuple[TimelineEntry, str | None] | None:
    anomaly = None
    if entry.kind == "case" and entry.rank is not None:
        later = run(
            "SELECT stage FROM xc_events WHERE subject = ? AND stage_rank > ? AND at < ?"
            " ORDER BY stage_rank DESC"
            " LIMIT 1",
            (entry.subject, entry.rank, entry.at),
        ).fetchone()
        if later is not None:
            anomaly = f"{entry.stage} after {later[0]}"
    cursor = run(
        "INSERT INTO xc_events (source, event_id, message, kind, subject, stage, stage_rank, at, event_time,"
        " party, place, code, facts, anomaly) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (
            entry.source,
            entry.event_id,
            entry.message,
            entry.kind,
            entry.subject,
            entry.stage,
            entry.rank,
            entry.at,
            entry.event_time,
            entry.party,
            entry.place,
            entry.code,
            json.dumps(dict(entry.facts), sort_keys=True, separators=(",", ":")),
            anomaly,
        ),
    )
    if not cursor.rowcount:
        return None
    if entry.erasure:
        run(
            "INSERT INTO xc_erasures (case_id, source, event_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (entry.subject, entry.source, entry.event_id, entry.at),
        )
        run("DELETE FROM xc_profiles WHERE case_id = ?", (entry.subject,))
    elif entry.profile is not None and not _erased(run, entry.subject):
        _add_profile(run, entry.profile, entry.at)
    return entry, anomaly


def _erased(run: Callable[..., Any], case_id: str) -> bool:
    return run("SELECT 1 FROM xc_erasures WHERE case_id = ?", (case_id,)).fetchone() is not None


def _add_profile(run: Callable[..., Any], p: Profile, at: float) -> None:
    run(
        "INSERT INTO xc_profiles (case_id, year, sex, age_band, citizenship, exploitation,"
        " exploitation_country, first_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (p.case_id, p.year, p.sex, p.age_band, p.citizenship, p.exploitation, p.exploitation_country, at),
    )


def _instance(row: Sequence[Any]) -> Instance:
    values = dict(zip(Instance.__dataclass_fields__, row, strict=True))
    values["alerted"] = bool(values["alerted"])
    values["resolution_alerted"] = bool(values["resolution_alerted"])
    return Instance(**values)
