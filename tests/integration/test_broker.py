"""The bus foundations against a real broker: round trips, topics, groups, freezing, restarts, TLS.

Each test uses its own topics and groups. Timing is asserted only with bounds (``asyncio.timeout``), never
with sleeps; the one negative check ("not done while the broker is frozen") waits a bounded half second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError, UnknownError
from aiokafka.structs import ConsumerRecord, TopicPartition

from gateway.bus.admin import ensure_topics
from gateway.bus.connectivity import check_connection
from gateway.bus.kafka import KafkaSettings, TlsSettings
from gateway.contract.policy import dlq_topic, parse_topic, topic_for
from gateway.errors import GatewayError, Reason
from gateway.runtime.producer import close_producer
from gateway.sandbox.broker import EmbeddedBroker, free_port
from tests.integration.conftest import TlsProxy, make_ca

TopicFactory = Callable[[str], str]


async def consume(consumer: AIOKafkaConsumer, count: int, limit_s: float = 20.0) -> list[ConsumerRecord]:
    """Exactly ``count`` records (fails on timeout), in partition order."""
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(limit_s):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=count - len(records))
            for part in batch.values():
                records.extend(part)
    return records


def plain_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=(bootstrap,), enable_idempotence=False, request_timeout_ms=10_000)


# -- round trip ------------------------------------------------------------------------------------------


async def test_round_trip_keeps_keys_headers_and_order(
    kafka_settings: KafkaSettings, unique_topic: TopicFactory
) -> None:
    topic = unique_topic("rt")
    await ensure_topics(kafka_settings.admin_kwargs(), [topic], partitions=3, replication=1)
    headers = [
        ("ce_id", b"e-1"),
        ("ce_source", b"kemensos"),
        ("ce_type", b"id.trafficking.case.referral"),
        ("content-type", b"application/json"),
        ("ce_partitionkey", "kasus-ñ-1".encode()),
        ("x-repeated", b"one"),
        ("x-repeated", b"two"),
        ("x-empty", b""),
    ]
    sent: list[tuple[bytes, bytes]] = [(f"case-{i % 2}".encode(), f'{{"n":{i}}}'.encode()) for i in range(6)]
    producer = AIOKafkaProducer(**kafka_settings.producer_kwargs())
    await producer.start()
    try:
        metas = [await producer.send_and_wait(topic, value, key=key, headers=headers) for key, value in sent]
    finally:
        await producer.stop()
    by_key = {k: {m.partition for m, (key, _) in zip(metas, sent, strict=True) if key == k} for k, _ in sent}
    assert all(len(parts) == 1 for parts in by_key.values()), "one key must map to one partition"

    consumer = AIOKafkaConsumer(**kafka_settings.consumer_kwargs(None))
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        for p in range(3):
            consumer.seek(TopicPartition(topic, p), 0)
        records = await consume(consumer, len(sent))
    finally:
        await consumer.stop()
    assert all(list(r.headers) == headers for r in records)
    for key in by_key:
        assert [r.value for r in records if r.key == key] == [v for k, v in sent if k == key]


# -- topics ----------------------------------------------------------------------------------------------


async def test_ensure_topics_is_idempotent_and_checks_shape(
    kafka_settings: KafkaSettings, unique_topic: TopicFactory
) -> None:
    party = f"it{unique_topic('p').rsplit('.', 1)[1][:12]}.post-a"
    names = [topic_for(party, "case", 1), topic_for(party, "alert", 1), dlq_topic(party)]
    assert [str(parse_topic(n)) for n in names] == names

    admin = kafka_settings.admin_kwargs()
    first = await ensure_topics(admin, names, partitions=2, replication=1)
    summary = {n: (s.created, s.partitions, s.replication) for n, s in first.items()}
    assert summary == dict.fromkeys(names, (True, 2, 1))
    second = await ensure_topics(admin, [*names, names[0]], partitions=2, replication=1)
    assert list(second) == names
    assert all(not s.created and s.partitions == 2 for s in second.values())

    # existing topics are checked: fewer partitions than required is a configuration error
    with pytest.raises(GatewayError) as info:
        await ensure_topics(admin, names[:1], partitions=3, replication=1)
    assert info.value.reason is Reason.CONFIG_INVALID
    assert "has 2 partitions, fewer than the 3 required" in info.value.detail


async def test_ensure_topics_refuses_invalid_names(kafka_settings: KafkaSettings) -> None:
    # Tansu itself accepts any name; the gateway must not rely on that
    with pytest.raises(GatewayError, match="not a valid Kafka topic name"):
        await ensure_topics(kafka_settings.admin_kwargs(), ["bad name!"], partitions=1, replication=1)


# -- consumer groups -------------------------------------------------------------------------------------


async def test_group_member_resumes_after_committed_offset(
    kafka_settings: KafkaSettings, unique_topic: TopicFactory, unique_group: TopicFactory
) -> None:
    topic, group = unique_topic("grp"), unique_group("grp")
    await ensure_topics(kafka_settings.admin_kwargs(), [topic], partitions=1, replication=1)
    producer = AIOKafkaProducer(**kafka_settings.producer_kwargs())
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, str(i).encode(), key=b"k")
    finally:
        await producer.stop()

    first = AIOKafkaConsumer(topic, **kafka_settings.consumer_kwargs(group))
    await first.start()
    try:
        got = await consume(first, 3)
        assert [r.value for r in got] == [b"0", b"1", b"2"]
        tp = TopicPartition(topic, 0)
        await first.commit({tp: got[-1].offset + 1})
        assert await first.committed(tp) == 3
    finally:
        await first.stop()

    second = AIOKafkaConsumer(topic, **kafka_settings.consumer_kwargs(group))
    await second.start()
    try:
        rest = await consume(second, 3)
    finally:
        await second.stop()
    assert [r.value for r in rest] == [b"3", b"4", b"5"]


# -- broker process control ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def producer_past_one_record(
    broker: EmbeddedBroker, topic: str, **overrides: Any
) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer that has written b"before" to the new one-partition ``topic`` (so it is connected
    to the partition leader); on exit the broker is resumed if the test left it paused, then the producer
    stopped."""
    settings = plain_settings(broker.bootstrap_servers)
    await ensure_topics(settings.admin_kwargs(), [topic], partitions=1, replication=1)
    producer = AIOKafkaProducer(**{**settings.producer_kwargs(), **overrides})
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before", key=b"k")
        yield producer
    finally:
        if broker.paused:
            broker.resume()
        await producer.stop()


