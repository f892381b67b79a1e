"""The publisher: ``await publish(...)`` validates, seals, signs and commits an event to the durable outbox; a
sender task moves committed entries to Kafka (``acks=all``) in order and marks them sent on acknowledgement.

An event is *accepted* when ``publish`` returns: it is on disk. A broker outage only grows the outbox (bounded
by ``max_backlog``, after which ``publish`` refuses with ``outbox.full`` so callers keep their own copy);
memory stays bounded because the sender reads at most ``batch_size`` entries at a time. When the broker
returns, the backlog drains in sequence order, so one case's events keep their order. A send whose ack was
lost is sent again: consumers deduplicate by ``(source, id)``.

Every event is tracked for delivery receipts (:mod:`gateway.bus.receipts`): the outbox records which parties'
receipts it expects — the recipients it is sealed for when it names any, else every party the registry lets
read its topic. Receipts themselves are published with ``internal=True``: not tracked, not shown to the
observers, and accepted while intake stops (they settle what the consume loop has finished).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog

from gateway.bus.connectivity import broker_refusal
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox, OutboxEntry
from gateway.bus.wait import wait_any
from gateway.contract.envelope import Envelope
from gateway.contract.policy import event_topic
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.sign import EventSigner, build_event
from gateway.errors import GatewayError, Reason

__all__ = ["KafkaProducerLike", "PublishObserver", "Publisher"]

_log = structlog.get_logger(__name__)


class KafkaProducerLike(Protocol):
    """The part of ``aiokafka.AIOKafkaProducer`` the sender uses."""

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]: ...


class PublishObserver(Protocol):
    """Told about every event once the outbox accepted it (``data``: the logical payload, sealed fields
    included): the coordination timeline. A failing observer is logged; the publish has already succeeded."""

    async def published(self, event: Envelope, data: Mapping[str, Any]) -> None: ...


class Publisher:
    def __init__(
        self,
        *,
        signer: EventSigner,
        registry: Registry,
        schemas: SchemaStore,
        outbox: Outbox,
        metrics: GatewayMetrics,
        batch_size: int = 500,
        retry_backoff: float = 0.5,
        max_backoff: float = 10.0,
        observers: Sequence[PublishObserver] = (),
    ) -> None:
        self.signer = signer
        self.observers = list(observers)
        self._registry = registry
        self._schemas = schemas
        self.outbox = outbox
        self._metrics = metrics
        self._batch_size = batch_size
        self._retry_backoff = retry_backoff
        self._max_backoff = max_backoff
        self._accepting = True
        self.sent_total = 0
        self._topics: dict[tuple[str, str], str] = {}  # (source, dataschema) -> topic
        self._readers: dict[str, tuple[str, ...]] = {}  # topic -> parties the registry lets read it

    async def publish(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        recipients: Sequence[str] = (),
        dataschema: str | None = None,
        event_id: str | None = None,
        internal: bool = False,
    ) -> Envelope:
        """Build the event and commit it to the outbox. Raises ``GatewayError`` when it is refused, and only
        that: a record the contract refuses gets its reason code, one that makes the contract code raise
        anything else ``gateway.internal-error`` (the caller quarantines it instead of dying on it), and an
        outbox that cannot be written ``outbox.unavailable`` (the caller keeps the record and retries).

        ``internal``: an event the gateway owes by itself (a delivery receipt): accepted during shutdown,
        not tracked for receipts, not shown to the observers."""
        if not self._accepting and not internal:
            raise GatewayError(Reason.STOPPING, "the gateway is shutting down; publish again after restart")
        try:
            event = build_event(
                signer=self.signer,
                registry=self._registry,
                schemas=self._schemas,
                event_type=event_type,
                data=data,
                recipients=recipients,
                dataschema=dataschema,
                event_id=event_id,
            )
            topic = self.topic_of(event)
        except GatewayError:
            raise
        except Exception as exc:  # a bug met by this record: refuse it (the caller quarantines), never crash
            _log.error("publish raised; refusing the record", error=type(exc).__name__, type=event_type)
            raise GatewayError(
                Reason.INTERNAL_ERROR, f"building the event raised {type(exc).__name__}"
            ) from exc
        expected = None if internal else self._expected(topic, event, data, recipients)
        await self.outbox.put(topic, event, expected=expected)
        self._metrics.outbox_depth.set(self.outbox.depth)  # xchg_published_total counts broker acks (_send)
        _log.debug("event accepted into outbox", event_id=event.id, type=event_type, topic=topic)
        if internal:
            return event
        for observer in self.observers:
            try:
                await observer.published(event, data)
            except Exception as exc:  # noqa: BLE001 - the event is accepted; an observer must not undo that
                _log.error(
                    "publish observer failed", observer=type(observer).__name__, error=type(exc).__name__
                )
        return event

    def _expected(
        self, topic: str, event: Envelope, data: Mapping[str, Any], recipients: Sequence[str]
    ) -> tuple[str, ...]:
        """The parties whose receipts the event expects: its sealed recipients, else its topic's readers."""
        schema = self._schemas.get(event.dataschema)
        if recipients and any(name in data for name in schema.sealed_fields):
            return tuple(dict.fromkeys(p for p in recipients if p != self.signer.party))
        readers = self._readers.get(topic)
        if readers is None:
            readers = self._readers[topic] = tuple(
                p for p in self._registry.readers(topic) if p != self.signer.party
            )
        return readers

    def use_registry(self, registry: Registry, signer: EventSigner) -> None:
        """Build the next events with ``registry`` (a new version in force) and ``signer`` (its key id may
        have appeared with it): two references replaced together, between two publishes."""
        self._registry = registry
        self.signer = signer
        self._readers.clear()  # who reads which topic may have changed with it (receipts expected)

    def topic_of(self, event: Envelope) -> str:
        """The topic ``event`` is (or was) published to."""
        key = (event.source, event.dataschema)
        topic = self._topics.get(key)
        if topic is None:  # a few (source, schema) pairs: remembered, topic names are checked once
            topic = self._topics[key] = event_topic(event.source, self._schemas.get(event.dataschema))
        return topic

    def stop_intake(self) -> None:
        """Refuse new events (first step of the shutdown order)."""
        self._accepting = False

    async def run_sender(self, producer: KafkaProducerLike, stop: asyncio.Event) -> None:
        """Send committed entries; once ``stop`` is set, return as soon as the outbox is empty.

        While the broker is unreachable this keeps retrying with backoff; the runtime bounds the final drain
        with a timeout and cancels this task, leaving unsent entries on disk for the next start.
        """
        backoff = self._retry_backoff
        while True:
            batch = await self.outbox.pending(self._batch_size)
            if not batch:
                if stop.is_set():
                    return
                self.outbox.wakeup.clear()
                await wait_any(self.outbox.wakeup, stop, seconds=1.0)
                continue
            sent, failure = await self._send(producer, batch)
            if sent:
                await self.outbox.mark_sent(sent)
                self.sent_total += len(sent)
                self._metrics.outbox_depth.set(self.outbox.depth)
            if failure is not None:  # any client error: the unacknowledged entries stay, back off, retry
                refused = broker_refusal(failure, "Write")
                if refused is not None:  # an ACL problem an operator must fix: say so, keep retrying
                    _log.error("send refused by the broker; entries stay in the outbox",
                               reason=str(refused.reason), detail=refused.detail, pending=self.outbox.depth,
                               retry_in=backoff)  # fmt: skip
                else:
                    _log.warning("send failed; entries stay in the outbox", error=type(failure).__name__,
                                 pending=self.outbox.depth, retry_in=backoff)  # fmt: skip
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._retry_backoff

    async def _send(
        self, producer: KafkaProducerLike, batch: list[OutboxEntry]
    ) -> tuple[list[int], BaseException | None]:
        """Send ``batch``; return the sequence numbers the broker acknowledged and the first failure, if any.

        A ``send`` that raises part-way still leaves the records handed over before it in flight: they are
        awaited, and those acknowledged are reported, so they are not sent a second time.
        """
        futures = []
        failure: BaseException | None = None
        for entry in batch:
            try:
                futures.append(
                    await producer.send(entry.topic, value=entry.value, key=entry.key, headers=entry.headers)
                )
            except Exception as exc:  # noqa: BLE001 - a client error: what was handed over is still awaited
                failure = exc
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        now = time.time()
        acked = []
        by_type: collections.Counter[str] = collections.Counter()
        for entry, result in zip(batch, results, strict=False):
            if isinstance(result, BaseException):
                failure = failure or result
                continue
            acked.append(entry.seq)
            by_type[_header(entry.headers, "ce_type")] += 1
            self._metrics.publish_latency.observe(max(0.0, now - entry.created_at))
        for event_type, count in by_type.items():
            self._metrics.published.labels(type=event_type).inc(count)
        return acked, failure


def _header(headers: Sequence[tuple[str, bytes]], name: str) -> str:
    return next((value.decode("utf-8") for key, value in headers if key == name), "")
