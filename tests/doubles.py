"""Test doubles: what the gateway runtime hands a plug-in, and the Kafka client objects the bus talks to.

:class:`WorldPublish` is the runtime's publish function minus Kafka: ``build_event`` as one party of a
:class:`~tests.world.World` (validate the payload, seal it for the recipients, sign) and an outbox that keeps
one event per id, as the real outbox's ``INSERT OR IGNORE`` does. A record that "works" against it is one
the gateway would accept and deduplicate.

:class:`FakeRecord`, :class:`FakeConsumer` and :class:`FakeProducer` imitate the parts of aiokafka that
:mod:`gateway.bus.subscriber` and :mod:`gateway.bus.publisher` use (their ``ConsumerLike``, ``ProducerLike``
and ``KafkaProducerLike`` protocols), so the consume and send loops run offline against a real outbox and
inbox. Both fakes can be told to fail their next sends or commits, and append every call to a ``calls``
list that several doubles may share, so a test can assert the order of fetches, produces and commits.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from gateway.bus.metrics import GatewayMetrics
from gateway.contract.envelope import Envelope
from gateway.errors import GatewayError, Reason
from gateway.runtime.intake import IntakeBounds
from gateway.runtime.plugins import PluginContext
from tests.world import World

__all__ = [
    "IMMEDIATE",
    "Call",
    "FakeConsumer",
    "FakeProducer",
    "FakeRecord",
    "LogConsumer",
    "Produced",
    "Published",
    "WorldPublish",
    "plugin_context",
]

#: Drop-folder bounds for tests that drop a file and process it at once (no settling interval: the files
#: are complete when written; the interval itself is tested in tests/unit/runtime/test_intake.py).
IMMEDIATE = IntakeBounds(settle_seconds=0)


@dataclass(frozen=True)
class Published:
    """One call of a publish function: its arguments (the data copied, so later edits do not show)."""

    type: str
    data: dict[str, Any]
    recipients: tuple[str, ...]
    dataschema: str | None
    event_id: str | None


@dataclass
class WorldPublish:
    """``build_event`` as ``party`` plus an outbox keyed by event id (see the module docstring).

    ``attempts`` records every call in order, refused ones included; ``calls`` only those that were
    published. ``refuse_on_call=(n, reason)`` refuses the n-th attempt with ``reason``, as the runtime does
    when it cannot take events now (``outbox.full``...), and, like the runtime, every attempt started after
    it in the same turn of the event loop (the rest of a drop file's chunk; see ``sources.PublishFn``).
    """

    world: World
    party: str
    refuse_on_call: tuple[int, Reason] | None = None
    attempts: list[Published] = field(default_factory=list)
    calls: list[Published] = field(default_factory=list)
    outbox: dict[str, Envelope] = field(default_factory=dict)
    _refusing: bool = False

    async def __call__(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        recipients: Sequence[str] = (),
        dataschema: str | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        call = Published(event_type, copy.deepcopy(dict(data)), tuple(recipients), dataschema, event_id)
        self.attempts.append(call)
        refusal = self.refuse_on_call
        if refusal is not None and (self._refusing or len(self.attempts) == refusal[0]):
            if not self._refusing:
                self._refusing = True
                asyncio.get_running_loop().call_soon(setattr, self, "_refusing", False)
            raise GatewayError(refusal[1], "the gateway cannot take events now")
        event = self.world.event(
            event_type, data, by=self.party, recipients=recipients, dataschema=dataschema, event_id=event_id
        )
        self.calls.append(call)
        self.outbox.setdefault(event.id, event)
        return event

    def of_type(self, suffix: str) -> list[Envelope]:
        """The events in the outbox whose type ends with ``suffix``."""
        return [e for e in self.outbox.values() if e.type.endswith(suffix)]

    def payloads(self, suffix: str) -> list[dict[str, Any]]:
        """The (unsealed) payloads of :meth:`of_type`."""
        return [json.loads(e.data) for e in self.of_type(suffix)]

    def subjects(self, suffix: str) -> set[str]:
        return {e.subject for e in self.of_type(suffix)}


def plugin_context(tmp_path: Path, party: str) -> PluginContext:
    """The context a plug-in factory gets from the runtime of ``party``: paths under ``tmp_path``."""
    return PluginContext(
        party=party, base_dir=tmp_path, data_dir=tmp_path / "state", metrics=GatewayMetrics(party=party)
    )


# ---- Kafka (aiokafka) -----------------------------------------------------------------------------------

Call = tuple[Any, ...]
"""One entry of a shared ``calls`` list: the method name first, then what identifies the call."""


@dataclass
class FakeRecord:
    """Imitates ``aiokafka.structs.ConsumerRecord`` as ``AIOKafkaConsumer.getmany`` returns it: the fields a
    consume loop reads (``topic``, ``partition``, ``offset``, ``key``, ``value``, ``headers`` as
    ``(name, bytes)`` pairs). aiokafka also fills timestamps, a checksum and serialised sizes, which the
    gateway never reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def of(cls, event: Envelope, tp: TopicPartition, offset: int) -> FakeRecord:
        """The record ``event`` is on the wire (``Envelope.to_kafka``), fetched from ``tp`` at ``offset``."""
        record = event.to_kafka()
        return cls(tp.topic, tp.partition, offset, record.key, record.value, list(record.headers))


@dataclass
class FakeConsumer:
    """Imitates ``AIOKafkaConsumer.getmany``, ``commit`` and ``highwater`` for a consume loop.

    ``getmany`` hands out ``fetches`` one per call, in order (each a ``{TopicPartition: [records]}`` mapping
    as aiokafka returns it); once they are used up it sets ``stop`` and returns ``{}``, so a loop that runs
    until ``stop`` ends after the last fetch. ``commit(offsets)`` appends ``offsets`` (the next offset to read
    per partition, as aiokafka takes them) to ``commits``; while ``fail_commits`` is above zero it instead
    counts down and raises ``CommitFailedError``, as a commit during a rebalance does. ``highwater`` answers
    from ``highwaters`` (None for an unknown partition, as before the first fetch). Every call is appended to
    ``calls``: ``("getmany", number of records)``, ``("commit", offsets)`` (successful or not) and
    ``("commit-failed", offsets)``.
    """

    fetches: list[dict[TopicPartition, list[FakeRecord]]]
    stop: asyncio.Event
    calls: list[Call] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    fail_commits: int = 0
    highwaters: dict[TopicPartition, int] = field(default_factory=dict)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        if not self.fetches:
            self.stop.set()
            self.calls.append(("getmany", 0))
            return {}
        fetch = self.fetches.pop(0)
        self.calls.append(("getmany", sum(len(records) for records in fetch.values())))
        return fetch

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        committed = dict(offsets or {})
        if self.fail_commits > 0:
            self.fail_commits -= 1
            self.calls.append(("commit-failed", committed))
            raise CommitFailedError("the fake consumer was told to fail this commit")
        self.calls.append(("commit", committed))
        self.commits.append(committed)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters.get(partition)

    def pause(self, *partitions: TopicPartition) -> None:
        self.calls.append(("pause", *partitions))

    def resume(self, *partitions: TopicPartition) -> None:
        self.calls.append(("resume", *partitions))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", partition, offset))


@dataclass
class LogConsumer:
    """Imitates a consumer over whole partition logs, as the broker keeps them: a fetch position per
    partition, ``pause``/``resume``/``seek`` as aiokafka has them, ``getmany`` returning up to
    ``max_records`` records from each partition that is not paused, from its position on. ``records[i]``
    of a log must have offset ``i``. It never sets ``stop`` itself (a test stops the loop once what it
    waits for happened); a fetch that finds nothing yields to the event loop. ``commit`` keeps the last
    committed offset per partition in ``committed``; calls go to ``calls`` like :class:`FakeConsumer`'s.
    """

    logs: dict[TopicPartition, list[FakeRecord]]
    calls: list[Call] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    fetches: int = 0

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[FakeRecord]]:
        self.fetches += 1
        batch: dict[TopicPartition, list[FakeRecord]] = {}
        for tp, log in self.logs.items():
            if tp in self.paused:
                continue
            start = self.positions.get(tp, self.committed.get(tp, 0))
            records = log[start : start + (max_records or 500)]
            if records:
                batch[tp] = records
                self.positions[tp] = start + len(records)
        self.calls.append(("getmany", sum(len(r) for r in batch.values())))
        if not batch:
            await asyncio.sleep(0.001)  # nothing there: let the test (or the clock) move on
        return batch

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self.calls.append(("commit", dict(offsets or {})))
        self.committed.update(offsets or {})

    def highwater(self, partition: TopicPartition) -> int | None:
        return len(self.logs.get(partition, ()))

    def pause(self, *partitions: TopicPartition) -> None:
        self.calls.append(("pause", *partitions))
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.calls.append(("resume", *partitions))
        self.paused.difference_update(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", partition, offset))
        self.positions[partition] = offset


@dataclass(frozen=True)
class Produced:
    """One record handed to :class:`FakeProducer` (``send`` or ``send_and_wait``)."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        """The text of the header ``name`` (the last one if it repeats), or None."""
        values = [value for key, value in self.headers if key == name]
        return values[-1].decode("utf-8") if values else None


def _connection_lost() -> Exception:
    return KafkaConnectionError("the fake producer was told to fail this send")


@dataclass
class FakeProducer:
    """Imitates ``AIOKafkaProducer.send`` (the outbox sender) and ``send_and_wait`` (dead letters).

    ``send`` returns a future, as aiokafka's does, that resolves when the broker acknowledges the record;
    ``send_and_wait`` waits for that acknowledgement. With ``auto_ack`` (the default) a record is
    acknowledged at once; without it ``send`` futures stay pending until the test calls :meth:`ack` or
    :meth:`nack`, so it can look at the world between hand-over and acknowledgement. ``fail_sends`` > 0
    makes the next sends fail (counting down): ``send`` returns a failed future, ``send_and_wait`` raises,
    with ``error()`` (default ``KafkaConnectionError``).

    ``attempts`` holds every record handed over, ``sent`` those acknowledged, in order; every call is
    appended to ``calls`` as ``(method, topic)`` and each failure as ``(method + "-failed", topic)``.
    """

    calls: list[Call] = field(default_factory=list)
    fail_sends: int = 0
    auto_ack: bool = True
    error: Callable[[], Exception] = _connection_lost
    attempts: list[Produced] = field(default_factory=list)
    sent: list[Produced] = field(default_factory=list)
    _unacked: list[tuple[Produced, asyncio.Future[None]]] = field(default_factory=list)
    _handed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        record = await self._hand_over("send", topic, value, key, headers)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._should_fail():
            self.calls.append(("send-failed", topic))
            future.set_exception(self.error())
        elif self.auto_ack:
            self.sent.append(record)
            future.set_result(None)
        else:
            self._unacked.append((record, future))
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        record = await self._hand_over("send_and_wait", topic, value, key, headers)
        if self._should_fail():
            self.calls.append(("send_and_wait-failed", topic))
            raise self.error()
        self.sent.append(record)

    @property
    def unacked(self) -> int:
        """Records handed over by ``send`` and neither acknowledged nor failed yet (``auto_ack=False``)."""
        return len(self._unacked)

    def ack(self, count: int | None = None) -> None:
        """Acknowledge the oldest ``count`` pending records (all by default)."""
        for _ in range(len(self._unacked) if count is None else count):
            record, future = self._unacked.pop(0)
            self.sent.append(record)
            future.set_result(None)

    def nack(self, count: int = 1) -> None:
        """Fail the oldest ``count`` pending records with ``error()`` (the broker did not take them)."""
        for _ in range(count):
            record, future = self._unacked.pop(0)
            self.calls.append(("send-failed", record.topic))
            future.set_exception(self.error())

    async def wait_for_attempts(self, count: int) -> None:
        """Return once at least ``count`` records have been handed over (no polling, no sleeping)."""
        async with self._handed:
            await self._handed.wait_for(lambda: len(self.attempts) >= count)

    async def _hand_over(
        self,
        method: str,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> Produced:
        record = Produced(topic, value, key, list(headers or ()))
        self.calls.append((method, topic))
        self.attempts.append(record)
        async with self._handed:
            self._handed.notify_all()
        return record

    def _should_fail(self) -> bool:
        if self.fail_sends <= 0:
            return False
        self.fail_sends -= 1
        return True
