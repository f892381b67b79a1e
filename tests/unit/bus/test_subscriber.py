"""The subscriber's consume loop without a broker: a real inbox on SQLite, real signed events, fake Kafka.

Kemensos reads KBRI Kuching's alert topic. The Kafka client is :class:`tests.doubles.FakeConsumer` and
:class:`tests.doubles.FakeProducer`; the inbox is the real one on a SQLite file under ``tmp_path``, wrapped
only to write its ``note``/``settle`` calls into the same call list as the fetches, produces, commits and
sink deliveries, so each test can assert the order in which they happened. What is checked (the module
docstring of :mod:`gateway.bus.subscriber` states the contract):

* a rejected record goes to the dead-letter topic with its reason code and its original key, value and
  headers, and the records after it still flow;
* an offset is committed only once the outcomes of the records before it are settled in the inbox database;
* a dead-letter produce that fails is retried, and nothing is committed until it lands;
* a failed commit is retried with the next one;
* an event (``source``, ``id``) is delivered once, also when redelivered after a restart, while the same
  ``id`` from another source is another event;
* a permanent sink failure is dead-lettered at once as ``sink.refused`` and remembered in the inbox
  (outages, where the sink fails transiently, are tests/unit/bus/test_outage.py).

No test sleeps: the dead-letter backoff is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from gateway.bus.database import Database
from gateway.bus.delivery import RetryPolicy, SinkError
from gateway.bus.inbox import Inbox, Outcome
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.subscriber import DLQ_HEADERS, Route, Subscriber
from gateway.contract.envelope import Envelope
from gateway.contract.keys import SigningKey
from gateway.contract.policy import dlq_topic
from gateway.contract.sign import EventSigner
from gateway.contract.verify import Accepted
from gateway.errors import Reason
from tests.doubles import Call, FakeConsumer, FakeProducer, FakeRecord
from tests.world import World, example, recent

READER = "kemensos"
KCH = "kemlu.kbri-kuching"
KL = "kemlu.kbri-kuala-lumpur"
ALERT = "id.trafficking.alert.network"
DLQ = dlq_topic(READER)  # xchg.kemensos.dlq.v1
TP = TopicPartition("xchg.kemlu.kbri-kuching.alert.v1", 0)
TP_KL = TopicPartition("xchg.kemlu.kbri-kuala-lumpur.alert.v1", 0)


# ---- the reader's pieces ----------------------------------------------------------------------------------


class RecordingInbox(Inbox):
    """The real inbox; each ``note`` and ``settle`` is also written into the shared call list."""

    def __init__(self, db: Database, calls: list[Call]) -> None:
        super().__init__(db)
        self.calls = calls

    def note(self, source: str, event_id: str, outcome: Outcome) -> None:
        super().note(source, event_id, outcome)
        self.calls.append(("note", event_id, outcome))

    async def settle(self) -> None:
        await super().settle()
        self.calls.append(("settle",))


@dataclass
class ScriptedSink:
    """An agency system: logs every attempt into the shared call list and fails as scripted per event id."""

    calls: list[Call]
    name: str = "kemensos-case-system"
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    down: Exception | None = None
    """While set, every delivery fails with it (the agency system is down)."""

    async def deliver(self, accepted: Accepted) -> None:
        event_id = accepted.event.id
        self.attempts[event_id] += 1
        self.calls.append(("deliver", event_id))
        if self.down is not None:
            raise self.down
        script = self.failures.get(event_id)
        if script:
            raise script.pop(0)
        self.delivered.append(event_id)

    async def close(self) -> None:
        return None


def settled_outcomes(database: Path) -> dict[str, str]:
    """Event id -> outcome as the inbox *database* holds it (not its journal): what settle wrote."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return dict(connection.execute("SELECT id, outcome FROM inbox").fetchall())


@dataclass
class CheckingConsumer(FakeConsumer):
    """A :class:`FakeConsumer` that looks into the inbox database at every commit."""

    database: Path | None = None
    settled_at_commit: list[dict[str, str]] = field(default_factory=list)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        assert self.database is not None
        self.settled_at_commit.append(settled_outcomes(self.database))
        await super().commit(offsets)


