"""Delivery receipts at run time: issued by the recipient, matched by the sender (contract: ``receipt.py``).

**Recipient** (:class:`ReceiptIssuer`): the subscriber reports every record it finishes — delivered,
rejected by verification, dead-lettered — and the issuer turns it into an ``id.trafficking.delivery.receipt``
for the event's source (:func:`gateway.contract.receipt.receipt_data`), signed and published like any event
of ours (``Publisher.publish(..., internal=True)``: through the outbox to ``xchg.<us>.delivery.v1``). Each
receipt is first appended to a small journal (``receipts.journal``, one ``write`` per receipt, as the
inbox does with outcomes) before the outcome is noted, and the journal's receipts are committed to the outbox
at the end of the fetch, before its offsets may be committed. A crash in between replays the journal at the
next start, so no finished event loses its receipt; the receipt id is derived, so a receipt written twice is
kept once. Records read from delivery topics (receipts) are never receipted, and a rejected record only
gets one when the source it claims is a registered party other than us (forged records are reported to the
party they impersonate, whose ledger then refuses the receipt: an alarm on its side).

**Sender** (:class:`DeliveryLedger`): receipts for our events arrive on the recipients' delivery topics and
are verified like every event (signature of the recipient, publish permission, schema, topic). The ledger
then checks what only the sender can: the event is one we published (``sent_events`` of the outbox,
:mod:`gateway.bus.outbox`), the issuer is a party the registry lets read the event's topic, and the receipt
names exactly the record we sent (its ``record_sha256`` and topic). Otherwise the receipt is dead-lettered
with ``receipt.unknown-event``, ``receipt.not-a-recipient`` or ``receipt.digest-mismatch`` and marks
nothing: a forged or misdirected receipt never makes an event look delivered. Accepted receipts are kept
per event and issuer (table ``receipts`` next to ``sent_events`` in the outbox database, written once per
fetch); :func:`delivery_status` answers ``gateway status EVENT_ID`` from it and :meth:`DeliveryLedger.sweep`
sets ``xchg_unacknowledged_events`` and ``xchg_undelivered_events``.

Which receipts an event expects: from the recipients it is sealed for when it names any, else from every
party the registry lets read its topic (the publisher records them). ``delivered`` means verified and handed
to every sink that takes the type; ``withheld`` means verified and deliberately not handed on, because the
person withdrew or narrowed consent (``privacy.consent-withdrawn``): finished as the person wished, and said
so rather than signed as delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import structlog

from gateway.bus.database import Database, transaction
from gateway.bus.metrics import GatewayMetrics
from gateway.contract.envelope import Envelope
from gateway.contract.instants import format_utc
from gateway.contract.policy import parse_topic
from gateway.contract.receipt import (
    OUTCOMES,
    RECEIPT_TYPE,
    ReceiptOutcome,
    receipt_data,
    receipt_id,
    record_digest,
)
from gateway.contract.registry import Registry
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason, Rejected

__all__ = [
    "JOURNAL_FILE",
    "DeliveryLedger",
    "EventDelivery",
    "PartyReceipt",
    "ReceiptIssuer",
    "delivery_status",
    "summarise",
]

_log = structlog.get_logger(__name__)

JOURNAL_FILE: Final = "receipts.journal"
_JOURNAL_MODE: Final = 0o600
_EVENT_ID: Final = re.compile(r"[!-~]{1,256}")
#: Reasons a receipt can never be published for (the contract refuses it): dropped, never retried.
_DEFERRED: Final = frozenset({Reason.OUTBOX_FULL, Reason.OUTBOX_UNAVAILABLE, Reason.STOPPING})
_RECEIPTS_DDL: Final = """
CREATE TABLE IF NOT EXISTS receipts (
    event_id TEXT NOT NULL,
    party TEXT NOT NULL,
    receipt_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    finished_at TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (event_id, party, receipt_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_received ON receipts (received_at);
"""
_PENDING: Final = """
UPDATE sent_events SET pending = (
    SELECT count(*) FROM json_each(sent_events.expected) AS e
    WHERE e.value NOT IN (SELECT r.party FROM receipts AS r WHERE r.event_id = sent_events.event_id)
) WHERE event_id = ?
"""

#: Outcomes after which a recipient has done what it should with an event.
_FINISHED: Final = frozenset({"delivered", "withheld"})

Publish = Callable[..., Awaitable[Envelope]]
"""``Publisher.publish`` (called with ``event_id=`` and ``internal=True``)."""


# ---- the recipient's side ---------------------------------------------------------------------------------
class ReceiptIssuer:
    """Journals and publishes a receipt for every record the subscriber finishes (module docstring)."""

    def __init__(
        self,
        *,
        party: str,
        registry: Registry,
        publish: Publish,
        journal: Path,
        metrics: GatewayMetrics,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.party = party
        self.registry = registry
        self._publish = publish
        self.journal_path = journal
        self._metrics = metrics
        self._now = now
        self._journal: int | None = None
        self._pending: list[tuple[str, dict[str, Any]]] = []

    async def attach(self) -> None:
        """Open the journal; receipts left by a crash are queued again (published at the next flush)."""
        self._pending = _read_journal(self.journal_path)
        if self._pending:
            _log.info("receipt journal replayed", receipts=len(self._pending))
        self._journal = os.open(
            self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _JOURNAL_MODE
        )

    def close(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            os.close(journal)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def finished(
        self, record: Any, event: Envelope | None, outcome: ReceiptOutcome, reason: str | None
    ) -> None:
        """Journal the receipt for ``record`` (before its outcome is noted); published at :meth:`flush`."""
        if _topic_kind(record.topic) != "case_or_alert":
            return  # receipts are never receipted; nor is anything read outside the exchange topics
        event_type: str | None
        if event is not None:
            source, event_id, event_type = event.source, event.id, event.type
        else:
            claimed = _claimed(record.headers or ())
            claimed_source, claimed_id = claimed.get("ce_source"), claimed.get("ce_id")
            if claimed_source is None or claimed_id is None or self.registry.party(claimed_source) is None:
                return  # nobody to tell: the record names no registered source
            if claimed_source == self.party or not _EVENT_ID.fullmatch(claimed_id):
                return
            source, event_id, event_type = claimed_source, claimed_id, claimed.get("ce_type")
        digest = record_digest(record.key, record.value, record.headers or ())
        data = receipt_data(
            event_id=event_id, event_source=source, event_type=event_type, digest=digest,
            read_from=(record.topic, record.partition, record.offset), outcome=outcome, reason=reason,
            finished_at=format_utc(self._now()),
        )  # fmt: skip
        identifier = receipt_id(self.party, source, event_id, outcome, digest)
        if self._journal is None:
            raise RuntimeError("receipt issuer is not attached")
        line = orjson.dumps([identifier, data]) + b"\n"
        if os.write(self._journal, line) != len(line):  # a regular file takes it whole, or raises
            raise OSError(f"short write to {self.journal_path}")
        self._pending.append((identifier, data))
        self._metrics.receipts_issued.labels(outcome=outcome).inc()

    async def flush(self) -> None:
        """Commit the journaled receipts to the outbox (one group commit); then empty the journal.

        A receipt the contract refuses (it cannot happen with the receipts made here) is logged and dropped;
        when the outbox cannot take them now (full, unavailable, stopping) they stay queued and journaled
        and the first such error is raised (the subscriber treats it as infrastructure).
        """
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        results = await asyncio.gather(
            *(self._publish(RECEIPT_TYPE, data, event_id=rid, internal=True) for rid, data in batch),
            return_exceptions=True,
        )
        error: BaseException | None = None
        for (rid, data), result in zip(batch, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if isinstance(result, GatewayError) and result.reason not in _DEFERRED:
                _log.error("receipt refused by the contract; dropped", receipt_id=rid,
                           reason=str(result.reason), detail=result.detail)  # fmt: skip
                continue
            self._pending.append((rid, data))
            error = error or result
        if not self._pending and self._journal is not None:
            os.ftruncate(self._journal, 0)
        if error is not None:
            raise error


def _topic_kind(topic: str) -> str:
    try:
        kind = parse_topic(topic).kind
    except GatewayError:
        return "other"
    return "case_or_alert" if kind in ("case", "alert") else str(kind)


def _claimed(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """The CloudEvents headers a record carries once each, as text (for a rejected record's receipt)."""
    found: dict[str, str] = {}
    repeated: set[str] = set()
    for name, raw in headers:
        if name not in ("ce_source", "ce_id", "ce_type") or raw is None:
            continue
        if name in found:
            repeated.add(name)
        with contextlib.suppress(UnicodeDecodeError):
            found[name] = bytes(raw).decode("utf-8")
    return {k: v for k, v in found.items() if k not in repeated}


def _read_journal(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The receipts in a journal; a torn last line (a crash mid-write) ends the replay."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return []
    rows: list[tuple[str, dict[str, Any]]] = []
    for line in content.splitlines():
        try:
            identifier, data = orjson.loads(line)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            break
        if not isinstance(identifier, str) or not isinstance(data, dict):
            break
        rows.append((identifier, data))
    return rows


# ---- the sender's side ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Sent:
    topic: str
    type: str
    digest: str


class DeliveryLedger:
    """Matches receipts for our events to the outbox's ``sent_events`` (module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        party: str,
        registry: Registry,
        metrics: GatewayMetrics,
        retention_seconds: float = 30 * 86400,
    ) -> None:
        self._db = db
        self.party = party
        self.registry = registry
        self._metrics = metrics
        self.retention_seconds = retention_seconds
        self._facts: dict[str, _Sent | None] = {}
        self._rows: list[tuple[str, str, str, str, str | None, str, float]] = []

    async def attach(self) -> None:
        """Create the receipts table (the outbox, attached first, owns ``sent_events``)."""
        await self._db.run(lambda c: c.executescript(_RECEIPTS_DDL))

    async def prefetch(self, event_ids: Iterable[str]) -> None:
        """Look up the facts of several events in one query (the subscriber calls it once per fetch)."""
        wanted = [i for i in dict.fromkeys(event_ids) if i not in self._facts]
        if not wanted:
            return

        def query(connection: sqlite3.Connection) -> dict[str, _Sent]:
            found: dict[str, _Sent] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = "SELECT event_id, topic, type, record_sha256 FROM sent_events WHERE event_id IN "
                rows = connection.execute(f"{query}({marks})", chunk)
                found.update((row[0], _Sent(row[1], row[2], row[3])) for row in rows)
            return found

        found = await self._db.run(query)
        for event_id in wanted:
            self._facts[event_id] = found.get(event_id)

    async def take(self, accepted: Accepted) -> Rejected | None:
        """Check a verified receipt; queue it for :meth:`flush` (None) or say why it is refused."""
        data = accepted.data
        issuer = accepted.event.source
        if data.get("event_source") != self.party:
            return None  # a receipt for another party's event (we may read the topic): not ours
        event_id = str(data["event_id"])
        if event_id not in self._facts:
            await self.prefetch([event_id])
        sent = self._facts.get(event_id)
        if sent is None:
            return Rejected(
                Reason.RECEIPT_UNKNOWN_EVENT, f"{issuer} sent a receipt for an event this gateway never sent"
            )
        reader = self.registry.party(issuer)
        if reader is None or not reader.may_read(sent.topic):
            return Rejected(Reason.RECEIPT_NOT_A_RECIPIENT, f"{issuer} may not read {sent.topic}")
        read_from = data.get("read_from") or {}
        if data.get("record_sha256") != sent.digest or read_from.get("topic") != sent.topic:
            return Rejected(
                Reason.RECEIPT_DIGEST_MISMATCH,
                f"{issuer} names a record of event {event_id} that differs from the one this gateway sent",
            )
        outcome = str(data["outcome"])
        reason = data.get("reason")
        self._rows.append(
            (event_id, issuer, accepted.event.id, outcome, reason if isinstance(reason, str) else None,
             str(data["finished_at"]), time.time())
        )  # fmt: skip
        self._metrics.receipts_received.labels(outcome=outcome).inc()
        return None

    async def flush(self) -> None:
        """Write the queued receipts in one transaction and update what each event still waits for."""
        self._facts.clear()
        if not self._rows:
            return
        rows, self._rows = self._rows, []

        def write(connection: sqlite3.Connection) -> None:
            def work(c: sqlite3.Connection) -> None:
                c.executemany(
                    "INSERT OR IGNORE INTO receipts (event_id, party, receipt_id, outcome, reason, "
                    "finished_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                c.executemany(_PENDING, [(event_id,) for event_id in {row[0] for row in rows}])

            transaction(connection, work)

        try:
            await self._db.run(write)
        except BaseException:
            self._rows = rows + self._rows
            raise

    async def sweep(
        self, *, unacknowledged_after: float, now: float | None = None
    ) -> tuple[int, dict[str, int]]:
        """Set the gauges and prune what is older than the retention; returns the number of unacknowledged
        events and the undelivered ones by outcome."""
        instant = time.time() if now is None else now

        def work(connection: sqlite3.Connection) -> tuple[int, dict[str, int]]:
            cutoff = instant - self.retention_seconds
            transaction(connection, lambda c: (
                c.execute("DELETE FROM sent_events WHERE created_at < ?", (cutoff,)),
                c.execute("DELETE FROM receipts WHERE received_at < ?", (cutoff,)),
            ))  # fmt: skip
            (late,) = connection.execute(
                "SELECT count(*) FROM sent_events WHERE pending > 0 AND created_at < ?",
                (instant - unacknowledged_after,),
            ).fetchone()
            undelivered = dict(
                connection.execute(
                    "SELECT r.outcome, count(DISTINCT r.event_id) FROM receipts AS r "
                    "WHERE r.outcome IN ('rejected', 'dead-lettered') AND NOT EXISTS (SELECT 1 FROM receipts "
                    "AS d WHERE d.event_id = r.event_id AND d.party = r.party AND d.outcome = 'delivered') "
                    "GROUP BY r.outcome"
                ).fetchall()
            )
            return int(late), {str(k): int(v) for k, v in undelivered.items()}

        late, undelivered = await self._db.run(work)
        self._metrics.unacknowledged.set(late)
        for outcome in OUTCOMES:
            if outcome in ("rejected", "dead-lettered"):
                self._metrics.undelivered.labels(outcome=outcome).set(undelivered.get(outcome, 0))
        return late, undelivered

    async def deliveries(self) -> list[EventDelivery]:
        """Every tracked event with its receipts (the demo's summary; small deployments)."""

        def read(connection: sqlite3.Connection) -> list[EventDelivery]:
            return _deliveries(connection, None)

        return await self._db.run(read)


# ---- what `gateway status EVENT_ID` shows -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartyReceipt:
    party: str
    outcome: str
    reason: str | None
    finished_at: str
    receipt_id: str
    received_at: float


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """One of our events as the sender's gateway knows it: where it went and which receipts came back."""

    event_id: str
    topic: str
    type: str
    record_sha256: str
    expected: tuple[str, ...]
    created_at: float
    sent_at: float | None
    """When the broker acknowledged it (None: not yet, or the outbox row was pruned)."""
    in_outbox: bool
    receipts: tuple[PartyReceipt, ...] = field(default=())

    def state(self) -> dict[str, str]:
        """Per party (expected or heard from): ``delivered``, ``withheld``, ``rejected``, ``dead-lettered`` or
        ``waiting``.

        A party's ``delivered`` receipt wins over its earlier failures (a re-drive delivered the event)."""
        states: dict[str, str] = dict.fromkeys(self.expected, "waiting")
        for receipt in sorted(self.receipts, key=lambda r: (r.finished_at, r.received_at)):
            if states.get(receipt.party) != "delivered":
                states[receipt.party] = receipt.outcome
        return states

    @property
    def complete(self) -> bool:
        """Every expected party finished it as it should: delivered, or withheld by the person's consent."""
        states = self.state()
        return all(states.get(party) in _FINISHED for party in self.expected)


def delivery_status(outbox_db: Path, event_id: str) -> EventDelivery | None:
    """Read ``event_id``'s delivery state from a gateway's outbox database (read-only; safe while the
    gateway runs). None when the gateway has no record of sending it."""
    if not outbox_db.is_file():
        raise GatewayError(Reason.CONFIG_INVALID, f"{outbox_db} does not exist (is data_dir right?)")
    uri = f"{outbox_db.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            found = _deliveries(connection, event_id)
    except sqlite3.Error as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {outbox_db}: {exc}") from exc
    return found[0] if found else None


_EVENTS: Final = (
    "SELECT s.event_id, s.topic, s.type, s.record_sha256, s.expected, s.created_at, o.sent_at, "
    "o.event_id IS NOT NULL FROM sent_events AS s LEFT JOIN outbox AS o ON o.event_id = s.event_id "
)
_RECEIPTS: Final = (
    "SELECT event_id, party, outcome, reason, finished_at, receipt_id, received_at FROM receipts "
)


def _deliveries(connection: sqlite3.Connection, event_id: str | None) -> list[EventDelivery]:
    if event_id is None:
        events = connection.execute(_EVENTS + "ORDER BY s.created_at").fetchall()
        rows = connection.execute(_RECEIPTS + "ORDER BY finished_at, received_at")
    else:
        events = connection.execute(_EVENTS + "WHERE s.event_id = ?", (event_id,)).fetchall()
        rows = connection.execute(
            _RECEIPTS + "WHERE event_id = ? ORDER BY finished_at, received_at", (event_id,)
        )
    receipts: dict[str, list[PartyReceipt]] = {}
    for row in rows:
        receipts.setdefault(row[0], []).append(PartyReceipt(*row[1:]))
    return [_delivery(row, receipts.get(row[0], ())) for row in events]


def _delivery(row: Sequence[Any], receipts: Iterable[PartyReceipt]) -> EventDelivery:
    expected = tuple(orjson.loads(row[4]))
    return EventDelivery(
        event_id=row[0], topic=row[1], type=row[2], record_sha256=row[3], expected=expected,
        created_at=row[5], sent_at=row[6], in_outbox=bool(row[7]), receipts=tuple(receipts),
    )  # fmt: skip


def summarise(deliveries: Sequence[EventDelivery]) -> Mapping[str, Mapping[str, int]]:
    """Per party, how many of ``deliveries`` it delivered, withheld, rejected, dead-lettered or has not
    answered."""
    table: dict[str, dict[str, int]] = {}
    for delivery in deliveries:
        for party, state in delivery.state().items():
            row = table.setdefault(
                party, {"delivered": 0, "withheld": 0, "rejected": 0, "dead-lettered": 0, "waiting": 0}
            )
            row[state] = row.get(state, 0) + 1
    return table
