"""No single record stops the consume loop (issue 18; the rules are in :mod:`gateway.bus.subscriber`).

Same pieces as ``test_subscriber.py`` (real inbox on SQLite, fake Kafka client, scripted sink): a verifier
that raises, a dead-letter produce refused for its size, and a record whose handling keeps raising each end
with the record dead-lettered and the next one delivered; an infrastructure failure (a full disk) is never
blamed on the record.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from gateway.bus.subscriber import POISON_ATTEMPTS
from gateway.errors import Reason
from tests.doubles import FakeRecord
from tests.unit.bus.test_subscriber import TP, Reader, alert, header, open_reader
from tests.world import World


@pytest.fixture
async def reader(tmp_path: Path, world: World) -> AsyncIterator[Reader]:
    opened = await open_reader(tmp_path, world)
    yield opened
    await opened.close()


class ExplodingVerifier:
    """The real verifier, except that it raises for one event id (a bug met by one input)."""

    def __init__(self, inner: Any, poison: str) -> None:
        self._inner = inner
        self._poison = poison

    def verify_kafka(self, value: Any, headers: Any, key: Any, **kwargs: Any) -> Any:
        if any(name == "ce_id" and raw == self._poison.encode() for name, raw in headers):
            raise OverflowError("date value out of range")
        return self._inner.verify_kafka(value, headers, key, **kwargs)


async def test_a_verifier_exception_dead_letters_the_record_and_the_loop_goes_on(
    reader: Reader, world: World
) -> None:
    bad, good = alert(world, 1), alert(world, 2)
    reader.subscriber._verifier = ExplodingVerifier(reader.subscriber._verifier, bad.id)  # type: ignore[assignment]
    consumer = await reader.consume({TP: [FakeRecord.of(bad, TP, 0), FakeRecord.of(good, TP, 1)]})
    [dead] = reader.dead_letters()
    assert header(dead, "xchg-reason") == Reason.INTERNAL_ERROR
    assert header(dead, "xchg-detail") == "verification raised OverflowError"  # the type, not the message
    assert reader.sink.delivered == [good.id]
    assert consumer.commits == [{TP: 2}]


async def test_a_dead_letter_refused_for_size_is_bounded_and_lands(reader: Reader, world: World) -> None:
    huge = FakeRecord(TP.topic, 0, 0, b"CASE-1", b'"' + b"x" * 700_000 + b'"', [("ce_id", b"evt")])
    good = alert(world, 2)
    reader.producer.fail_sends = 1
    reader.producer.error = lambda: MessageSizeTooLargeError("too large for the broker")
    consumer = await reader.consume({TP: [huge, FakeRecord.of(good, TP, 1)]})
    [dead] = reader.dead_letters()  # one attempt refused, the bounded one landed
    assert header(dead, "xchg-reason") == Reason.SIZE_EXCEEDED
    assert header(dead, "xchg-truncated") == "1"
    assert dead.value is not None
    assert len(dead.value) < 700_000
    assert reader.subscriber.dead_letter_limits.max_record_bytes < 1_048_576
    assert reader.subscriber.stalled is None
    assert reader.sink.delivered == [good.id]
    assert consumer.commits == [{TP: 2}]


async def test_a_record_whose_handling_keeps_raising_is_dead_lettered_after_a_few_attempts(
    reader: Reader, world: World
) -> None:
    bad, good = alert(world, 1), alert(world, 2)
    router = reader.subscriber.router
    deliver = router.deliver

    async def flaky(pending: Any) -> Any:
        if pending.accepted.event.id == bad.id:
            raise TypeError("a bug in a sink route")
        return await deliver(pending)

    router.deliver = flaky  # type: ignore[method-assign]
    fetch = {TP: [FakeRecord.of(bad, TP, 0), FakeRecord.of(good, TP, 1)]}
    for _ in range(POISON_ATTEMPTS - 1):  # the supervisor restarts the loop; it reads the record again
        with pytest.raises(TypeError):
            await reader.consume(fetch)
        assert reader.dead_letters() == []
    consumer = await reader.consume(fetch)
    [dead] = reader.dead_letters()
    assert header(dead, "xchg-reason") == Reason.INTERNAL_ERROR
    assert header(dead, "xchg-detail") == "handling raised TypeError"
    assert reader.sink.delivered == [good.id]
    assert consumer.commits == [{TP: 2}]


async def test_a_full_disk_is_never_blamed_on_the_record(tmp_path: Path, world: World) -> None:
    reader = await open_reader(tmp_path, world)
    try:
        event = alert(world, 1)
        note = reader.inbox.note

        def full(*args: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        reader.inbox.note = full  # type: ignore[method-assign]
        for _ in range(POISON_ATTEMPTS + 2):
            with pytest.raises(OSError, match="No space"):
                await reader.consume({TP: [FakeRecord.of(event, TP, 0)]})
        assert reader.dead_letters() == []  # however often it recurs
        reader.inbox.note = note  # type: ignore[method-assign]
        consumer = await reader.consume({TP: [FakeRecord.of(event, TP, 0)]})
        assert consumer.commits == [{TP: 1}]
    finally:
        await reader.close()
