"""The registry topic on Kafka: publish a signed registry version, read them all, follow new ones.

``xchg.registry.v1`` (:data:`gateway.contract.policy.REGISTRY_TOPIC`) has one partition (versions are read
in the order maintainers published them) and is compacted with record key ``<serial>:<digest>``, so every
distinct version stays for ever while an identical re-publication is collapsed; the value is the version's
envelope bytes (:meth:`gateway.contract.registry_version.RegistryVersion.to_bytes`). Nothing here decides
trust: readers hand each record to :class:`gateway.contract.registry_chain.RegistryChain`.

Readers use no consumer group (nothing to commit, no group ACL): the gateway remembers its own position
(:mod:`gateway.runtime.trust`), the notary derives it from its log. No reader ever names the topic in a
metadata request before it exists (Tansu would auto-create it with four partitions): topics are listed
first, and a reader waits until the maintainers' first publication created it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from gateway.bus.admin import ensure_topics
from gateway.bus.kafka import KafkaSettings
from gateway.contract.policy import REGISTRY_TOPIC
from gateway.contract.registry_version import RegistryVersion

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY_PARTITION",
    "TOPIC_CONFIG",
    "RegistryFollower",
    "RegistryRecord",
    "ensure_registry_topic",
    "publish_version",
    "read_versions",
    "record_key",
]

_log = structlog.get_logger(__name__)

REGISTRY_PARTITION: Final = TopicPartition(REGISTRY_TOPIC, 0)
#: The topic's configuration wherever it is created (``gateway deploy render`` writes the same).
TOPIC_CONFIG: Final = {"cleanup.policy": "compact", "retention.ms": "-1"}
CONTENT_TYPE: Final = b"application/vnd.id.trafficking.registry+json"
_POLL_MS: Final = 500


@dataclass(frozen=True, slots=True)
class RegistryRecord:
    """One record of the registry topic: its offset and value (None for a tombstone)."""

    offset: int
    value: bytes | None


def record_key(version: RegistryVersion) -> bytes:
    """``<serial>:<digest>``: compaction keeps every distinct version and collapses identical copies."""
    return f"{version.serial}:{version.digest}".encode("ascii")


async def ensure_registry_topic(kafka: KafkaSettings, *, replication: int = 1) -> None:
    """Create the registry topic (one partition, compacted) unless it exists."""
    await ensure_topics(kafka.admin_kwargs(), [REGISTRY_TOPIC], 1, replication, configs=TOPIC_CONFIG)


async def publish_version(
    kafka: KafkaSettings, version: RegistryVersion, *, raw: bytes | None = None, replication: int = 1
) -> int:
    """Send a version (or, for tests of refusals, arbitrary ``raw`` bytes under its key) to partition 0 of
    the registry topic, creating the topic first if it is missing (one partition, compacted), and return
    its offset once the broker acknowledged it (``acks=all``)."""
    await ensure_registry_topic(kafka, replication=replication)
    producer = AIOKafkaProducer(**kafka.producer_kwargs())
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            REGISTRY_TOPIC,
            value=version.to_bytes() if raw is None else raw,
            key=record_key(version),
            headers=[("content-type", CONTENT_TYPE)],
            partition=REGISTRY_PARTITION.partition,
        )
    finally:
        await producer.stop()
    return int(metadata.offset)


async def _topic_exists(kafka: KafkaSettings) -> bool:
    admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
    try:
        await admin.start()
        return REGISTRY_TOPIC in await admin.list_topics()
    finally:
        await admin.close()  # also after a failed start: no client left open


async def read_versions(kafka: KafkaSettings, *, idle_ms: int = 500) -> list[RegistryRecord]:
    """Every record of the registry topic, in offset order (empty when the topic does not exist yet)."""
    if not await _topic_exists(kafka):
        return []
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(None))
    await consumer.start()
    records: list[RegistryRecord] = []
    try:
        consumer.assign([REGISTRY_PARTITION])
        await consumer.seek_to_beginning(REGISTRY_PARTITION)
        end = (await consumer.end_offsets([REGISTRY_PARTITION]))[REGISTRY_PARTITION]
        idle = 0
        while idle < 2:
            batch = await consumer.getmany(REGISTRY_PARTITION, timeout_ms=idle_ms, max_records=100)
            fetched = batch.get(REGISTRY_PARTITION, [])
            records.extend(RegistryRecord(int(r.offset), r.value) for r in fetched)
            if fetched:
                idle = 0
            elif await consumer.position(REGISTRY_PARTITION) >= end:
                idle += 1
    finally:
        await consumer.stop()
    return records


class RegistryFollower:
    """Follows the registry topic from ``start`` (None: from the beginning), handing each record to a
    callback in offset order; ``history`` is True for records that were already on the topic when a
    follower without a remembered position started (its catch-up)."""

    def __init__(self, kafka: KafkaSettings, *, start: int | None, topic_wait: float = 2.0) -> None:
        self._kafka = kafka
        self._start = start
        self._topic_wait = topic_wait

    async def _topic_ready(self) -> bool:
        try:
            if await _topic_exists(self._kafka):
                return True
        except (KafkaError, OSError, TimeoutError) as exc:
            _log.debug("registry topic unreachable; waiting", topic=REGISTRY_TOPIC, error=type(exc).__name__)
        else:
            _log.debug("registry topic not created yet; waiting", topic=REGISTRY_TOPIC)
        return False

    async def run(
        self, on_record: Callable[[RegistryRecord, bool], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        """Until ``stop`` is set. While the broker cannot be reached, it waits as for a topic not created yet
        (the ``kafka`` readiness check reports the outage; this task stays healthy); broker errors after
        that propagate (the runtime's supervisor reconnects)."""
        while not await self._topic_ready():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._topic_wait)
            if stop.is_set():
                return
        consumer = AIOKafkaConsumer(**self._kafka.consumer_kwargs(None))
        await consumer.start()
        try:
            consumer.assign([REGISTRY_PARTITION])
            history_end = 0
            if self._start is None:
                await consumer.seek_to_beginning(REGISTRY_PARTITION)
                history_end = (await consumer.end_offsets([REGISTRY_PARTITION]))[REGISTRY_PARTITION]
            else:
                consumer.seek(REGISTRY_PARTITION, self._start)
            while not stop.is_set():
                batch = await consumer.getmany(REGISTRY_PARTITION, timeout_ms=_POLL_MS, max_records=50)
                for record in batch.get(REGISTRY_PARTITION, []):
                    await on_record(
                        RegistryRecord(int(record.offset), record.value), record.offset < history_end
                    )
        finally:
            await consumer.stop()
