"""The recipient's side of delivery receipts (gateway/bus/receipts.py, gateway/contract/receipt.py; issue 13).

Offline: the issuer's publish is a recorder. Checked: every finished record of an exchange topic gets a
receipt that the contract accepts (schema, no personal data), journaled before its outcome is noted and
published at the flush; a crash between the two replays the journal at the next start with the same receipt
ids (a receipt is never lost nor doubled); receipts themselves are never receipted; a rejected record gets a
receipt only when it names a registered source other than us. (The sender's side, matching and refusing
receipts on a real broker: tests/integration/test_delivery_receipts.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from gateway.bus.metrics import GatewayMetrics
from gateway.bus.receipts import ReceiptIssuer
from gateway.contract.envelope import Envelope
from gateway.contract.receipt import RECEIPT_TYPE, receipt_id, record_digest
from tests.doubles import FakeRecord
from tests.world import World, example

KCH = "kemlu.kbri-kuching"
TP = TopicPartition("xchg.kemlu.kbri-kuching.alert.v1", 2)


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], str]] = []

    async def __call__(self, event_type: str, data: dict[str, Any], *, event_id: str, internal: bool) -> Any:
        assert internal
        self.published.append((event_type, data, event_id))
        return None


def issuer(world: World, journal: Path, publish: Recorder) -> ReceiptIssuer:
    return ReceiptIssuer(
        party="kemensos",
        registry=world.registry,
        publish=publish,
        journal=journal,
        metrics=GatewayMetrics(party="kemensos"),
    )


def alert(world: World) -> Envelope:
    return world.event("id.trafficking.alert.network", example("alert.network", "1.0")[0][1], by=KCH)


async def test_a_receipt_is_journaled_then_published_and_a_crash_replays_it_once(tmp_path: Path) -> None:
    world = World.build()
    journal = tmp_path / "receipts.journal"
    event = alert(world)
    record = FakeRecord.of(event, TP, 41)
    first = Recorder()
    crashed = issuer(world, journal, first)
    await crashed.attach()
    crashed.finished(record, event, "delivered", None)
    assert journal.stat().st_size > 0  # on disk before the outcome is noted
    crashed.close()  # the process dies before the flush: nothing was published
    assert first.published == []

    again = Recorder()
    restarted = issuer(world, journal, again)
    await restarted.attach()
    assert restarted.pending == 1
    await restarted.flush()
    [(event_type, data, rid)] = again.published
    assert event_type == RECEIPT_TYPE
    digest = record_digest(record.key, record.value, record.headers)
    assert rid == receipt_id("kemensos", KCH, event.id, "delivered", digest)
    assert data == {
        "event_id": event.id, "event_source": KCH, "event_type": event.type, "record_sha256": digest,
        "read_from": {"topic": TP.topic, "partition": 2, "offset": 41}, "outcome": "delivered",
        "finished_at": data["finished_at"],
    }  # fmt: skip
    assert journal.stat().st_size == 0  # committed to the outbox: the journal is emptied
    # the contract accepts it as Kemensos's event (schema, no personal data, permission to publish)
    signed = world.event(RECEIPT_TYPE, data, by="kemensos", event_id=rid)
    assert signed.id == rid
    restarted.close()


async def test_receipts_and_anonymous_rejections_get_no_receipt(tmp_path: Path) -> None:
    world = World.build()
    publish = Recorder()
    receipts = issuer(world, tmp_path / "receipts.journal", publish)
    await receipts.attach()
    event = alert(world)
    receipt_topic = TopicPartition("xchg.kemlu.kbri-kuching.delivery.v1", 0)
    receipts.finished(FakeRecord.of(event, receipt_topic, 0), event, "delivered", None)  # never receipted
    anonymous = FakeRecord(TP.topic, 2, 7, b"k", b"garbage", [])
    receipts.finished(anonymous, None, "rejected", "parse.invalid-json")  # names no source
    forged = FakeRecord(TP.topic, 2, 8, b"k", b"garbage", [("ce_source", b"iom"), ("ce_id", b"x-1")])
    receipts.finished(forged, None, "rejected", "sig.missing")  # told to the party it claims to be
    ours = FakeRecord(TP.topic, 2, 9, b"k", b"garbage", [("ce_source", b"kemensos"), ("ce_id", b"x-2")])
    receipts.finished(ours, None, "rejected", "sig.missing")  # claims to be us: nobody to tell
    await receipts.flush()
    assert [(d["event_source"], d["outcome"], d["reason"]) for _, d, _ in publish.published] == [
        ("iom", "rejected", "sig.missing")
    ]
    receipts.close()
