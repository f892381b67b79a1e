"""A party's dead-letter topic as a list of entries: what ``gateway dlq`` lists, shows, re-drives, purges.

Every record a gateway rejects or cannot deliver goes to its own ``xchg.<party>.dlq.v1`` (only that party and
the notary may read it, under the rendered ACLs) with reason headers (:mod:`gateway.bus.deadletter`).
:func:`read_dead_letters` reads that topic with the party's own Kafka settings, without a consumer group
(``assign``; nothing is committed, so it works while the gateway runs, and on the embedded broker, whose
group coordination refused the old rewind script), from the first available offset to the end.

A :class:`DeadLetter` exposes the reason headers and the original event's identifiers; its value is kept
in memory only for :meth:`DeadLetter.original` (the record the gateway re-drives) and for ``gateway dlq show
--value``. Nothing here prints or logs a value: a rejected record can hold anything, personal data in clear
included. :class:`Selection` is the filter every command shares (positions, reasons, time window, origin,
source).

:func:`purge` deletes the records before a time with Kafka's DeleteRecords (the partition's start offset
moves; the notary's leaves for them then count as expired in an audit, like records past the retention).
The embedded broker (Tansu) does not implement DeleteRecords: there :func:`purge` raises
``bus.unavailable`` saying so, and nothing is deleted.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import KafkaError

from gateway.bus.admin import partitions_of
from gateway.bus.connectivity import broker_refusal, start_client
from gateway.bus.deadletter import BOUNDED_HEADERS, DLQ_HEADERS
from gateway.bus.kafka import KafkaSettings
from gateway.contract.instants import parse_instant
from gateway.errors import GatewayError, Reason

__all__ = ["DeadLetter", "OriginalRecord", "Selection", "purge", "read_dead_letters", "read_record"]

_XCHG_PREFIX: Final = "xchg-"
_SHOWN_IDS: Final = ("ce_id", "ce_source", "ce_type")


@dataclass(frozen=True, slots=True)
class OriginalRecord:
    """The record a dead letter is a copy of, as the gateway read it (what a re-drive verifies again)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int = 0
    timestamp_type: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic: its position, the reason headers, the original's identity."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None = field(repr=False)
    value: bytes | None = field(repr=False)
    headers: tuple[tuple[str, bytes | None], ...] = field(repr=False)

    def header(self, name: str) -> str | None:
        """The text of header ``name`` (its last occurrence; the reason headers come after the original's)."""
        found = None
        for key, raw in self.headers:
            if key == name and raw is not None:
                found = bytes(raw).decode("utf-8", "replace")
        return found

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.header("xchg-reason") or "?"

    @property
    def origin(self) -> tuple[str, int, int] | None:
        """``(topic, partition, offset)`` the original was read from (None when the headers are broken)."""
        topic, partition, offset = (
            self.header("xchg-origin-topic"),
            self.header("xchg-origin-partition"),
            self.header("xchg-origin-offset"),
        )
        if topic is None or partition is None or offset is None:
            return None
        if not (partition.isdigit() and offset.isdigit()):
            return None
        return topic, int(partition), int(offset)

    @property
    def dead_lettered_at(self) -> datetime | None:
        text = self.header("xchg-dead-lettered-at")
        if text is None:
            return None
        try:
            return parse_instant(text)
        except GatewayError:
            return None

    @property
    def bounded(self) -> bool:
        """Only a bounded copy was kept (``xchg-truncated``): the original must be read from its topic."""
        return self.header("xchg-truncated") == "1"

    def original_headers(self) -> tuple[tuple[str, bytes | None], ...]:
        """The original record's headers: every header before the reason headers (``xchg-*``)."""
        ours = {*DLQ_HEADERS, *BOUNDED_HEADERS}
        return tuple((k, v) for k, v in self.headers if not (k.startswith(_XCHG_PREFIX) and k in ours))

    def original(self) -> OriginalRecord:
        """The record as the gateway read it, to verify and deliver again. Raises ``GatewayError``
        (``config.invalid``) for a bounded copy or one whose origin headers are broken."""
        origin = self.origin
        if origin is None:
            raise GatewayError(Reason.CONFIG_INVALID, f"dead letter {self.position}: no origin headers")
        if self.bounded:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"dead letter {self.position} is a bounded copy (xchg-truncated): the record was too large "
                "to copy whole; it cannot be re-driven from the dead-letter topic",
            )
        topic, partition, offset = origin
        return OriginalRecord(topic, partition, offset, self.key, self.value, self.original_headers())

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        """Position, reason, origin, identifiers and age: what ``gateway dlq list`` prints (never the value
        or the free-text detail's neighbours: the detail carries no personal data by convention)."""
        at = self.dead_lettered_at
        origin = self.origin
        return {
            "position": self.position,
            "reason": self.reason,
            "detail": self.header("xchg-detail"),
            "origin": None if origin is None else f"{origin[0]}:{origin[1]}:{origin[2]}",
            "source": self.header("ce_source"),
            "type": self.header("ce_type"),
            "id": self.header("ce_id"),
            "dead_lettered_at": self.header("xchg-dead-lettered-at"),
            "age_seconds": None if at is None or now is None else max(0, int((now - at).total_seconds())),
            "bounded": self.bounded,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which dead letters a command applies to; an empty selection is every one."""

    positions: frozenset[tuple[int, int]] = frozenset()
    reasons: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    origin: str | None = None
    """fnmatch pattern on the origin topic (``xchg.kemlu.*.case.v1``)."""
    source: str | None = None

    @property
    def everything(self) -> bool:
        return self == Selection()

    def __call__(self, letter: DeadLetter) -> bool:
        if self.positions and (letter.partition, letter.offset) not in self.positions:
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.since is not None or self.until is not None:
            at = letter.dead_lettered_at
            if at is None or (self.since is not None and at < self.since):
                return False
            if self.until is not None and at >= self.until:
                return False
        if self.origin is not None:
            origin = letter.origin
            if origin is None or not fnmatch.fnmatchcase(origin[0], self.origin):
                return False
        return self.source is None or letter.header("ce_source") == self.source


async def read_dead_letters(
    kafka: KafkaSettings,
    topic: str,
    *,
    select: Callable[[DeadLetter], bool] = lambda _: True,
    partitions: Iterable[int] | None = None,
    idle_ms: int = 500,
) -> list[DeadLetter]:
    """The dead letters of ``topic`` that ``select`` keeps, in (partition, offset) order.

    Reads every partition (or those given) from its first available offset to its end without a group.
    The end: the first fetch of ``idle_ms`` that brings nothing once every partition has reached its
    ListOffsets(latest), or the second one in a row (should the broker undercount the end: Tansu,
    multi-record batches; dead letters are written one record per batch).
    """
    known = await _partitions(kafka, topic)
    wanted = sorted(known if partitions is None else set(partitions) & known)
    if not wanted:
        return []
    consumer = await _started_consumer(kafka)
    try:
        tps = [TopicPartition(topic, p) for p in wanted]
        consumer.assign(tps)
        earliest = await consumer.beginning_offsets(tps)
        latest = await consumer.end_offsets(tps)
        tps = [tp for tp in tps if latest[tp] > earliest[tp]]  # an empty partition has nothing to fetch
        if not tps:
            return []
        consumer.assign(tps)
        position = {tp: earliest[tp] for tp in tps}
        for tp in tps:
            consumer.seek(tp, earliest[tp])
        found: list[DeadLetter] = []
        idle = 0
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=1000)
            if not batch:
                idle += 1
                if idle >= 2 or all(position[tp] >= latest[tp] for tp in tps):
                    break
                continue
            idle = 0
            for tp, records in batch.items():
                for record in records:
                    position[tp] = record.offset + 1
                    letter = DeadLetter(
                        topic=record.topic, partition=record.partition, offset=record.offset,
                        timestamp=record.timestamp, key=record.key, value=record.value,
                        headers=tuple((str(k), v) for k, v in record.headers or ()),
                    )  # fmt: skip
                    if select(letter):
                        found.append(letter)
        return sorted(found, key=lambda letter: (letter.partition, letter.offset))
    finally:
        await consumer.stop()


async def _partitions(kafka: KafkaSettings, topic: str) -> set[int]:
    """The partitions of ``topic``; none when the cluster does not list it (to this principal)."""
    admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
    try:
        await admin.start()
        return {tp.partition for tp in await partitions_of(admin, lambda name: name == topic)}
    except (KafkaError, OSError) as exc:
        raise GatewayError(
            Reason.BUS_UNAVAILABLE, f"cannot list the partitions of {topic} ({type(exc).__name__})"
        ) from exc
    finally:
        await admin.close()


async def purge(kafka: KafkaSettings, letters: Sequence[DeadLetter]) -> Mapping[int, int]:
    """Delete, per partition, every record up to and including the last of ``letters`` (the caller passes
    the letters before a time, which are a prefix of each partition). Returns partition -> new start offset.

    Raises ``GatewayError(bus.not-authorized)`` when the broker's ACLs refuse this principal the deletion
    (the detail names the topic), ``GatewayError(bus.unavailable)`` when the broker cannot delete records
    (Tansu) or cannot be reached. Either way nothing was deleted."""
    cut: dict[TopicPartition, int] = {}
    for letter in letters:
        tp = TopicPartition(letter.topic, letter.partition)
        cut[tp] = max(cut.get(tp, 0), letter.offset + 1)
    if not cut:
        return {}
    admin = AIOKafkaAdminClient(**kafka.admin_kwargs())
    try:
        await admin.start()
        hidden = {tp.topic for tp in cut} - set(await admin.list_topics())
        if hidden:  # Kafka hides a topic the principal may not Describe: it would say "no leader"
            raise GatewayError(
                Reason.BUS_NOT_AUTHORIZED,
                f"topic {', '.join(sorted(hidden))} is not visible to this client's principal: the broker's "
                "ACLs do not let it Describe (nor Delete from) that topic (gateway deploy render derives "
                "them from the registry); nothing was deleted",
            )
        result = await admin.delete_records({tp: RecordsToDelete(offset) for tp, offset in cut.items()})
    except (KafkaError, OSError) as exc:
        refusal = broker_refusal(exc, "Delete")
        if refusal is not None:
            raise refusal from exc
        raise GatewayError(
            Reason.BUS_UNAVAILABLE,
            f"the broker did not delete the records ({type(exc).__name__}): nothing was deleted (the "
            "embedded broker, Tansu, does not implement DeleteRecords; on Kafka, check the principal's "
            "Delete permission on the topic)",
        ) from exc
    finally:
        await admin.close()
    return {tp.partition: int(offset) for tp, offset in result.items()}


async def _started_consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    """A started consumer without a group; ``bus.unavailable`` when the cluster cannot be reached."""
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(None))
    try:
        await start_client(consumer)
    except KafkaError as exc:
        raise GatewayError(
            Reason.BUS_UNAVAILABLE, f"cannot reach the cluster ({type(exc).__name__})"
        ) from exc
    return consumer


async def read_record(kafka: KafkaSettings, topic: str, partition: int, offset: int) -> OriginalRecord | None:
    """The record at ``topic:partition:offset``, or None when it is gone (retention) or not there yet."""
    if partition not in await _partitions(kafka, topic):
        return None
    consumer = await _started_consumer(kafka)
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if not (await consumer.beginning_offsets([tp]))[tp] <= offset:
            return None
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=2000, max_records=1)
        for record in batch.get(tp, ()):
            if record.offset == offset:
                return OriginalRecord(
                    topic, partition, offset, record.key, record.value,
                    tuple((str(k), v) for k, v in record.headers or ()), record.timestamp,
                )  # fmt: skip
        return None
    finally:
        await consumer.stop()
