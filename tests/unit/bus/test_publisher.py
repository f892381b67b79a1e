"""The publisher without a broker: a real outbox on SQLite, real signed events, a fake producer.

KBRI Kuching publishes network alerts. ``publish`` must refuse with ``gateway.stopping`` once intake is
stopped and with ``outbox.full`` at the backlog limit, committing nothing in either case; the sender must
mark an entry sent only once the producer acknowledged it, and keep (and send again) what the broker did
not take. :class:`tests.doubles.FakeProducer` with ``auto_ack=False`` holds the acknowledgements back so a
test can look at the outbox between hand-over and acknowledgement; no test sleeps (the sender's retry
backoff is 0, and the tests wait on the producer's hand-overs and on the sender task itself).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.bus.database import Database
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from tests.doubles import FakeProducer, FakeRecord
from tests.world import World, example

PARTY = "kemlu.kbri-kuching"
ALERT = "id.trafficking.alert.network"
TOPIC = "xchg.kemlu.kbri-kuching.alert.v1"


@dataclass
class Writer:
    """KBRI Kuching's publisher over a real outbox."""

    publisher: Publisher
    outbox: Outbox
    database: Database
    metrics: GatewayMetrics

    async def publish(self, number: int) -> str:
        (_, payload), *_ = example("alert.network", "1.0")
        event = await self.publisher.publish(ALERT, {**payload, "alert_id": f"ALR-P-2020-{number:06d}"})
        return event.id

    async def pending(self) -> list[str]:
        return [entry.event_id for entry in await self.outbox.pending(100)]

    def start_sender(self, producer: FakeProducer) -> tuple[asyncio.Task[None], asyncio.Event]:
        stop = asyncio.Event()
        return asyncio.create_task(self.publisher.run_sender(producer, stop)), stop

    async def drain(self, producer: FakeProducer) -> None:
        """Run the sender until the outbox is empty (``stop`` set from the start: it returns then)."""
        stop = asyncio.Event()
        stop.set()
        await asyncio.wait_for(self.publisher.run_sender(producer, stop), timeout=10)


async def open_writer(directory: Path, world: World, *, max_backlog: int = 100) -> Writer:
    database = Database(directory / "outbox.db", durable=True)
    await database.open()
    outbox = Outbox(database, max_backlog=max_backlog)
    await outbox.attach()
    metrics = GatewayMetrics(party=PARTY)
    member = world.members[PARTY]
    publisher = Publisher(
        signer=member.signer,
        registry=world.registry,
        schemas=world.schemas,
        outbox=outbox,
        metrics=metrics,
        retry_backoff=0.0,  # the sender's backoff after a failed send: asyncio.sleep(0), no waiting
        max_backoff=0.0,
    )
    return Writer(publisher, outbox, database, metrics)


@pytest.fixture
async def writer(tmp_path: Path, world: World) -> AsyncIterator[Writer]:
    opened = await open_writer(tmp_path, world)
    yield opened
    await opened.database.close()


def published_total(metrics: GatewayMetrics) -> float:
    return metrics.registry.get_sample_value("xchg_published_total", {"type": ALERT}) or 0.0


# ---- publish: accepted or refused -------------------------------------------------------------------------


async def test_publish_commits_a_signed_record_the_reader_accepts(writer: Writer, world: World) -> None:
    event_id = await writer.publish(1)
    [entry] = await writer.outbox.pending(10)
    assert (entry.event_id, entry.topic) == (event_id, TOPIC)
    assert writer.outbox.depth == 1
    record = FakeRecord(entry.topic, 0, 0, entry.key, entry.value, entry.headers)
    verdict = world.verifier("kemensos").verify_kafka(record.value, record.headers, record.key)
    assert isinstance(verdict, Accepted), verdict
    assert (verdict.event.id, verdict.event.source) == (event_id, PARTY)


async def test_publish_is_refused_with_gateway_stopping_after_stop_intake(writer: Writer) -> None:
    first = await writer.publish(1)
    writer.publisher.stop_intake()
    with pytest.raises(GatewayError) as caught:
        await writer.publish(2)
    assert caught.value.reason is Reason.STOPPING
    assert await writer.pending() == [first]  # nothing of the refused event was committed
    assert writer.outbox.depth == 1


async def test_publish_is_refused_with_outbox_full_at_the_backlog_limit(tmp_path: Path, world: World) -> None:
    writer = await open_writer(tmp_path, world, max_backlog=2)
    try:
        accepted = [await writer.publish(1), await writer.publish(2)]
        with pytest.raises(GatewayError) as caught:
            await writer.publish(3)
        assert caught.value.reason is Reason.OUTBOX_FULL
        assert await writer.pending() == accepted

        await writer.drain(FakeProducer())  # the limit counts unsent events: once they are sent ...
        assert writer.outbox.depth == 0
        assert await writer.pending() == []
        fourth = await writer.publish(4)  # ... publish takes events again
        assert await writer.pending() == [fourth]
    finally:
        await writer.database.close()


