"""An agency system's outage is ridden out, not dead-lettered (gateway/bus/breaker.py, issue 13).

The same pieces as ``test_subscriber.py`` (a real inbox on SQLite, real signed events, a scripted sink) over
:class:`tests.doubles.LogConsumer`, which keeps whole partition logs with positions, ``pause``, ``resume`` and
``seek``. Time is a manual clock the test moves: nothing sleeps for a delay, a five-day outage takes
milliseconds. What is checked:

* an event whose sink is down waits at the head of its partition (paused there, nothing after it handled or
  committed), is retried as the schedule says (backoff, ``Retry-After``, one trial per cool-down once the
  breaker is open) and is delivered when the sink returns, followed by the rest in order: no dead letter;
* other partitions flow on, and so do events for another sink; an event already delivered to one sink is
  not sent to it again while it waits for another;
* beyond the horizon the events needing the sink are dead-lettered as ``sink.failed``; a sink that answers
  again closes its breaker;
* the breaker states are exported as metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from gateway.bus.breaker import SinkHealth
from gateway.bus.delivery import RetryPolicy, SinkError
from gateway.bus.subscriber import Route
from gateway.contract.envelope import Envelope
from gateway.errors import Reason
from tests.doubles import Call, FakeRecord, LogConsumer
from tests.unit.bus.test_subscriber import (
    KCH,
    Reader,
    ScriptedSink,
    alert,
    header,
    open_reader,
    settled_outcomes,
)
from tests.world import World, example, recent

P0 = TopicPartition("xchg.kemlu.kbri-kuching.alert.v1", 0)
P1 = TopicPartition("xchg.kemlu.kbri-kuching.alert.v1", 1)
#: No jitter, so every delay is exact: 1, 2, 4, 8, 16, 30, 30, ... seconds; open after 3 failures.
POLICY = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.0, horizon=7 * 86400.0, breaker_threshold=3)


@dataclass
class ManualClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def down(retry_after: float | None = None) -> SinkError:
    return SinkError(
        "sink kemensos-case-system: HTTP 503", retryable=True, status=503, retry_after=retry_after
    )


def log_of(events: list[Envelope], tp: TopicPartition) -> list[FakeRecord]:
    return [FakeRecord.of(event, tp, offset) for offset, event in enumerate(events)]


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait for ``predicate`` (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def settle_loop(consumer: LogConsumer) -> None:
    """Let the loop run a few rounds at the current clock time (each fetch that finds nothing yields)."""
    start = consumer.fetches
    await until(lambda: consumer.fetches >= start + 5, "a few rounds of the loop")


@contextlib.asynccontextmanager
async def running(reader: Reader, consumer: LogConsumer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(reader.subscriber.run(consumer, reader.producer, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_a_long_outage_pauses_the_partition_and_everything_is_delivered_in_order_afterwards(
    tmp_path: Path, world: World, clock: ManualClock
) -> None:
    reader = await open_reader(tmp_path, world, retry=POLICY, clock=clock)
    try:
        first = [alert(world, n) for n in range(1, 4)]
        second = [alert(world, n) for n in range(11, 13)]
        consumer = LogConsumer({P0: log_of(first, P0), P1: log_of(second, P1)}, calls=reader.calls)
        reader.sink.down = down()
        async with running(reader, consumer):
            await until(lambda: consumer.paused == {P0, P1}, "both partitions to wait")
            assert reader.sink.attempts == {first[0].id: 1}  # the second head did not even try
            started = clock.now
            # five days of outage in one-hour steps: far beyond the seconds of retries a sink once had
            for _ in range(5 * 24):
                clock.advance(3600)
                await settle_loop(consumer)
            assert reader.dead_letters() == []
            assert consumer.committed == {}  # nothing past the heads
            # one trial per cool-down (30 s, shorter than a step): the dead system is not hammered
            assert sum(reader.sink.attempts.values()) == 1 + 5 * 24
            [(name, state, failures, outage, waiting)] = reader.subscriber.sink_states()
            assert (name, state, failures, waiting) == (reader.sink.name, "open", 1 + 5 * 24, 2)
            assert outage == clock.now - started
            assert reader.metric("xchg_sink_state", sink=name, state="open") == 1
            assert reader.metric("xchg_sink_waiting_events", sink=name) == 2

            reader.sink.down = None
            clock.advance(30)
            await until(lambda: len(reader.sink.delivered) == 5, "everything delivered")
            await until(lambda: consumer.committed == {P0: 3, P1: 2}, "the offsets committed")

        assert reader.dead_letters() == []
        delivered = reader.sink.delivered
        assert [e for e in delivered if e in {x.id for x in first}] == [e.id for e in first]  # per-case order
        assert [e for e in delivered if e in {x.id for x in second}] == [e.id for e in second]
        assert settled_outcomes(reader.database.path) == dict.fromkeys(delivered, "delivered")
        assert consumer.paused == set()
        assert reader.subscriber.sink_states() == [(reader.sink.name, "closed", 0, 0.0, 0)]
    finally:
        await reader.close()


def arrival(world: World, number: int) -> Envelope:
    (_, payload), *_ = example("alert.group-arrival", "1.0")
    data = {**payload, "alert_id": f"ALR-GA-2020-{number:06d}"}
    return world.event("id.trafficking.alert.group-arrival", data, by=KCH, now=recent(1))


def two_sinks(calls: list[Call]) -> list[Route]:
    """The agency's case system takes network alerts; its logistics desk takes group arrivals and both."""
    case_system = ScriptedSink(calls, name="case-system")
    logistics = ScriptedSink(calls, name="logistics")
    return [
        Route(case_system, ("id.trafficking.alert.network",)),
        Route(logistics, ("id.trafficking.alert.group-arrival", "id.trafficking.alert.network")),
    ]


