"""The subscriber: one consumer group per party, every record through the verification pipeline.

For each record, in partition order: verify -> (rejected) dead-letter with the reason code and the original
bytes -> (accepted) skip if the inbox has delivered it -> deliver to the routed sinks -> record the outcome in
the inbox. Offsets are committed (offset + 1) only after a record's outcome is durable, at the end of each
fetched batch and when partitions are revoked in a rebalance. The loop survives broker errors: it logs, backs
off and continues; a record is never skipped without an outcome (delivered, duplicate or dead-lettered).

**Outages of an agency system** (:mod:`gateway.bus.breaker`): an event whose sink fails transiently becomes
the *head* of its partition: the partition is paused at that offset (``pause``/``seek``; nothing after it is
handled or committed, so per-case order holds) while the other partitions and the events for other sinks
keep flowing. The head is tried again when its sink's breaker allows it (capped exponential backoff with
jitter, ``Retry-After`` honoured, one trial while the breaker is open), and the partition resumes once the
head is delivered. Only a permanent failure (``sink.refused``) or an outage beyond the retry horizon
(``sink.failed``) dead-letters it. Sinks already delivered to are not sent the event again.

**Delivery receipts** (:mod:`gateway.bus.receipts`): each finished record (delivered, rejected,
dead-lettered) is reported to :attr:`finished` (the receipt issuer journals a signed receipt for its sender
before the outcome is noted); records read from a ``delivery`` topic are receipts for *our* events and go to
:attr:`receipts` (the delivery ledger) instead of the sinks: matched to our outbox, or dead-lettered with a
``receipt.*`` reason. Receipts are never receipted.

**Re-drives** (``gateway dlq redrive``, :mod:`gateway.runtime.redrive`): :meth:`redrive` hands a dead
letter's original record to the loop, which handles it between fetches through the same verify -> dedup ->
deliver path (one attempt per sink: a sink still down is reported, the dead letter stays) and answers how it
went. A record whose event the inbox holds as delivered is a duplicate.

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
fetch the receipts are committed to the outbox, the noted outcomes settled into the inbox database in one
transaction, and only then may the fetched offsets be committed (see :mod:`gateway.bus.inbox`). The
per-event log line ("delivered") is at debug level.

About 600 lines: the loop, one record's handling, waiting heads and re-drives share their state (offsets,
inbox, breakers) and are read together.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError
from prometheus_client import Counter

from gateway.bus.breaker import Pending, Route, SinkHealth, SinkRouter
from gateway.bus.connectivity import broker_refusal
from gateway.bus.deadletter import DLQ_HEADERS, DeadLetterLimits, DeadLetterWriter
from gateway.bus.delivery import RetryPolicy
from gateway.bus.inbox import Inbox
from gateway.bus.metrics import GatewayMetrics
from gateway.contract.envelope import Envelope
from gateway.contract.instants import parse_instant
from gateway.contract.policy import parse_topic
from gateway.contract.receipt import RECEIPT_TYPE, ReceiptOutcome
from gateway.contract.verify import Accepted, EventVerifier
from gateway.errors import GatewayError, Reason, Rejected

__all__ = [
    "DLQ_HEADERS",
    "POISON_ATTEMPTS",
    "FinishedRecords",
    "ReceiptsIn",
    "RedriveResult",
    "Route",
    "Subscriber",
]

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
#: The longest a fetch waits while a waiting head might become due sooner (milliseconds).
_MAX_FETCH_WAIT_MS: Final = 500

RedriveResult = tuple[Literal["delivered", "duplicate", "rejected", "failed"], str]
"""How a re-drive went: ``delivered``, ``duplicate`` (already delivered), ``rejected`` (still fails
verification: the reason code), ``failed`` (a sink refused it or is down: the reason code and detail)."""


class ConsumerLike(Protocol):
    """The part of ``aiokafka.AIOKafkaConsumer`` the loop uses."""

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = ..., max_records: int | None = ...
                      ) -> Mapping[TopicPartition, list[Any]]: ...  # fmt: skip
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = ...) -> None: ...
    def highwater(self, partition: TopicPartition) -> int | None: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class ProducerLike(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any: ...


class FinishedRecords(Protocol):
    """Told how every record ended, before its outcome is noted (the receipt issuer)."""

    def finished(
        self, record: Any, event: Envelope | None, outcome: ReceiptOutcome, reason: str | None
    ) -> None: ...
    async def flush(self) -> None: ...


class ReceiptsIn(Protocol):
    """Receipts for our own events (the delivery ledger): ``take`` returns why one is refused, or None."""

    async def prefetch(self, event_ids: Iterable[str]) -> None: ...
    async def take(self, accepted: Accepted) -> Rejected | None: ...
    async def flush(self) -> None: ...


@dataclass(slots=True)
class _Redrive:
    record: Any
    done: asyncio.Future[RedriveResult] = field(repr=False)


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
        sink_retry: Mapping[str, RetryPolicy] | None = None,
        max_records: int = 500,
        error_backoff: float = 1.0,
        commit_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        finished: FinishedRecords | None = None,
        receipts: ReceiptsIn | None = None,
        withholding: Callable[[Accepted], bool] | None = None,
    ) -> None:
        self.party = party
        self._verifier = verifier
        self._stale_after: float | None = None
        self._inbox = inbox
        self.dlq_topic = dlq_topic
        self._metrics = metrics
        self._max_records = max_records
        self._error_backoff = error_backoff
        self._commit_timeout = commit_timeout
        self._clock = clock
        self.finished = finished
        self.receipts = receipts
        self.withholding = withholding
        """Whether consent withheld a delivered event from the agency systems (its receipt then says so)."""
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}  # the next offset to handle, per partition
        self.handled_total = 0
        self._letters = DeadLetterWriter(
            topic=dlq_topic, party=party, counter=metrics.dead_lettered, error_backoff=error_backoff
        )
        self.router = SinkRouter(routes, retry=retry, sink_retry=sink_retry, metrics=metrics, clock=clock)
        """Each event to its sinks, under their circuit breakers (:mod:`gateway.bus.breaker`)."""
        self.waiting: dict[TopicPartition, Pending] = {}
        """Partitions paused behind a head waiting for its sink(s)."""
        self._failures: dict[tuple[str, int, int], int] = {}  # (topic, partition, offset) -> failures
        self._redrives: asyncio.Queue[_Redrive] = asyncio.Queue()
        self.running = False
        """True while :meth:`run` is consuming (a re-drive can be handled)."""
        # Per event type: metric children, looked up once (labels() costs microseconds per event)
        self._accepted_by_type: dict[str, Counter] = {}
        metrics.watch_sinks(self.sink_states)

    # ---- the loop ----------------------------------------------------------------------------------
    async def run(self, consumer: ConsumerLike, producer: ProducerLike, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished and committed before returning."""
        self.running = True
        try:
            await self._run(consumer, producer, stop)
        finally:
            self.running = False
            while not self._redrives.empty():  # nobody will handle them now: say so
                item = self._redrives.get_nowait()
                if not item.done.done():
                    item.done.set_exception(GatewayError(Reason.STOPPING, "the consume loop stopped"))

    async def _run(self, consumer: ConsumerLike, producer: ProducerLike, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._drain_redrives(producer)
            if self.waiting:
                await self._retry_heads(consumer, producer)
            try:
                batches = await consumer.getmany(
                    timeout_ms=self._fetch_wait_ms(), max_records=self._max_records
                )
            except Exception as exc:  # noqa: BLE001 - broker trouble: log, back off, continue
                refused = broker_refusal(exc, "Read")
                if refused is not None:  # an ACL problem an operator must fix: say so, keep retrying
                    _log.error("fetch refused by the broker; retrying", reason=str(refused.reason),
                               detail=refused.detail, party=self.party)  # fmt: skip
                else:
                    _log.warning("fetch failed; retrying", error=type(exc).__name__, party=self.party)
                await asyncio.sleep(self._error_backoff)
                continue
            await self._handle_fetch(batches, producer, consumer)
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
        self.forget(list({*self._done, *self._next, *self.waiting}))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget partitions that moved away: their waiting heads are read again by whoever gets them."""
        for tp in partitions:
            self._done.pop(tp, None)
            self._committed.pop(tp, None)
            self._next.pop(tp, None)
            self.waiting.pop(tp, None)

    def _fetch_wait_ms(self) -> int:
        """How long the next fetch may wait: less when a waiting head's sink becomes due sooner."""
        if not self.waiting:
            return _MAX_FETCH_WAIT_MS
        now = self._clock()
        due = min(self.router.health_of(head).wait(now) for head in self.waiting.values())
        return max(0, min(_MAX_FETCH_WAIT_MS, int(due * 1000) + 1))

    # ---- one batch, one record ----------------------------------------------------------------------
    async def _handle_fetch(
        self, batches: Mapping[TopicPartition, Sequence[Any]], producer: ProducerLike, consumer: ConsumerLike
    ) -> None:
        """Every record of one fetch, each partition's records in order (see the module docstring).

        The inbox is queried once per fetch, by the ``ce_source``/``ce_id`` headers: for an accepted record
        these are its verified ``source`` and ``id`` (the envelope is parsed from them). The outcomes are
        settled once per fetch too; a partition's records count as handled (``_done``: their offsets may be
        committed) only after that. A partition whose head starts waiting is paused there; the records
        after it are fetched again once it resumes.
        """
        batches = {tp: records for tp, records in batches.items() if records and tp not in self.waiting}
        if not batches:
            return
        claimed = {
            key for records in batches.values() for key in map(_claimed_key, records) if key is not None
        }
        outcomes = await self._inbox.outcomes(claimed)
        if self.receipts is not None:
            await self.receipts.prefetch(
                r.key.decode("utf-8", "replace")
                for rs in batches.values()
                for r in rs
                if r.key and _is_receipt(r)
            )
        handled: set[tuple[str, str]] = set()
        reached: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            for record in records:
                if record.offset < self._next.get(tp, 0):
                    continue  # fetched again (before a seek took effect): handled already
                verdict = self._verify(record)
                if isinstance(verdict, Accepted):
                    key = (verdict.event.source, verdict.event.id)
                    if key not in claimed:  # unreachable (see above); kept so a duplicate can never slip by
                        outcomes.update(await self._inbox.outcomes([key]))
                position = (record.topic, record.partition, record.offset)
                try:
                    head = await self._handle(record, verdict, producer, outcomes, handled)
                except Exception as exc:
                    if not await self._poisoned(record, position, exc, producer):
                        raise  # not (yet) the record's fault: the supervisor restarts the loop
                    head = None
                else:
                    self._failures.pop(position, None)
                if head is not None:  # waits for its sink: the partition stops here
                    head.tp = tp
                    self._pause(consumer, tp, head)
                    break
                reached[tp] = record.offset + 1
        await self._settle()
        for tp in batches:
            if tp in reached:
                self._done[tp] = reached[tp]
            waiting = self.waiting.get(tp)
            if waiting is not None:
                self._next[tp] = waiting.record.offset + 1
            elif tp in reached:
                self._next[tp] = reached[tp]

    async def _settle(self) -> None:
        """Make what was finished durable: incoming receipts, our receipts, the inbox outcomes."""
        if self.receipts is not None:
            await self.receipts.flush()
        if self.finished is not None:
            await self.finished.flush()
        await self._inbox.settle()

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
        rejected = Rejected(Reason.INTERNAL_ERROR, f"handling raised {type(exc).__name__}")
        await self._dead_letter(record, rejected, producer)
        self._report(record, None, "rejected", str(rejected.reason))
        self._failures.pop(position, None)
        return True

    async def _handle(
        self,
        record: Any,
        verdict: Accepted | Rejected,
        producer: ProducerLike,
        outcomes: Mapping[tuple[str, str], str],
        handled: set[tuple[str, str]],
    ) -> Pending | None:
        """Dead-letter, skip or deliver one verified record; returns the head when it must wait."""
        self.handled_total += 1
        if isinstance(verdict, Rejected):
            self._metrics.rejected.labels(reason=str(verdict.reason)).inc()
            _log.warning("record rejected", **self._where(record), reason=str(verdict.reason),
                         detail=verdict.detail)  # fmt: skip
            await self._dead_letter(record, verdict, producer)
            self._report(record, None, "rejected", str(verdict.reason))
            return None
        event = verdict.event
        key = (event.source, event.id)
        if key in outcomes or key in handled:
            self._metrics.duplicates.inc()
            _log.info("duplicate ignored", **self._where(record, event))
            return None
        counter = self._accepted_by_type.get(event.type)
        if counter is None:
            counter = self._accepted_by_type[event.type] = self._metrics.accepted.labels(type=event.type)
        counter.inc()
        if event.type == RECEIPT_TYPE:  # never in the inbox: the ledger keeps each receipt id once
            await self._take_receipt(record, verdict, producer)
            return None
        handled.add(key)
        head = Pending(record, verdict, list(self.router.routes_for(event.type)))
        result = await self.router.deliver(head)
        if result == "waiting":
            return head
        await self._finish(head, result, producer)
        return None

    async def _take_receipt(self, record: Any, accepted: Accepted, producer: ProducerLike) -> None:
        """A receipt for one of our events: recorded by the ledger, or dead-lettered with its reason."""
        if self.receipts is None:
            return
        refused = await self.receipts.take(accepted)
        if refused is not None:
            self._metrics.rejected.labels(reason=str(refused.reason)).inc()
            _log.warning("receipt refused", **self._where(record, accepted.event), reason=str(refused.reason),
                         detail=refused.detail)  # fmt: skip
            await self._dead_letter(record, refused, producer)

    @property
    def health(self) -> dict[str, SinkHealth]:
        """The breaker of every routed sink, by name (metrics and /readyz read it)."""
        return self.router.health

    def sink_states(self) -> list[tuple[str, str, int, float, int]]:
        """Per sink: name, breaker state, failures in a row, outage seconds, events waiting for it."""
        return self.router.states(self.waiting.values())

    async def _finish(
        self, head: Pending, result: Literal["delivered"] | Rejected, producer: ProducerLike
    ) -> None:
        """Dead-letter a head that will not be delivered; report and note the outcome of either."""
        record, event = head.record, head.accepted.event
        if isinstance(result, Rejected):
            _log.error("delivery failed; dead-lettering", **self._where(record, event),
                       reason=str(result.reason), detail=result.detail)  # fmt: skip
            await self._dead_letter(record, result, producer)
            self._report(record, event, "dead-lettered", str(result.reason))
            self._inbox.note(event.source, event.id, "dead-lettered")
            return
        self._metrics.delivery_latency.observe(max(0.0, time.time() - _event_timestamp(event.time)))
        _log.debug("delivered", **self._where(record, event))
        if self.withholding is not None and self.withholding(head.accepted):
            self._report(record, event, "withheld", str(Reason.PRIVACY_CONSENT_WITHDRAWN))
        else:
            self._report(record, event, "delivered", None)
        self._inbox.note(event.source, event.id, "delivered")  # before the next delivery: one-event window

    def _report(
        self, record: Any, event: Envelope | None, outcome: ReceiptOutcome, reason: str | None
    ) -> None:
        if self.finished is not None:
            self.finished.finished(record, event, outcome, reason)

    def _pause(self, consumer: ConsumerLike, tp: TopicPartition, head: Pending) -> None:
        """Stop fetching ``tp`` behind ``head``; the records after it are fetched again on resume."""
        self.waiting[tp] = head
        try:
            consumer.seek(tp, head.record.offset + 1)
            consumer.pause(tp)
        except IllegalStateError:  # no longer assigned (a rebalance in between): its new owner reads it
            self.waiting.pop(tp, None)

    async def _retry_heads(self, consumer: ConsumerLike, producer: ProducerLike) -> None:
        """Try every waiting head whose sink allows it; resume the partitions whose head is finished."""
        finished: list[tuple[TopicPartition, Pending]] = []
        for tp, head in list(self.waiting.items()):
            position = (head.record.topic, head.record.partition, head.record.offset)
            try:
                result = await self.router.deliver(head)
                if result == "waiting":
                    continue
                await self._finish(head, result, producer)
            except Exception as exc:
                if not await self._poisoned(head.record, position, exc, producer):
                    raise
            finished.append((tp, head))
        if not finished:
            return
        await self._settle()
        for tp, head in finished:
            self.waiting.pop(tp, None)
            self._done[tp] = self._next[tp] = head.record.offset + 1
            with contextlib.suppress(IllegalStateError):
                consumer.seek(tp, head.record.offset + 1)
                consumer.resume(tp)
        await self.commit(consumer)

    # ---- re-drives ----------------------------------------------------------------------------------
    async def redrive(self, record: Any) -> RedriveResult:
        """Hand a dead letter's original record (topic = the topic it was read from) to the loop and wait
        until it has been handled (the loop must be running)."""
        done: asyncio.Future[RedriveResult] = asyncio.get_running_loop().create_future()
        await self._redrives.put(_Redrive(record, done))
        return await done

    async def _drain_redrives(self, producer: ProducerLike) -> None:
        if self._redrives.empty():
            return
        while not self._redrives.empty():
            item = self._redrives.get_nowait()
            try:
                result = await self._redrive_one(item.record, producer)
            except Exception as exc:
                if not item.done.done():
                    item.done.set_exception(exc)
                raise
            if not item.done.done():
                item.done.set_result(result)
        await self._settle()

    async def _redrive_one(self, record: Any, producer: ProducerLike) -> RedriveResult:
        verdict = self._verify(record)
        if isinstance(verdict, Rejected):
            return "rejected", str(verdict.reason)
        event = verdict.event
        if event.type == RECEIPT_TYPE:
            if self.receipts is None:
                return "failed", "this gateway keeps no delivery ledger"
            await self.receipts.prefetch([event.subject or ""])
            refused = await self.receipts.take(verdict)
            return (
                ("rejected", str(refused.reason))
                if refused is not None
                else ("delivered", "receipt recorded")
            )
        key = (event.source, event.id)
        if (await self._inbox.outcomes([key])).get(key) == "delivered":
            self._metrics.duplicates.inc()
            return "duplicate", "already delivered"
        head = Pending(record, verdict, list(self.router.routes_for(event.type)))
        result = await self.router.deliver(head)
        if result == "waiting":
            health = self.router.health_of(head)
            return "failed", f"{Reason.SINK_FAILED}: sink {health.name} unavailable ({health.last_error})"
        if isinstance(result, Rejected):
            return "failed", f"{result.reason}: {result.detail}"
        await self._finish(head, result, producer)
        return "delivered", ""

    # ---- dead letters and lag -----------------------------------------------------------------------
    def _where(self, record: Any, event: Envelope | None = None) -> dict[str, Any]:
        """The context of a log line about ``record`` (and its event, once verified)."""
        where: dict[str, Any] = {"party": self.party, "topic": record.topic,
                                 "partition": record.partition, "offset": record.offset}  # fmt: skip
        if event is not None:
            where.update(event_id=event.id, source=event.source, type=event.type)
        return where

    async def _dead_letter(self, record: Any, rejected: Rejected, producer: ProducerLike) -> None:
        """Produce the record, plus reason headers, to our DLQ (:class:`DeadLetterWriter`: bounded, retried
        until the broker acks, :attr:`stalled` meanwhile)."""
        await self._letters.write(record, rejected, producer, where=self._where(record))

    @property
    def dead_letter_limits(self) -> DeadLetterLimits:
        """The dead-letter record bound; the runtime sets the producer's and the topic's limits."""
        return self._letters.limits

    @property
    def stalled(self) -> str | None:
        """Why the loop cannot make progress right now (a dead-letter produce failing), for /readyz."""
        return self._letters.stalled

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


def _event_timestamp(value: str) -> float:
    return parse_instant(value).timestamp()  # memoised there; a verified time is always representable


def _is_receipt(record: Any) -> bool:
    """Whether ``record`` was read from a delivery-receipt topic."""
    try:
        return parse_topic(record.topic).kind == "delivery"
    except GatewayError:
        return False


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
