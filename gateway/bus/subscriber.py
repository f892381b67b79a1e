"""The subscriber: one consumer group per party, every record through the verification pipeline.

For each record, in partition order: verify -> (rejected) dead-letter with the reason code and the original
bytes -> (accepted) skip if the inbox has it -> deliver to the routed sinks with retries -> record the outcome
in the inbox. Offsets are committed (offset + 1) only after a record's outcome is durable, at the end of each
fetched batch and when partitions are revoked in a rebalance. The loop survives broker errors: it logs, backs
off and continues; a record is never skipped without an outcome (delivered, duplicate or dead-lettered).

No single record stops the loop (docs/REASON_CODES.md, THREAT_MODEL.md R1):

* the verifier turns every problem of a record into a reason code; should it raise all the same (a bug),
  the record is dead-lettered as ``gateway.internal-error`` naming the exception type;
* the dead-letter copy always fits the producer and the topic (:mod:`gateway.bus.deadletter`: a bounded
  record when the full copy would not), so its produce cannot be refused for ever;
* a record whose handling keeps raising a programming error (``TypeError``, ``KeyError``... rather than
  the disk, the database or the broker failing), :data:`POISON_ATTEMPTS` times in a row at the same
  position, across restarts of the loop by the supervisor, is dead-lettered as ``gateway.internal-error``
  instead of being retried for ever. Until then, and always for infrastructure failures (``OSError`` such
  as a full disk, ``sqlite3.Error``, Kafka errors, timeouts), the exception propagates: the supervisor
  (:mod:`gateway.runtime.supervisor`) restarts the loop, which re-reads from the committed offset.

Per fetch (performance, docs/PERFORMANCE.md): the inbox is asked once which of the fetched events it already
has; each outcome is then noted in the inbox's journal right after its delivery, before the next one, so at
most one delivered event lacks its outcome at any time: the crash window is one event. At the end of the
fetch the noted outcomes are settled into the inbox database in one transaction, and only then may the
fetched offsets be committed (see :mod:`gateway.bus.inbox`). The per-event log line ("delivered") is at debug
level.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError
from prometheus_client import Counter

from gateway.bus.connectivity import broker_refusal
from gateway.bus.deadletter import DLQ_HEADERS, DeadLetterLimits, dead_letter_record
from gateway.bus.delivery import RetryPolicy, Sink, SinkError, deliver_with_retry
from gateway.bus.inbox import Inbox, Outcome
from gateway.bus.metrics import GatewayMetrics
from gateway.contract.envelope import Envelope
from gateway.contract.instants import format_utc, parse_instant
from gateway.contract.verify import Accepted, EventVerifier
from gateway.errors import GatewayError, Reason, Rejected

__all__ = ["DLQ_HEADERS", "POISON_ATTEMPTS", "Route", "Subscriber"]

_log = structlog.get_logger(__name__)

#: Failures of one record's handling, in a row, after which it is dead-lettered (``gateway.internal-error``).
POISON_ATTEMPTS = 3
#: Exceptions that say the gateway's own resources failed (disk full, database, broker, a timeout): they
#: restart the loop however often they recur and never dead-letter the record being handled.
_INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    OSError,
    sqlite3.Error,
    KafkaError,
    TimeoutError,
    GatewayError,
)


@dataclass(frozen=True, slots=True)
class Route:
    """Deliver accepted events whose type matches one of ``types`` (fnmatch) to ``sink``."""

    sink: Sink
    types: tuple[str, ...] = ("*",)

    def matches(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.types)


class ConsumerLike(Protocol):
    """The part of ``aiokafka.AIOKafkaConsumer`` the loop uses."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = ..., max_records: int | None = ...
                      ) -> Mapping[TopicPartition, list[Any]]: ...  # fmt: skip
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = ...) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...