async def test_other_partitions_and_other_sinks_keep_flowing_and_no_sink_gets_an_event_twice(
    tmp_path: Path, world: World, clock: ManualClock
) -> None:
    reader = await open_reader(tmp_path, world, retry=POLICY, clock=clock, routes=two_sinks)
    try:
        logistics = reader.subscriber.router.routes_for("id.trafficking.alert.group-arrival")[0].sink
        assert isinstance(logistics, ScriptedSink)
        network = [alert(world, n) for n in range(1, 3)]
        arrivals = [arrival(world, n) for n in range(1, 4)]
        consumer = LogConsumer({P0: log_of(network, P0), P1: log_of(arrivals, P1)}, calls=reader.calls)
        reader.sink.down = down()  # the case system is down, the logistics desk is up
        async with running(reader, consumer):
            await until(lambda: consumer.committed.get(P1) == 3, "the group arrivals, in full")
            assert consumer.paused == {P0}
            assert logistics.delivered == [e.id for e in arrivals]
            for _ in range(10):
                clock.advance(60)
                await settle_loop(consumer)
            assert P0 not in consumer.committed
            reader.sink.down = None
            clock.advance(60)
            await until(lambda: consumer.committed.get(P0) == 2, "the network alerts")
        assert reader.sink.delivered == [e.id for e in network]
        # the logistics desk got the first network alert once, before it waited for the case system
        assert [e for e in logistics.delivered if e in {n.id for n in network}] == [e.id for e in network]
        assert logistics.attempts[network[0].id] == 1
        assert reader.dead_letters() == []
    finally:
        await reader.close()


async def test_retry_after_is_honoured(tmp_path: Path, world: World, clock: ManualClock) -> None:
    reader = await open_reader(tmp_path, world, retry=POLICY, clock=clock)
    try:
        event = alert(world, 1)
        reader.sink.failures[event.id] = [down(retry_after=120.0)]
        consumer = LogConsumer({P0: log_of([event], P0)}, calls=reader.calls)
        async with running(reader, consumer):
            await until(lambda: consumer.paused == {P0}, "the event to wait")
            clock.advance(119)  # the backoff alone (1 s) would have tried again long ago
            await settle_loop(consumer)
            assert reader.sink.attempts[event.id] == 1
            clock.advance(1)
            await until(lambda: reader.sink.delivered == [event.id], "the attempt after Retry-After")
            await until(lambda: consumer.committed == {P0: 1}, "the commit")
    finally:
        await reader.close()