@dataclass
class Reader:
    """Kemensos's subscriber over a real inbox, with the Kafka fakes and a scripted sink."""

    subscriber: Subscriber
    inbox: RecordingInbox
    database: Database
    sink: ScriptedSink
    producer: FakeProducer
    metrics: GatewayMetrics
    calls: list[Call]

    def consumer(self, *fetches: dict[TopicPartition, list[FakeRecord]]) -> CheckingConsumer:
        return CheckingConsumer(list(fetches), asyncio.Event(), calls=self.calls, database=self.database.path)

    async def consume(self, *fetches: dict[TopicPartition, list[FakeRecord]]) -> CheckingConsumer:
        """Run the loop over ``fetches`` until the consumer has none left (it then sets ``stop``)."""
        consumer = self.consumer(*fetches)
        await asyncio.wait_for(self.subscriber.run(consumer, self.producer, consumer.stop), timeout=30)
        return consumer

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels`` (all of them by default)."""
        return sum(
            sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def dead_letters(self) -> list[FakeRecord]:
        return [
            FakeRecord(p.topic, 0, 0, p.key, p.value, p.headers) for p in self.producer.sent if p.topic == DLQ
        ]

    async def close(self) -> None:
        self.inbox.close()
        await self.database.close()


async def open_reader(
    directory: Path,
    world: World,
    *,
    retry: RetryPolicy | None = None,
    clock: Callable[[], float] | None = None,
    routes: Callable[[list[Call]], list[Route]] | None = None,
) -> Reader:
    """Kemensos's reader; ``routes(calls)`` replaces the one scripted sink taking every type (the first
    route's sink is then :attr:`Reader.sink`)."""
    calls: list[Call] = []
    database = Database(directory / "inbox.db", durable=False)
    await database.open()
    inbox = RecordingInbox(database, calls)
    await inbox.attach()
    chosen = routes(calls) if routes is not None else [Route(ScriptedSink(calls))]
    sink = chosen[0].sink
    assert isinstance(sink, ScriptedSink)
    metrics = GatewayMetrics(party=READER)
    subscriber = Subscriber(
        party=READER,
        verifier=world.verifier(READER),
        inbox=inbox,
        routes=chosen,
        dlq_topic=DLQ,
        metrics=metrics,
        retry=retry,
        error_backoff=0.0,  # the dead-letter retry loop's asyncio.sleep(0): no waiting in these tests
        **({"clock": clock} if clock is not None else {}),
    )
    return Reader(subscriber, inbox, database, sink, FakeProducer(calls=calls), metrics, calls)


@pytest.fixture
async def reader(tmp_path: Path, world: World) -> AsyncIterator[Reader]:
    opened = await open_reader(tmp_path, world)
    yield opened
    await opened.close()


def alert(world: World, number: int, *, by: str = KCH, event_id: str | None = None) -> Envelope:
    (_, payload), *_ = example("alert.network", "1.0")
    return world.event(
        ALERT, {**payload, "alert_id": f"ALR-T-2020-{number:06d}"}, by=by, event_id=event_id, now=recent(1)
    )


def header(record: FakeRecord, name: str) -> str:
    values = [value for key, value in record.headers if key == name]
    assert len(values) == 1, (name, record.headers)
    return values[0].decode("utf-8")


# ---- rejected records -------------------------------------------------------------------------------------


def _unsigned(world: World) -> FakeRecord:
    event = alert(world, 90)
    attributes = {k: v for k, v in event.attributes().items() if k not in ("dssematerial", "signedextattrs")}
    return FakeRecord.of(Envelope.from_attributes(attributes, event.data), TP, 0)


def _not_canonical(world: World) -> FakeRecord:
    record = FakeRecord.of(alert(world, 91), TP, 0)
    record.value = (record.value or b"") + b" "  # the same JSON value, no longer its RFC 8785 form
    return record


def _ghost_key(world: World) -> FakeRecord:
    ghost = EventSigner(party=KCH, kid=f"{KCH}-sig-ghost", key=SigningKey.generate())
    (_, payload), *_ = example("alert.network", "1.0")
    return FakeRecord.of(world.event(ALERT, payload, by=KCH, signer=ghost), TP, 0)


def _spoofed_source(world: World) -> FakeRecord:
    """Signed with Kemensos's registered key, claiming to come from KBRI Kuching."""
    own = world.members[READER].signer
    stolen = EventSigner(party=KCH, kid=own.kid, key=own.key)
    (_, payload), *_ = example("alert.network", "1.0")
    return FakeRecord.of(world.event(ALERT, payload, by=KCH, signer=stolen), TP, 0)


