"""The performance shortcuts on the hot paths give exactly what the straightforward code gives.

Each shortcut (docs/PERFORMANCE.md, "Hot-path shortcuts") is checked against the reference it replaces:
one walk instead of two for the canonical check, orjson instead of the strict parser for canonical DSSE
envelopes, ``bytes.translate`` instead of a regular expression for base64, memoised pure functions, fewer
envelope copies when signing, and the subscriber's per-batch inbox query with its one-event crash window.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bus.database import Database
from gateway.bus.inbox import Inbox
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.subscriber import Route, Subscriber
from gateway.contract.canonical import _FAST, _SLOW, _fast_path_applies, _scan_parsed, loads_if_canonical
from gateway.contract.dsse import _strict, normalize_time
from gateway.contract.envelope import Envelope
from gateway.contract.policy import may_publish
from gateway.contract.sign import _uuid4, _zulu
from gateway.contract.strictjson import depth_exceeds, parse_json
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError
from tests.doubles import FakeConsumer, FakeProducer, FakeRecord
from tests.world import World, example, recent

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False)
)  # fmt: skip
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=400)
@given(_json, st.integers(1, 6))
def test_one_walk_decides_the_fast_path_and_the_depth_like_the_two_walks(value: Any, limit: int) -> None:
    parsed = orjson.loads(orjson.dumps(value))  # what the walk is given: orjson's own output
    scan = _scan_parsed(parsed, limit)
    if depth_exceeds(parsed, limit):
        assert scan not in (_FAST, _SLOW)
    else:
        assert scan == (_FAST if _fast_path_applies(parsed) else _SLOW)


@settings(max_examples=300)
@given(_json)
def test_loads_if_canonical_agrees_with_the_strict_parser(value: Any) -> None:
    for raw in (
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS),
        orjson.dumps(value),
        orjson.dumps(value) + b" ",
    ):
        fast = loads_if_canonical(raw, max_depth=4)
        if fast is not None:  # only ever for canonical bytes, and then the strict parser agrees
            assert fast == parse_json(raw, max_depth=4)


@pytest.mark.parametrize("raw", [b'{"a":1,"a":1}', b'{"a":NaN}', b'{"b":1,"a":2}', b"\xef\xbb\xbf{}",
                                 b"[[[[[1]]]]]", b'{"a":9007199254740993}', b'{"a": 1}'])  # fmt: skip
def test_loads_if_canonical_leaves_everything_else_to_the_strict_parser(raw: bytes) -> None:
    assert loads_if_canonical(raw, max_depth=4) is None


@settings(max_examples=500)
@given(st.text(alphabet="AQz9+/=-_ \n*", max_size=12), st.booleans())
def test_base64_check_equals_the_regular_expression(text: str, urlsafe: bool) -> None:
    alphabet = rb"[A-Za-z0-9\-_]" if urlsafe else rb"[A-Za-z0-9+/]"
    data = text.encode()
    expected = bool(re.fullmatch(alphabet + rb"*={0,2}", data)) and not len(data) % 4
    try:
        _strict(data, urlsafe=urlsafe)
    except ValueError:
        assert not expected
    else:
        assert expected


def test_memoised_time_normalisation_still_refuses_every_time() -> None:
    assert normalize_time("2020-06-18T19:24:53+02:00") == "2020-06-18T17:24:53Z"
    assert normalize_time("2020-06-18T19:24:53+02:00") == "2020-06-18T17:24:53Z"  # from the memo
    for _ in range(2):
        with pytest.raises(GatewayError):
            normalize_time("2020-02-30T00:00:00Z")
    long_fraction = "2020-06-18T17:24:53." + "1" * 300 + "Z"  # beyond the memo's length bound
    assert normalize_time(long_fraction) == long_fraction


def test_uuid_and_time_formatting_match_the_standard_library() -> None:
    import uuid  # noqa: PLC0415

    for _ in range(200):
        text = _uuid4()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    for instant in (datetime(2026, 11, 28, 6, 0, 5, tzinfo=UTC), datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)):
        assert _zulu(instant) == instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_publish_permission_memo_answers_like_the_registry(world: World) -> None:
    types = [s.type for s in world.schemas.schemas()] + ["id.trafficking.unknown", "*"]
    for _ in range(2):  # the second round comes from the memo
        for party in world.registry.parties.values():
            for event_type in types:
                assert may_publish(party, event_type) == party.may_publish(event_type)


def test_signing_with_one_copy_equals_signing_with_two(world: World) -> None:
    event = world.event(
        "id.trafficking.alert.network", example("alert.network", "1.0")[0][1], by="kemlu.kbri-kuching"
    )
    assert event.dssematerial
    assert event.signedextattrs
    unsigned = Envelope.from_attributes(
        {k: v for k, v in event.attributes().items() if k not in ("dssematerial", "signedextattrs")},
        event.data,
    )
    slow = unsigned.with_extensions(signedextattrs=event.signedextattrs).with_extensions(
        dssematerial=event.dssematerial
    )
    assert unsigned.with_signature(event.signedextattrs, event.dssematerial) == slow == event
    assert event.only_extensions(list(event.extensions)) is event  # nothing to drop: the same object


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


# ---- the subscriber: one inbox query per batch, one outcome at a time --------------------------------


@dataclass
class _Sink:
    """Checks, at every delivery, that every earlier delivery's outcome is already on disk: in the inbox's
    database or its journal (what a restarted process would find)."""

    inbox_db: Path
    name: str = "checking"
    delivered: list[str] = field(default_factory=list)
    unrecorded_at_delivery: list[int] = field(default_factory=list)

    async def deliver(self, accepted: Accepted) -> None:
        import sqlite3  # noqa: PLC0415

        with sqlite3.connect(self.inbox_db) as connection:
            recorded = {row[0] for row in connection.execute("SELECT id FROM inbox")}
        journal = self.inbox_db.with_name(f"{self.inbox_db.name}.outcomes")
        recorded |= {json.loads(line)[1] for line in journal.read_text("utf-8").splitlines()}
        self.unrecorded_at_delivery.append(len(set(self.delivered) - recorded))
        self.delivered.append(accepted.event.id)

    async def close(self) -> None:
        return None


async def test_a_batch_is_delivered_once_per_event_and_outcomes_precede_the_commit(
    tmp_path: Path, world: World
) -> None:
    """Duplicates inside a batch and across batches are skipped; each outcome is on disk (the inbox's
    journal) before the next delivery (window: one event), and in the database before the batch's commit."""
    alert = example("alert.network", "1.0")[0][1]
    events = [world.event("id.trafficking.alert.network", {**alert, "alert_id": f"ALR-KCH-2020-{i:06d}"},
                          by="kemlu.kbri-kuching", now=recent(1)) for i in range(5)]  # fmt: skip
    tp = TopicPartition("xchg.kemlu.kbri-kuching.alert.v1", 0)
    records = [events[0], events[1], events[0], events[2], events[3], events[4], events[3]]  # repeats
    batch = [FakeRecord.of(e, tp, offset) for offset, e in enumerate(records)]
    bad = events[2].to_kafka()
    batch.append(FakeRecord(tp.topic, 0, len(batch), bad.key, bad.value + b" ", bad.headers))  # not canonical
    later = [FakeRecord.of(events[1], tp, len(batch))]  # a redelivery in the next batch

    db = Database(tmp_path / "inbox.db", durable=False)
    await db.open()
    inbox = Inbox(db)
    await inbox.attach()
    inbox.note(events[4].source, events[4].id, "delivered")  # delivered before a crash
    await inbox.settle()
    sink = _Sink(tmp_path / "inbox.db")
    stop = asyncio.Event()
    consumer = FakeConsumer([{tp: batch}, {tp: later}], stop)
    producer = FakeProducer()
    subscriber = Subscriber(party="kemensos", verifier=world.verifier("kemensos"), inbox=inbox,
                            routes=[Route(sink)], dlq_topic="xchg.kemensos.dlq.v1",
                            metrics=GatewayMetrics(party="kemensos"))  # fmt: skip
    try:
        await asyncio.wait_for(subscriber.run(consumer, producer, stop), timeout=30)
        assert sink.delivered == [events[0].id, events[1].id, events[2].id, events[3].id]
        assert max(sink.unrecorded_at_delivery) == 0  # each outcome on disk before the next delivery
        assert [record.topic for record in producer.sent] == ["xchg.kemensos.dlq.v1"]
        assert consumer.commits[0] == {tp: len(batch)}
        assert consumer.commits[1] == {tp: len(batch) + 1}
        assert await inbox.seen([(e.source, e.id) for e in events]) == {(e.source, e.id) for e in events}
    finally:
        await db.close()