async def test_beyond_the_horizon_events_are_dead_lettered_as_sink_failed_and_a_trial_closes_the_breaker(
    tmp_path: Path, world: World, clock: ManualClock
) -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.0, horizon=600.0, breaker_threshold=3)
    reader = await open_reader(tmp_path, world, retry=policy, clock=clock)
    try:
        events = [alert(world, n) for n in range(1, 6)]
        consumer = LogConsumer({P0: log_of(events[:3], P0), P1: log_of(events[3:], P1)}, calls=reader.calls)
        reader.sink.down = down()
        async with running(reader, consumer):
            await until(lambda: consumer.paused == {P0, P1}, "both heads to wait")
            for _ in range(9):
                clock.advance(60)
                await settle_loop(consumer)
            assert reader.dead_letters() == []  # 540 s: still within the horizon
            clock.advance(60)
            await until(lambda: len(reader.dead_letters()) == 5, "every event dead-lettered")
            await until(lambda: consumer.committed == {P0: 3, P1: 2}, "the offsets past them")
            attempts = sum(reader.sink.attempts.values())
            assert attempts < 25  # beyond the horizon, events go without an attempt but for the trials
        for dead in reader.dead_letters():
            assert header(dead, "xchg-reason") == "sink.failed"
            assert "retry horizon of 600s" in header(dead, "xchg-detail")
        assert settled_outcomes(reader.database.path) == dict.fromkeys(
            (e.id for e in events), "dead-lettered"
        )
        assert reader.metric("xchg_dead_lettered_total", reason=str(Reason.SINK_FAILED)) == 5
    finally:
        await reader.close()


async def test_one_event_the_sink_chokes_on_is_dead_lettered_at_its_horizon_and_the_case_goes_on(
    tmp_path: Path, world: World, clock: ManualClock
) -> None:
    """Only that event fails (the others of its partition wait behind it, so no other was tried): at its
    horizon it is dead-lettered, and the next one is tried at once rather than taken for an outage."""
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.0, horizon=600.0, breaker_threshold=3)
    reader = await open_reader(tmp_path, world, retry=policy, clock=clock)
    try:
        events = [alert(world, n) for n in range(1, 4)]
        reader.sink.failures[events[0].id] = [down() for _ in range(1000)]
        consumer = LogConsumer({P0: log_of(events, P0)}, calls=reader.calls)
        async with running(reader, consumer):
            await until(lambda: consumer.paused == {P0}, "the event to wait")
            for _ in range(11):
                clock.advance(60)
                await settle_loop(consumer)
            await until(lambda: consumer.committed == {P0: 3}, "the case to go on")
        [dead] = reader.dead_letters()
        assert header(dead, "xchg-reason") == "sink.failed"
        assert reader.sink.delivered == [events[1].id, events[2].id]
    finally:
        await reader.close()


def test_the_breaker_opens_after_the_threshold_turns_half_open_and_closes_on_an_answer() -> None:
    clock = ManualClock()
    health = SinkHealth("case-system", POLICY, clock=clock)
    assert (health.state(), health.may_attempt(clock.now)) == ("closed", True)
    delays = [health.failed(down(), clock.now, event) for event in ("a", "a", "b")]
    assert delays == [1.0, 2.0, 4.0]
    assert health.state() == "open"
    assert health.several  # two events failed: the system is down, not choking on one event
    assert not health.may_attempt(clock.now)
    clock.advance(4)
    assert health.state() == "half-open"
    assert health.may_attempt(clock.now)
    assert health.failed(down(retry_after=7200.0), clock.now) == POLICY.max_retry_after  # capped
    assert health.state() == "open"
    assert health.outage(clock.now) == 4
    health.succeeded()
    assert (health.state(), health.failures, health.outage(clock.now)) == ("closed", 0, 0.0)


async def test_a_redriven_record_is_delivered_once_and_a_delivered_one_is_a_duplicate(
    tmp_path: Path, world: World, clock: ManualClock
) -> None:
    reader = await open_reader(tmp_path, world, retry=POLICY, clock=clock)
    try:
        event = alert(world, 1)
        record = FakeRecord.of(event, P0, 0)
        consumer = LogConsumer({}, calls=reader.calls)
        reader.sink.down = SinkError("sink kemensos-case-system: HTTP 422", retryable=False, status=422)
        async with running(reader, consumer):
            assert await reader.subscriber.redrive(record) == (
                "failed",
                "sink.refused: sink kemensos-case-system: HTTP 422",
            )
            reader.sink.down = None
            assert await reader.subscriber.redrive(record) == ("delivered", "")
            assert await reader.subscriber.redrive(record) == ("duplicate", "already delivered")
            tampered = FakeRecord(
                record.topic, 0, 0, record.key, (record.value or b"") + b" ", record.headers
            )
            assert await reader.subscriber.redrive(tampered) == ("rejected", "ce.data-not-canonical")
        assert reader.sink.delivered == [event.id]
        assert reader.dead_letters() == []  # a re-drive never adds dead letters: the original stays
        assert settled_outcomes(reader.database.path) == {event.id: "delivered"}
    finally:
        await reader.close()