def _garbage(_world: World) -> FakeRecord:
    return FakeRecord(TP.topic, 0, 0, b"junk", b"\xff\xfe\x00 garbage \xc3\x28", [])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_unsigned, Reason.SIG_MISSING),
        (_not_canonical, Reason.CE_DATA_NOT_CANONICAL),
        (_ghost_key, Reason.KEY_UNKNOWN),
        (_spoofed_source, Reason.KEY_WRONG_PARTY),
        (_garbage, Reason.PARSE_UTF8),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)).strip("_"),
)
async def test_a_rejected_record_is_dead_lettered_with_its_reason_and_original_bytes(
    reader: Reader, world: World, make: Callable[[World], FakeRecord], reason: Reason
) -> None:
    bad = make(world)
    bad.offset = 7
    good = alert(world, 1)
    consumer = await reader.consume({TP: [bad, FakeRecord.of(good, TP, 8)]})

    [dead] = reader.dead_letters()
    assert header(dead, "xchg-reason") == reason
    assert (dead.key, dead.value) == (bad.key, bad.value)  # the original bytes, as they were
    assert dead.headers[: len(bad.headers)] == bad.headers
    assert [name for name, _ in dead.headers[len(bad.headers) :]] == list(DLQ_HEADERS)
    assert (header(dead, "xchg-origin-topic"), header(dead, "xchg-origin-partition")) == (TP.topic, "0")
    assert header(dead, "xchg-origin-offset") == "7"
    assert header(dead, "xchg-dead-lettered-by") == READER
    assert header(dead, "xchg-detail")
    assert reader.metric("xchg_rejected_total", reason=str(reason)) == 1
    assert reader.metric("xchg_dead_lettered_total", reason=str(reason)) == 1

    assert reader.sink.delivered == [good.id]  # the record after it still flows
    assert consumer.commits == [{TP: 9}]  # and the offset moves past both


# ---- offsets and the inbox --------------------------------------------------------------------------------


async def test_offsets_are_committed_only_after_the_outcomes_are_settled_in_the_inbox(
    reader: Reader, world: World
) -> None:
    one, two, three = alert(world, 1), alert(world, 2), alert(world, 3, by=KL)
    fetch = {
        TP: [FakeRecord.of(one, TP, 5), FakeRecord.of(two, TP, 6)],
        TP_KL: [FakeRecord.of(three, TP_KL, 0)],
    }
    consumer = await reader.consume(fetch)

    assert reader.calls == [
        ("getmany", 3),
        ("deliver", one.id),
        ("note", one.id, "delivered"),
        ("deliver", two.id),
        ("note", two.id, "delivered"),
        ("deliver", three.id),
        ("note", three.id, "delivered"),
        ("settle",),
        ("commit", {TP: 7, TP_KL: 1}),  # the next offset to read, per partition
        ("getmany", 0),
    ]
    # what a restarted reader would find in the database when the commit was made
    delivered = dict.fromkeys([one.id, two.id, three.id], "delivered")
    assert consumer.settled_at_commit == [delivered]


async def test_a_failed_dead_letter_produce_is_retried_and_nothing_is_committed_meanwhile(
    reader: Reader, world: World
) -> None:
    bad = _not_canonical(world)
    good = alert(world, 1)
    reader.producer.fail_sends = 2
    consumer = await reader.consume({TP: [bad, FakeRecord.of(good, TP, 1)]})

    assert reader.calls == [
        ("getmany", 2),
        ("send_and_wait", DLQ),
        ("send_and_wait-failed", DLQ),
        ("send_and_wait", DLQ),
        ("send_and_wait-failed", DLQ),
        ("send_and_wait", DLQ),  # lands at the third attempt; only then does the loop go on
        ("deliver", good.id),
        ("note", good.id, "delivered"),
        ("settle",),
        ("commit", {TP: 2}),
        ("getmany", 0),
    ]
    assert len(reader.dead_letters()) == 1
    assert consumer.commits == [{TP: 2}]
    assert reader.metric("xchg_dead_lettered_total", reason="ce.data-not-canonical") == 1  # counted once


async def test_a_failed_commit_is_made_again_at_the_next_commit(reader: Reader, world: World) -> None:
    """The records are safe in the inbox, so a failed commit does not stop the loop; the offsets it did not
    commit are committed by the next commit, even when nothing new was handled in between."""
    one = alert(world, 1)
    consumer = reader.consumer({TP: [FakeRecord.of(one, TP, 0)]})
    consumer.fail_commits = 1
    await asyncio.wait_for(reader.subscriber.run(consumer, reader.producer, consumer.stop), timeout=30)

    assert [call for call in reader.calls if call[0].startswith("commit")] == [
        ("commit-failed", {TP: 1}),
        ("commit", {TP: 1}),
    ]
    assert consumer.commits == [{TP: 1}]
    assert reader.sink.delivered == [one.id]


# ---- duplicates -------------------------------------------------------------------------------------------