class ProducerLike(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any: ...


class Subscriber:
    def __init__(
        self,
        *,
        party: str,
        verifier: EventVerifier,
        inbox: Inbox,
        routes: Sequence[Route],
        dlq_topic: str,
        metrics: GatewayMetrics,
        retry: RetryPolicy | None = None,
        max_records: int = 500,
        error_backoff: float = 1.0,
        commit_timeout: float = 5.0,
    ) -> None:
        self.party = party
        self._verifier = verifier
        self._stale_after: float | None = None
        self._inbox = inbox
        self._routes = tuple(routes)
        self.dlq_topic = dlq_topic
        self._metrics = metrics
        self._retry = retry or RetryPolicy()
        self._max_records = max_records
        self._error_backoff = error_backoff
        self._commit_timeout = commit_timeout
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self.handled_total = 0
        self.dead_letter_limits = DeadLetterLimits()
        """The dead-letter record bound; the runtime sets the producer's and the topic's limits."""
        self.stalled: str | None = None
        """Why the loop cannot make progress right now (a dead-letter produce failing), for /readyz."""
        self._failures: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> failures
        # Per event type / sink: metric children and routes, looked up once (labels() and fnmatch cost
        # microseconds per event); the sets of types and sinks are small and fixed.
        self._accepted_by_type: dict[str, Counter] = {}
        self._routes_by_type: dict[str, tuple[Route, ...]] = {}
        self._sink_metrics: dict[str, tuple[Counter, Callable[[SinkError, int], None]]] = {}

    # ---- the loop ----------------------------------------------------------------------------------
    async def run(self, consumer: ConsumerLike, producer: ProducerLike, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and committed before returning."""
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=self._max_records)
            except Exception as exc:  # noqa: BLE001 - broker trouble: log, back off, continue
                refused = broker_refusal(exc, "Read")
                if refused is not None:  # an ACL problem an operator must fix: say so, keep retrying
                    _log.error("fetch refused by the broker; retrying", reason=str(refused.reason),
                               detail=refused.detail, party=self.party)  # fmt: skip
                else:
                    _log.warning("fetch failed; retrying", error=type(exc).__name__, party=self.party)
                await asyncio.sleep(self._error_backoff)
                continue
            await self._handle_fetch(batches, producer)
            for tp in batches:
                self._update_lag(consumer, tp)
            await self.commit(consumer)

    async def commit(self, consumer: ConsumerLike) -> None:
        """Commit every handled offset not yet committed (also called from the rebalance listener).

        Bounded by ``commit_timeout``: aiokafka retries a commit that fails with a retriable error (e.g.
        UNKNOWN_TOPIC_OR_PARTITION) forever, which would stall the loop and every delivery behind it.
        """
        pending = {tp: off for tp, off in self._done.items() if self._committed.get(tp) != off}
        if not pending:
            return
        try:
            await asyncio.wait_for(consumer.commit(pending), timeout=self._commit_timeout)
        except Exception as exc:  # noqa: BLE001 - the records are safe in the inbox; redelivery is deduplicated
            _log.warning("offset commit failed; records will be redelivered and deduplicated",
                         error=type(exc).__name__, party=self.party)  # fmt: skip
            return
        self._committed.update(pending)

    def use_verifier(self, verifier: EventVerifier, *, stale_after: float | None = None) -> None:
        """Verify the next records with ``verifier`` (a new registry version in force): one reference,
        replaced between two records, never during one. ``stale_after`` (a POSIX time: the version's
        ``expires``) makes every record verified after it count in
        ``xchg_registry_stale_verifications_total``."""
        self._verifier = verifier
        self._stale_after = stale_after

    def reset(self) -> None:
        """Forget every partition's handled offsets (the consumer they belonged to was closed)."""
        self.forget(list(self._done))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._done.pop(tp, None)
            self._committed.pop(tp, None)

    # ---- one batch, one record ----------------------------------------------------------------------
    async def _handle_fetch(
        self, batches: Mapping[TopicPartition, Sequence[Any]], producer: ProducerLike
    ) -> None:
        """Every record of one fetch, each partition's records in order (see the module docstring).

        The inbox is queried once per fetch, by the ``ce_source``/``ce_id`` headers: for an accepted record
        these are its verified ``source`` and ``id`` (the envelope is parsed from them). The outcomes are
        settled once per fetch too; a partition's records count as handled (``_done``: their offsets may be
        committed) only after that.
        """
        batches = {tp: records for tp, records in batches.items() if records}
        if not batches:
            return
        claimed = {
            key for records in batches.values() for key in map(_claimed_key, records) if key is not None
        }
        seen = await self._inbox.seen(claimed)
        handled: set[tuple[str, str]] = set()
        for records in batches.values():
            for record in records:
                verdict = self._verify(record)
                if isinstance(verdict, Accepted):
                    key = (verdict.event.source, verdict.event.id)
                    if key not in claimed:  # unreachable (see above); kept so a duplicate can never slip by
                        seen |= await self._inbox.seen([key])
                position = (record.topic, record.partition, record.offset)
                try:
                    outcome = await self._handle(record, verdict, producer, seen, handled)
                except Exception as exc:
                    if not await self._poisoned(record, position, exc, producer):
                        raise  # not (yet) the record's fault: the supervisor restarts the loop
                    outcome = None
                else:
                    self._failures.pop(position, None)
                if outcome is not None:
                    self._inbox.note(*outcome)  # before the next delivery: the crash window is one event
        await self._inbox.settle()
        for tp, records in batches.items():
            self._done[tp] = records[-1].offset + 1

    def _verify(self, record: Any) -> Accepted | Rejected:
        """The verifier's verdict; an exception from it (a bug: it returns rejections as values) becomes a
        ``gateway.internal-error`` rejection naming the exception type, so the record is dead-lettered."""
        if self._stale_after is not None and time.time() >= self._stale_after:
            self._metrics.registry_stale_verifications.inc()  # the registry in force is past its expiry
        try:
            return self._verifier.verify_kafka(
                record.value, record.headers or (), record.key, topic=record.topic
            )
        except Exception as exc:  # noqa: BLE001 - one record must never stop the reader
            _log.error("verification raised; dead-lettering", **self._where(record), error=type(exc).__name__)
            return Rejected(Reason.INTERNAL_ERROR, f"verification raised {type(exc).__name__}")

    async def _poisoned(
        self, record: Any, position: tuple[str, int, int], exc: Exception, producer: ProducerLike
    ) -> bool:
        """Count a failure to handle ``record``; at :data:`POISON_ATTEMPTS` dead-letter it (True)."""
        if isinstance(exc, _INFRASTRUCTURE):  # the disk, the database or the broker: never the record's fault
            _log.error("record handling failed", **self._where(record), error=type(exc).__name__)
            return False
        failures = self._failures.get(position, 0) + 1
        self._failures[position] = failures
        if failures < POISON_ATTEMPTS:
            _log.error("record handling failed", **self._where(record), error=type(exc).__name__,
                       attempt=failures)  # fmt: skip
            return False
        _log.error("record handling keeps failing; dead-lettering", **self._where(record),
                   error=type(exc).__name__, attempts=failures)  # fmt: skip
        self._metrics.rejected.labels(reason=str(Reason.INTERNAL_ERROR)).inc()
        await self._dead_letter(
            record, Rejected(Reason.INTERNAL_ERROR, f"handling raised {type(exc).__name__}"), producer
        )
        self._failures.pop(position, None)
        return True

    async def _handle(
        self,
        record: Any,
        verdict: Accepted | Rejected,
        producer: ProducerLike,
        seen: set[tuple[str, str]],
        handled: set[tuple[str, str]],
    ) -> tuple[str, str, Outcome] | None:
        """Dead-letter, skip or deliver one verified record; returns the outcome to record in the inbox."""
        self.handled_total += 1
        if isinstance(verdict, Rejected):
            self._metrics.rejected.labels(reason=str(verdict.reason)).inc()
            _log.warning("record rejected", **self._where(record), reason=str(verdict.reason),
                         detail=verdict.detail)  # fmt: skip
            await self._dead_letter(record, verdict, producer)
            return None
        event = verdict.event
        key = (event.source, event.id)
        if key in seen or key in handled:
            self._metrics.duplicates.inc()
            _log.info("duplicate ignored", **self._where(record, event))
            return None
        counter = self._accepted_by_type.get(event.type)
        if counter is None:
            counter = self._accepted_by_type[event.type] = self._metrics.accepted.labels(type=event.type)
        counter.inc()
        handled.add(key)
        try:
            await self._deliver(verdict)
        except SinkError as exc:
            _log.error("delivery failed; dead-lettering", **self._where(record, event),
                       reason=str(exc.reason), detail=exc.detail)  # fmt: skip
            await self._dead_letter(record, Rejected(Reason.SINK_FAILED, exc.detail), producer)
            return event.source, event.id, "dead-lettered"
        self._metrics.delivery_latency.observe(max(0.0, time.time() - _event_timestamp(event.time)))
        _log.debug("delivered", **self._where(record, event))
        return event.source, event.id, "delivered"

    def _where(self, record: Any, event: Envelope | None = None) -> dict[str, Any]:
        """The context of a log line about ``record`` (and its event, once verified)."""
        where: dict[str, Any] = {"party": self.party, "topic": record.topic,
                                 "partition": record.partition, "offset": record.offset}  # fmt: skip
        if event is not None:
            where.update(event_id=event.id, source=event.source, type=event.type)
        return where

    async def _deliver(self, accepted: Accepted) -> None:
        event_type = accepted.event.type
        routes = self._routes_by_type.get(event_type)
        if routes is None:
            routes = tuple(route for route in self._routes if route.matches(event_type))
            self._routes_by_type[event_type] = routes
        for route in routes:
            name = route.sink.name
            metrics = self._sink_metrics.get(name)
            if metrics is None:
                # every failed attempt counts (docs: "failed delivery attempts"), also one retried later
                failures = functools.partial(_count_failure, self._metrics.sink_failures.labels(sink=name))
                metrics = self._sink_metrics[name] = (self._metrics.delivered.labels(sink=name), failures)
            await deliver_with_retry(route.sink, accepted, self._retry, on_failure=metrics[1])
            metrics[0].inc()

    async def _dead_letter(self, record: Any, rejected: Rejected, producer: ProducerLike) -> None:
        """Produce the record, plus reason headers, to our DLQ (bounded: :mod:`gateway.bus.deadletter`).

        A produce refused for size shrinks the bound and tries the bounded record at once; any other failure
        (the broker is away) is retried with backoff until the broker acks, with :attr:`stalled` set so
        ``/readyz`` says why the loop does not advance.
        """
        delay = self._error_backoff
        at = format_utc(datetime.now(UTC))
        while True:
            letter = dead_letter_record(
                key=record.key, value=record.value, headers=record.headers or (), reason=str(rejected.reason),
                detail=rejected.detail, origin=(record.topic, record.partition, record.offset),
                by=self.party, at=at, max_bytes=self.dead_letter_limits.max_record_bytes,
            )  # fmt: skip
            try:
                await producer.send_and_wait(
                    self.dlq_topic, value=letter.value, key=letter.key, headers=letter.headers
                )
            except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
                if self.dead_letter_limits.shrink():
                    _log.warning("dead-letter record refused for size; bounding it further",
                                 error=type(exc).__name__, party=self.party,
                                 max_bytes=self.dead_letter_limits.max_record_bytes)  # fmt: skip
                    continue
                self._stall(exc, delay)
            except Exception as exc:  # noqa: BLE001 - the record must not be skipped: retry until it lands
                self._stall(exc, delay)
            else:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        if self.stalled is not None:
            _log.info("dead-letter produce recovered", party=self.party)
            self.stalled = None
        if letter.bounded:
            _log.warning("dead-lettered a bounded copy", **self._where(record), reason=str(rejected.reason),
                         max_bytes=self.dead_letter_limits.max_record_bytes)  # fmt: skip
        self._metrics.dead_lettered.labels(reason=str(rejected.reason)).inc()

    def _stall(self, exc: BaseException, delay: float) -> None:
        self.stalled = f"dead-letter produce failing ({type(exc).__name__})"
        _log.warning("dead-letter produce failed; retrying", error=type(exc).__name__, party=self.party,
                     retry_in=delay)  # fmt: skip

    def _update_lag(self, consumer: ConsumerLike, tp: TopicPartition) -> None:
        highwater = consumer.highwater(tp)
        if highwater is not None and tp in self._done:
            lag = max(0, highwater - self._done[tp])
            self._metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    @property
    def lag(self) -> float:
        """Total consumer lag across partitions (for /readyz)."""
        total = 0.0
        for metric in self._metrics.consumer_lag.collect():
            total += sum(sample.value for sample in metric.samples)
        return total


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type information
    """Commit what we handled before partitions move to another member; forget state for lost ones."""

    def __init__(self, subscriber: Subscriber, consumer: ConsumerLike) -> None:
        self._subscriber = subscriber
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._subscriber.commit(self._consumer)
        self._subscriber.forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        _log.info("partitions assigned", party=self._subscriber.party, count=len(list(assigned)))


def _count_failure(counter: Counter, _error: SinkError, _attempt: int) -> None:
    counter.inc()


def _event_timestamp(value: str) -> float:
    return parse_instant(value).timestamp()  # memoised there; a verified time is always representable


def _claimed_key(record: Any) -> tuple[str, str] | None:
    """The ``(source, id)`` a record's ``ce_source``/``ce_id`` headers claim (None if absent or not text)."""
    source = event_id = None
    for name, value in record.headers or ():
        if name == "ce_source":
            source = value
        elif name == "ce_id":
            event_id = value
    if source is None or event_id is None:
        return None
    try:
        return source.decode("utf-8"), event_id.decode("utf-8")
    except (AttributeError, UnicodeDecodeError):
        return None