async def test_send_in_flight_while_broker_frozen_completes_after_resume(
    embedded_broker: EmbeddedBroker, unique_topic: TopicFactory
) -> None:
    topic = unique_topic("frz")
    async with producer_past_one_record(embedded_broker, topic) as producer:
        embedded_broker.pause()
        assert embedded_broker.paused
        in_flight = asyncio.ensure_future(producer.send_and_wait(topic, b"during", key=b"k"))
        done, _ = await asyncio.wait({in_flight}, timeout=0.5)
        assert not done, "a frozen broker cannot acknowledge"
        embedded_broker.resume()
        async with asyncio.timeout(10):
            meta = await in_flight
        assert meta.offset == 1


async def test_a_producer_that_cannot_flush_in_time_is_closed_anyway(
    embedded_broker: EmbeddedBroker, unique_topic: TopicFactory
) -> None:
    """``close_producer`` (the gateway's shutdown): a send the frozen broker cannot acknowledge keeps
    ``AIOKafkaProducer.stop`` waiting; past the bound its sender task is stopped and every connection closed,
    where a cancelled ``stop`` alone would leave them open."""
    topic = unique_topic("cls")
    async with producer_past_one_record(embedded_broker, topic) as producer:  # its stop: a no-op by then
        embedded_broker.pause()
        in_flight = asyncio.ensure_future(producer.send_and_wait(topic, b"during", key=b"k"))
        connections = list(producer.client._conns.values())  # what must end up closed
        assert any(conn.connected() for conn in connections)
        async with asyncio.timeout(10):
            await close_producer(producer, seconds=0.5)
        assert not [conn for conn in connections if conn.connected()]
        assert not [conn for conn in producer.client._conns.values() if conn.connected()]
        assert producer._sender.sender_task.done()
    in_flight.cancel()  # never acknowledged: a gateway's outbox still holds it and sends it again
    await asyncio.gather(in_flight, return_exceptions=True)


