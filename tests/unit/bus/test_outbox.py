"""The durable outbox against a model: what ``pending`` hands the sender, in which order, across restarts.

The sender must see every unsent entry exactly in commit order until it is marked sent (a re-committed
event id is ignored), and a restart must find exactly the unsent ones. Hypothesis drives random
interleavings of commits, sends (with partial acknowledgements) and restarts, and compares each
``pending`` answer with a plain list.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.bus.database import Database
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.publisher import Publisher
from gateway.contract.envelope import Envelope
from gateway.errors import GatewayError, Reason
from tests.world import World, example

ALERT = "id.trafficking.alert.network"
_POOL = 12  # distinct events; commits draw from them, so an id is sometimes committed twice

Operation = tuple[str, int, int]  # (kind, a, b)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.integers(0, _POOL - 1), st.integers(1, 4)),  # ids a.., b of them
        st.tuples(st.just("send"), st.integers(1, 5), st.integers(0, 3)),  # pending(a), leave out index b
        st.tuples(st.just("restart"), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@pytest.fixture(scope="module")
def pool(world: World) -> list[Envelope]:
    (_, alert), *_ = example("alert.network", "1.0")
    return [
        world.event(
            "id.trafficking.alert.network", {**alert, "alert_id": f"ALR-T-{i:04d}"}, by="kemlu.kbri-kuching"
        )
        for i in range(_POOL)
    ]


async def _open(path: Path) -> tuple[Database, Outbox]:
    database = Database(path, durable=True)
    await database.open()
    outbox = Outbox(database)
    await outbox.attach()
    return database, outbox


async def _play(directory: Path, pool: list[Envelope], script: list[Operation]) -> None:
    database, outbox = await _open(directory / "outbox.db")
    unsent: list[str] = []  # the model: unsent event ids in commit order
    known: set[str] = set()
    try:
        for kind, a, b in script:
            if kind == "commit":
                events = [pool[(a + i) % _POOL] for i in range(b)]
                await asyncio.gather(*(outbox.put(f"topic-{e.id[:2]}", e) for e in events))
                for event in events:
                    if event.id not in known:
                        known.add(event.id)
                        unsent.append(event.id)
            elif kind == "send":
                batch = await outbox.pending(a)
                assert [entry.event_id for entry in batch] == unsent[:a]
                assert all(entry.value == _by_id(pool, entry.event_id).data for entry in batch)
                acked = [entry for index, entry in enumerate(batch) if index != b]  # b may miss: all acked
                await outbox.mark_sent([entry.seq for entry in acked])
                for entry in acked:
                    unsent.remove(entry.event_id)
            else:
                await database.close()
                database, outbox = await _open(directory / "outbox.db")
            assert outbox.depth == len(unsent)
        assert [entry.event_id for entry in await outbox.pending(_POOL)] == unsent
    finally:
        await database.close()


def _by_id(pool: list[Envelope], event_id: str) -> Envelope:
    return next(event for event in pool if event.id == event_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=operations)
def test_pending_matches_the_model(
    tmp_path_factory: pytest.TempPathFactory, pool: list[Envelope], script: list[Operation]
) -> None:
    asyncio.run(_play(tmp_path_factory.mktemp("outbox"), pool, script))


def test_concurrent_publish_calls_are_decided_in_call_order(tmp_path: Path, world: World) -> None:
    """What drop folders rely on (``sources.PublishFn``): with room for 5, a chunk of 8 concurrent calls
    gets the first 5 accepted and every later one refused with ``outbox.full``, committed in call order."""
    (_, alert), *_ = example("alert.network", "1.0")
    party = "kemlu.kbri-kuching"

    async def scenario() -> tuple[list[object], list[str]]:
        database = Database(tmp_path / "outbox.db", durable=True)
        await database.open()
        outbox = Outbox(database, max_backlog=5)
        await outbox.attach()
        member = world.members[party]
        publisher = Publisher(signer=member.signer, registry=world.registry, schemas=world.schemas,
                              outbox=outbox, metrics=GatewayMetrics(party=party))  # fmt: skip
        try:
            ids = [str(uuid.uuid4()) for _ in range(8)]
            outcomes = await asyncio.gather(
                *(publisher.publish(ALERT, {**alert, "alert_id": f"ALR-C-{i}"}, event_id=event_id)
                  for i, event_id in enumerate(ids)),
                return_exceptions=True,
            )  # fmt: skip
            committed = [entry.event_id for entry in await outbox.pending(10)]
            decided = [o.reason if isinstance(o, GatewayError) else getattr(o, "id", o) for o in outcomes]
            return decided, committed
        finally:
            await database.close()

    decided, committed = asyncio.run(scenario())
    assert decided[5:] == [Reason.OUTBOX_FULL] * 3
    assert committed == decided[:5]
