"""The audit against a broker: every record of the exchange topics read from Kafka, and a whole audit.

The one module of the auditor's side that talks to Kafka (aiokafka), so that the offline auditor
(:mod:`gateway.audit.auditor`) runs on a copy of the log alone. :func:`read_kafka_records` reads every
partition of the matching topics by offset, from its first available record to its end (``gateway audit
export-records`` writes them to a records dump, :mod:`gateway.audit.records`); :func:`audit_kafka` is
``gateway audit verify --bootstrap-servers``: the checkpoints the notary published, the log, then every
record checked against its leaf (``docs/AUDIT.md`` section 14.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from gateway.audit.auditor import Auditor
from gateway.audit.leaf import ConsumedRecord
from gateway.audit.report import AuditReport
from gateway.bus.admin import partitions_of
from gateway.bus.kafka import KafkaSettings
from gateway.contract.policy import REGISTRY_TOPIC

__all__ = ["audit_kafka", "read_kafka_records"]


async def read_kafka_records(
    kafka: KafkaSettings,
    on_record: Callable[[ConsumedRecord], None],
    *,
    pattern: str | None = None,
    topics: Sequence[str] = (),
    at_least: Mapping[tuple[str, int], int] | None = None,
    idle_ms: int = 1000,
) -> dict[tuple[str, int], int]:
    """Read every partition of the matching topics from its first available offset to its end, calling
    ``on_record`` for each record; returns each partition's earliest available offset.

    The end: Tansu's ListOffsets(latest) undercounts multi-record batches (``gateway.sandbox.broker``), so the
    end offset is only a lower bound, raised to ``at_least`` (one past what the log says exists); reading goes
    on until both are reached *and* a fetch of ``idle_ms`` brings nothing. Records are fetched by offset,
    which is correct on every broker. A partition that never reaches ``at_least`` ends after three idle
    fetches (its missing records then show as ``leaf.record-missing``).
    """
    compiled = re.compile(pattern) if pattern else None
    admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
    await admin.start()
    try:
        partitions = await partitions_of(
            admin, lambda t: t in topics or bool(compiled and compiled.fullmatch(t))
        )
    finally:
        await admin.close()
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(None))
    await consumer.start()
    try:
        consumer.assign(partitions)
        earliest = await consumer.beginning_offsets(partitions)
        latest = await consumer.end_offsets(partitions)
        expected = at_least or {}
        targets = {tp: max(latest[tp], expected.get((tp.topic, tp.partition), 0)) for tp in partitions}
        positions = {tp: earliest[tp] for tp in partitions}
        for tp in partitions:
            consumer.seek(tp, earliest[tp])
        idle = 0
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=1000)
            if batch:
                idle = 0
                for tp, records in batch.items():
                    for record in records:
                        on_record(ConsumedRecord.of(record))
                        positions[tp] = record.offset + 1
                continue
            idle += 1
            if all(positions[tp] >= targets[tp] for tp in partitions) or idle >= 3:
                break
        return {(tp.topic, tp.partition): int(earliest[tp]) for tp in partitions}
    finally:
        await consumer.stop()


async def audit_kafka(
    auditor: Auditor,
    kafka: KafkaSettings,
    *,
    pattern: str,
    checkpoint_topic: str | None,
    idle_ms: int = 1000,
) -> AuditReport:
    """A whole audit against a broker: the checkpoints the notary published on ``checkpoint_topic`` (on
    top of those already added to ``auditor``), the log, then every record of every topic matching
    ``pattern`` or named by a leaf. Run inside an event loop (the demo, tests); the CLI wraps it."""
    if checkpoint_topic:
        notes: list[tuple[bytes, str]] = []

        def collect(record: ConsumedRecord) -> None:
            if record.value is not None:
                notes.append((record.value, f"kafka {record.topic}:{record.partition}:{record.offset}"))

        await read_kafka_records(kafka, collect, topics=[checkpoint_topic], idle_ms=idle_ms)
        for note, where in notes:
            auditor.add_checkpoint(note, where)
    auditor.scan_log()
    # the registry versions first: which one was in force at each leaf decides how its record is judged
    await read_kafka_records(kafka, auditor.add_registry_record, topics=[REGISTRY_TOPIC], idle_ms=idle_ms)
    at_least = {key: last + 1 for key, last in auditor.last_offsets().items()}
    with auditor.record_checks() as check:
        earliest = await read_kafka_records(
            kafka,
            check,
            pattern=pattern,
            topics=sorted({topic for topic, _ in at_least}),
            at_least=at_least,
            idle_ms=idle_ms,
        )
    auditor.finish_records(f"kafka {','.join(kafka.bootstrap_servers)}", earliest)
    return auditor.finish()