async def test_a_redelivered_event_is_not_delivered_again_after_a_restart(
    tmp_path: Path, world: World
) -> None:
    """A crash after the outcomes were settled and before the commit: the next reader gets the same records
    again (and, redelivered within one fetch, the same event twice); none reaches the sink a second time."""
    one, two, three = alert(world, 1), alert(world, 2), alert(world, 3)
    first = await open_reader(tmp_path, world)
    try:
        first.sink.failures[two.id] = [SinkError("agency refuses it", retryable=False, status=422)]
        consumer = first.consumer({TP: [FakeRecord.of(one, TP, 0), FakeRecord.of(two, TP, 1)]})
        consumer.fail_commits = 2  # the commit never lands: Kafka will deliver both records again
        await asyncio.wait_for(first.subscriber.run(consumer, first.producer, consumer.stop), timeout=30)
        assert consumer.commits == []
        assert first.sink.delivered == [one.id]
        assert len(first.dead_letters()) == 1
    finally:
        await first.close()

    again = await open_reader(tmp_path, world)  # a new process on the same inbox database
    try:
        redelivered = [FakeRecord.of(e, TP, offset) for offset, e in enumerate([one, two, three, one])]
        consumer = await again.consume({TP: redelivered})
        assert again.sink.attempts == {three.id: 1}  # only the new event reaches the sink
        assert again.dead_letters() == []  # the event dead-lettered before is not dead-lettered again
        assert again.metric("xchg_duplicates_total") == 3
        assert consumer.commits == [{TP: 4}]
    finally:
        await again.close()


async def test_the_same_id_from_another_source_is_another_event(reader: Reader, world: World) -> None:
    """Deduplication is by (source, id): an id is only unique within its source (CloudEvents)."""
    kch = alert(world, 1, event_id="7b0e4a52-1111-4c61-9a57-0f1e2d3c4b01")
    kl = alert(world, 2, by=KL, event_id=kch.id)
    await reader.consume({TP: [FakeRecord.of(kch, TP, 0)], TP_KL: [FakeRecord.of(kl, TP_KL, 0)]})

    assert reader.sink.delivered == [kch.id, kl.id]
    assert await reader.inbox.seen([(KCH, kch.id), (KL, kl.id)]) == {(KCH, kch.id), (KL, kl.id)}
    assert reader.metric("xchg_duplicates_total") == 0


# ---- a permanent refusal ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (SinkError("sink kemensos-case-system: HTTP 422", retryable=False, status=422), "HTTP 422"),
        (RuntimeError("an adapter bug"), "unexpected RuntimeError"),  # converted at the boundary
    ],
    ids=["refused", "adapter-bug"],
)
async def test_a_permanent_sink_failure_is_dead_lettered_at_once_as_sink_refused(
    reader: Reader, world: World, error: Exception, detail: str
) -> None:
    event, after = alert(world, 1), alert(world, 2)
    reader.sink.failures[event.id] = [error]
    consumer = await reader.consume({TP: [FakeRecord.of(event, TP, 0), FakeRecord.of(after, TP, 1)]})

    assert reader.sink.attempts[event.id] == 1  # never retried: the system answered, it will not take it
    [dead] = reader.dead_letters()
    assert header(dead, "xchg-reason") == "sink.refused"
    assert detail in header(dead, "xchg-detail")
    assert reader.metric("xchg_dead_lettered_total", reason="sink.refused") == 1
    assert reader.metric("xchg_rejected_total") == 0  # it passed verification: not a rejection
    assert reader.sink.delivered == [after.id]
    assert settled_outcomes(reader.database.path) == {event.id: "dead-lettered", after.id: "delivered"}
    assert consumer.commits == [{TP: 2}]
    assert reader.subscriber.sink_states() == [(reader.sink.name, "closed", 0, 0.0, 0)]


async def test_an_event_consent_withholds_is_receipted_withheld_not_delivered(
    reader: Reader, world: World
) -> None:
    """The receipt of an event the consent gate kept from the agency system says ``withheld`` with
    ``privacy.consent-withdrawn``: signed evidence never claims a delivery that did not happen."""
    withheld, delivered = alert(world, 1), alert(world, 2)
    told: list[tuple[str, str, str | None]] = []

    class Told:
        def finished(self, record: object, event: Envelope | None, outcome: str, reason: str | None) -> None:
            assert event is not None
            told.append((event.id, outcome, reason))

        async def flush(self) -> None:
            return None

    reader.subscriber.finished = Told()
    reader.subscriber.withholding = lambda accepted: accepted.event.id == withheld.id
    await reader.consume({TP: [FakeRecord.of(withheld, TP, 0), FakeRecord.of(delivered, TP, 1)]})

    assert told == [
        (withheld.id, "withheld", "privacy.consent-withdrawn"),
        (delivered.id, "delivered", None),
    ]