# ---- the sender -------------------------------------------------------------------------------------------


async def test_the_sender_marks_entries_sent_only_after_the_producer_acknowledged(writer: Writer) -> None:
    ids = [await writer.publish(1), await writer.publish(2)]
    producer = FakeProducer(auto_ack=False)
    task, stop = writer.start_sender(producer)
    try:
        await asyncio.wait_for(producer.wait_for_attempts(2), timeout=10)
        # handed to the producer, not acknowledged: still unsent, on disk
        assert producer.unacked == 2
        assert await writer.pending() == ids
        assert writer.outbox.depth == 2
        assert writer.publisher.sent_total == 0
        assert published_total(writer.metrics) == 0

        stop.set()  # the sender returns once the outbox is empty
        producer.ack()
        await asyncio.wait_for(task, timeout=10)
    finally:
        await _cancel(task)
    assert await writer.pending() == []
    assert writer.outbox.depth == 0
    assert writer.publisher.sent_total == 2
    assert published_total(writer.metrics) == 2
    assert [_event_id(record.headers) for record in producer.sent] == ids  # in commit order
    assert {record.topic for record in producer.sent} == {TOPIC}


async def test_a_record_the_broker_did_not_take_stays_in_the_outbox_and_is_sent_again(writer: Writer) -> None:
    first, second, third = [await writer.publish(n) for n in (1, 2, 3)]
    producer = FakeProducer(auto_ack=False)
    task, stop = writer.start_sender(producer)
    try:
        await asyncio.wait_for(producer.wait_for_attempts(3), timeout=10)
        producer.ack(1)
        producer.nack(1)  # the broker refused the second record (e.g. NOT_LEADER_FOR_PARTITION)
        producer.ack(1)
        await asyncio.wait_for(producer.wait_for_attempts(4), timeout=10)
        # the acknowledged ones are marked sent; the refused one is unsent and handed over again
        assert _event_id(producer.attempts[3].headers) == second
        assert await writer.pending() == [second]
        assert writer.outbox.depth == 1

        stop.set()
        producer.ack()
        await asyncio.wait_for(task, timeout=10)
    finally:
        await _cancel(task)
    assert [_event_id(record.headers) for record in producer.sent] == [first, third, second]
    assert await writer.pending() == []
    assert published_total(writer.metrics) == 3  # each acknowledged once


async def test_sent_total_counts_the_acknowledged_entries_of_a_partly_failed_batch(writer: Writer) -> None:
    for n in (1, 2):
        await writer.publish(n)
    producer = FakeProducer(auto_ack=False)
    task, stop = writer.start_sender(producer)
    try:
        await asyncio.wait_for(producer.wait_for_attempts(2), timeout=10)
        producer.ack(1)
        producer.nack(1)
        await asyncio.wait_for(producer.wait_for_attempts(3), timeout=10)
        stop.set()
        producer.ack()
        await asyncio.wait_for(task, timeout=10)
    finally:
        await _cancel(task)
    assert published_total(writer.metrics) == 2
    assert writer.publisher.sent_total == 2


async def test_a_send_that_fails_at_once_is_retried(writer: Writer) -> None:
    event_id = await writer.publish(1)
    producer = FakeProducer(fail_sends=2)
    await writer.drain(producer)
    assert [call[0] for call in producer.calls] == ["send", "send-failed", "send", "send-failed", "send"]
    assert [_event_id(record.headers) for record in producer.sent] == [event_id]
    assert await writer.pending() == []


def _event_id(headers: list[tuple[str, bytes]]) -> str:
    return next(value.decode("utf-8") for name, value in headers if name == "ce_id")


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if a failed assertion left it running, and wait for it (never leave it pending)."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class _RaisingOnce(FakeProducer):
    """aiokafka's ``send`` can raise itself (metadata timeout, full buffer) after earlier records of the same
    batch were handed over; this one raises at the ``raise_at``-th call (1-based), once."""

    raise_at: int = 2

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        if len(self.attempts) + 1 == self.raise_at and not any(c[0] == "send-raised" for c in self.calls):
            self.calls.append(("send-raised", topic))
            raise self.error()
        return await super().send(topic, value, key, headers)


async def test_records_handed_over_before_a_send_raised_are_not_sent_twice(writer: Writer) -> None:
    ids = [await writer.publish(n) for n in (1, 2, 3)]
    producer = _RaisingOnce()
    await writer.drain(producer)
    assert ("send-raised", producer.calls[1][1]) in producer.calls
    assert sorted(_event_id(record.headers) for record in producer.sent) == sorted(ids)  # each exactly once
    assert writer.publisher.sent_total == 3
    assert await writer.pending() == []