async def test_send_that_timed_out_while_frozen_is_still_written(
    embedded_broker: EmbeddedBroker, unique_topic: TopicFactory
) -> None:
    """Why consumers must deduplicate: a failed send is not proof that nothing was written."""
    settings = plain_settings(embedded_broker.bootstrap_servers)
    topic = unique_topic("dup")
    async with producer_past_one_record(embedded_broker, topic, request_timeout_ms=1_000) as producer:
        embedded_broker.pause()
        with pytest.raises(RequestTimedOutError):
            async with asyncio.timeout(10):
                await producer.send_and_wait(topic, b"maybe", key=b"k")
        embedded_broker.resume()
        await producer.send_and_wait(topic, b"after", key=b"k")
    consumer = AIOKafkaConsumer(**settings.consumer_kwargs(None))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        records = await consume(consumer, 3)
    finally:
        await consumer.stop()
    assert [r.value for r in records] == [b"before", b"maybe", b"after"]


async def test_restart_on_same_port_and_clients_reconnect(
    embedded_broker: EmbeddedBroker, unique_topic: TopicFactory
) -> None:
    settings = plain_settings(embedded_broker.bootstrap_servers)
    topic = unique_topic("rst")
    await ensure_topics(settings.admin_kwargs(), [topic], partitions=1, replication=1)
    port, old_pid = embedded_broker.port, embedded_broker.pid
    producer = AIOKafkaProducer(**settings.producer_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"one")
        await embedded_broker.restart()
        assert embedded_broker.port == port
        assert embedded_broker.pid not in (None, old_pid)
        # memory storage: the topic is gone after a restart
        admin = AIOKafkaAdminClient(**settings.admin_kwargs())
        await admin.start()
        try:
            assert topic not in await admin.list_topics()
        finally:
            await admin.close()
        await ensure_topics(settings.admin_kwargs(), [topic], partitions=1, replication=1)
        async with asyncio.timeout(15):  # the old producer reconnects by itself
            meta = await producer.send_and_wait(topic, b"two")
        assert meta.offset == 0
    finally:
        await producer.stop()


async def test_stop_reaps_the_process_even_when_frozen() -> None:
    broker = EmbeddedBroker()
    await broker.start()
    pid = broker.pid
    assert pid is not None
    assert broker.startup_seconds is not None
    assert broker.startup_seconds < 5
    log_path = broker.log_path
    broker.pause()
    await broker.stop()
    assert not broker.running
    with pytest.raises(ProcessLookupError):  # gone and reaped: not even a zombie keeps the pid
        os.kill(pid, 0)
    assert log_path is not None
    assert not log_path.exists(), "the temporary log is removed"
    await broker.stop()  # idempotent


async def test_idempotent_producer_fails_on_tansu(embedded_broker: EmbeddedBroker) -> None:
    """Pins the DESIGN quirk: InitProducerId fails, hence idempotence is off for the embedded broker."""
    producer = AIOKafkaProducer(
        bootstrap_servers=embedded_broker.bootstrap_servers, enable_idempotence=True, request_timeout_ms=5_000
    )
    try:
        with pytest.raises(UnknownError):
            await producer.start()
    finally:
        await producer.stop()


async def test_start_fails_clearly_when_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    async with EmbeddedBroker(port=port) as first:
        assert first.port == port
        second = EmbeddedBroker(port=port, startup_timeout=10)
        with pytest.raises(GatewayError, match=f"port 127.0.0.1:{port} is already in use"):
            await second.start()
        assert not second.running


async def test_start_fails_clearly_when_binary_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-tansu"
    with pytest.raises(GatewayError) as info:
        await EmbeddedBroker(binary=missing).start()
    assert info.value.reason is Reason.CONFIG_INVALID
    assert str(missing) in info.value.detail


async def test_start_fails_clearly_when_binary_exits_early(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot start' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(GatewayError) as info:
        await EmbeddedBroker(binary=fake, port=free_port()).start()
    assert info.value.reason is Reason.BUS_UNAVAILABLE
    assert "status 3" in info.value.detail
    assert "boom: cannot start" in info.value.detail


async def test_start_times_out_when_never_ready(tmp_path: Path) -> None:
    fake = tmp_path / "silent-tansu"
    fake.write_text("#!/bin/sh\necho 'waiting forever'\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedBroker(binary=fake, port=free_port(), startup_timeout=0.5, stop_timeout=1)
    with pytest.raises(GatewayError) as info:
        await broker.start()
    assert "not ready within 0.5s" in info.value.detail
    assert "waiting forever" in info.value.detail
    assert not broker.running


# -- TLS through stunnel ---------------------------------------------------------------------------------


def tls_settings(proxy: TlsProxy, ca_file: Path) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=(proxy.bootstrap_servers,),
        security_protocol="SSL",
        tls=TlsSettings(ca_file=ca_file),
        enable_idempotence=False,
        request_timeout_ms=10_000,
    )


async def test_tls_round_trip_through_stunnel(tls_proxy: TlsProxy, unique_topic: TopicFactory) -> None:
    settings = tls_settings(tls_proxy, tls_proxy.pki.ca_cert)
    assert await check_connection(settings) == (tls_proxy.bootstrap_servers,)
    topic = unique_topic("tls")
    await ensure_topics(settings.admin_kwargs(), [topic], partitions=1, replication=1)
    producer = AIOKafkaProducer(**settings.producer_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"over":"tls"}', key=b"case-1", headers=[("ce_id", b"1")])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**settings.consumer_kwargs(None))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        [record] = await consume(consumer, 1)
    finally:
        await consumer.stop()
    assert (record.key, record.value, list(record.headers)) == (
        b"case-1",
        b'{"over":"tls"}',
        [("ce_id", b"1")],
    )


async def test_tls_with_wrong_ca_fails_clearly(tls_proxy: TlsProxy, tmp_path: Path) -> None:
    other_ca, _key, _cert = make_ca(tmp_path / "other", name="some other CA")
    settings = tls_settings(tls_proxy, other_ca)
    with pytest.raises(GatewayError) as info:
        await check_connection(settings)
    assert info.value.reason is Reason.CONFIG_INVALID
    assert info.value.detail.startswith("kafka.tls.ca_file: TLS handshake with 127.0.0.1:")
    assert "certificate verify failed" in info.value.detail
    # aiokafka on its own only says it could not bootstrap (the cause is in its log)
    producer = AIOKafkaProducer(**settings.producer_kwargs())
    try:
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await producer.start()
    finally:
        await producer.stop()


async def test_plaintext_client_against_tls_port_does_not_connect(tls_proxy: TlsProxy) -> None:
    settings = KafkaSettings(bootstrap_servers=(tls_proxy.bootstrap_servers,), request_timeout_ms=2_000)
    with pytest.raises(GatewayError):
        await check_connection(settings)


async def test_check_connection_reports_unreachable_broker() -> None:
    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{free_port()}",), request_timeout_ms=2_000)
    with pytest.raises(GatewayError, match="no broker reachable") as info:
        await check_connection(settings)
    assert info.value.reason is Reason.BUS_UNAVAILABLE


async def test_ensure_topics_reports_unreachable_cluster() -> None:
    admin = {"bootstrap_servers": f"127.0.0.1:{free_port()}", "request_timeout_ms": 2_000}
    with pytest.raises(GatewayError, match="cannot provision topics: KafkaConnectionError") as info:
        await ensure_topics(admin, ["it.unreachable"], partitions=1, replication=1)
    assert info.value.reason is Reason.BUS_UNAVAILABLE
