"""The recipient's side of delivery receipts (gateway/bus/receipts.py, gateway/contract/receipt.py; issue 13).

Offline: the issuer's publish is a recorder. Checked: every finished record of an exchange topic gets a
receipt that the contract accepts (schema, no personal data), journaled before its outcome is noted and
published at the flush; a crash between the two replays the journal at the next start with the same receipt
ids (a receipt is never lost nor doubled); receipts themselves are never receipted; a rejected record gets a
receipt only when it names a registered source other than us. The sender's ledger, over a real outbox
database: receipts for unknown events, naming another record or from a party that cannot have read the
event are refused and mark nothing; matching ones complete the event and clear the unacknowledged gauge
(on a real broker: tests/integration/test_delivery_receipts.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from gateway.bus.database import Database
from gateway.bus.metrics import GatewayMetrics
from gateway.bus.outbox import Outbox
from gateway.bus.receipts import DeliveryLedger, ReceiptIssuer, delivery_status
from gateway.contract.envelope import Envelope
from gateway.contract.policy import topic_for
from gateway.contract.receipt import RECEIPT_TYPE, receipt_data, receipt_id, record_digest
from gateway.contract.verify import Accepted
from gateway.errors import Reason
from tests.doubles import FakeRecord
from tests.world import World, example

KCH = "kemlu.kbri-kuching"
TP = TopicPartition("xchg.kemlu.kbri-kuching.alert.v1", 2)
CASES = "xchg.kemlu.kbri-kuching.case.v1"


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


def signed_receipt(
    world: World,
    event: Envelope,
    by: str,
    digest: str,
    *,
    outcome: Any = "delivered",
    reason: str | None = None,
    event_id: str | None = None,
    read_from: tuple[str, int, int] = (CASES, 2, 41),
) -> Accepted:
    """``by``'s signed receipt for ``event`` (or another ``event_id``), accepted by KBRI Kuching."""
    event_id = event.id if event_id is None else event_id
    data = receipt_data(
        event_id=event_id, event_source=KCH, event_type=event.type, digest=digest, read_from=read_from,
        outcome=outcome, reason=reason, finished_at="2026-12-01T08:00:00Z",
    )  # fmt: skip
    signed = world.event(RECEIPT_TYPE, data, by=by, event_id=receipt_id(by, KCH, event_id, outcome, digest))
    wire = signed.to_kafka()
    verdict = world.verifier(KCH).verify_kafka(
        wire.value, wire.headers, wire.key, topic=topic_for(by, "delivery", 1)
    )
    assert isinstance(verdict, Accepted), verdict
    return verdict


async def open_ledger(
    tmp_path: Path, world: World
) -> tuple[Database, Outbox, GatewayMetrics, DeliveryLedger]:
    """KBRI Kuching's outbox database with its delivery ledger attached."""
    database = Database(tmp_path / "outbox.db", durable=True)
    await database.open()
    outbox = Outbox(database)
    await outbox.attach()
    metrics = GatewayMetrics(party=KCH)
    ledger = DeliveryLedger(database, party=KCH, registry=world.registry, metrics=metrics)
    await ledger.attach()
    return database, outbox, metrics, ledger


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


def gauge(metrics: GatewayMetrics) -> float:
    return sum(s.value for m in metrics.unacknowledged.collect() for s in m.samples)


# ---- the sender's side, offline: the ledger over a real outbox database ------------------------------
async def test_the_ledger_takes_matching_receipts_refuses_the_rest_and_counts_the_unacknowledged(
    tmp_path: Path,
) -> None:
    world = World.build()
    database, outbox, metrics, ledger = await open_ledger(tmp_path, world)
    try:
        referral = example("case.referral", "1.0")[0][1]
        event = world.event("id.trafficking.case.referral", referral, by=KCH, recipients=["kemensos"])
        await outbox.put(CASES, event, expected=("kemensos", "iom"))
        sent = delivery_status(tmp_path / "outbox.db", event.id)
        assert sent is not None
        assert sent.state() == {"iom": "waiting", "kemensos": "waiting"}
        late, _ = await ledger.sweep(unacknowledged_after=60, now=time.time() + 120)
        assert late == 1
        assert gauge(metrics) == 1

        def receipt(by: str, *, event_id: str = event.id, digest: str = sent.record_sha256) -> Accepted:
            return signed_receipt(world, event, by, digest, event_id=event_id)

        # KBRI Kuala Lumpur may not read KBRI Kuching's case topic
        refused = [
            await ledger.take(receipt("iom", event_id="never-sent")),
            await ledger.take(receipt("kemensos", digest="0" * 64)),
            await ledger.take(receipt("kemlu.kbri-kuala-lumpur")),
        ]
        assert [r.reason if r else None for r in refused] == [
            Reason.RECEIPT_UNKNOWN_EVENT, Reason.RECEIPT_DIGEST_MISMATCH, Reason.RECEIPT_NOT_A_RECIPIENT,
        ]  # fmt: skip
        await ledger.flush()
        status = delivery_status(tmp_path / "outbox.db", event.id)
        assert status is not None
        assert status.state() == {"iom": "waiting", "kemensos": "waiting"}  # nothing refused marked anything

        assert await ledger.take(receipt("kemensos")) is None
        assert await ledger.take(receipt("iom")) is None
        await ledger.flush()
        status = delivery_status(tmp_path / "outbox.db", event.id)
        assert status is not None
        assert status.complete
        late, _ = await ledger.sweep(unacknowledged_after=60, now=time.time() + 120)
        assert late == 0
        assert gauge(metrics) == 0
    finally:
        await database.close()


async def test_a_withheld_receipt_finishes_the_event_and_is_not_counted_undelivered(tmp_path: Path) -> None:
    """Consent withheld the event at one recipient, the other delivered it: the event is complete (nothing
    is waiting), the state names ``withheld`` and the undelivered gauge does not count it; a rejection
    would be counted."""
    world = World.build()
    database, outbox, _, ledger = await open_ledger(tmp_path, world)
    try:
        referral = example("case.referral", "1.0")[0][1]
        events = [world.event("id.trafficking.case.referral", referral, by=KCH, recipients=["kemensos"])]
        events.append(world.event("id.trafficking.case.referral", referral, by=KCH, recipients=["kemensos"]))
        for event in events:
            await outbox.put(CASES, event, expected=("kemensos", "iom"))

        def receipt(event: Envelope, by: str, outcome: Any, reason: str | None) -> Accepted:
            sent = delivery_status(tmp_path / "outbox.db", event.id)
            assert sent is not None
            return signed_receipt(
                world, event, by, sent.record_sha256, outcome=outcome, reason=reason, read_from=(CASES, 0, 1)
            )

        withheld, rejected = events
        takes = [
            receipt(withheld, "kemensos", "delivered", None),
            receipt(withheld, "iom", "withheld", "privacy.consent-withdrawn"),
            receipt(rejected, "kemensos", "delivered", None),
            receipt(rejected, "iom", "rejected", "schema.invalid"),
        ]
        for taken in takes:
            assert await ledger.take(taken) is None
        await ledger.flush()
        status = delivery_status(tmp_path / "outbox.db", withheld.id)
        assert status is not None
        assert status.state() == {"kemensos": "delivered", "iom": "withheld"}
        assert status.complete
        other = delivery_status(tmp_path / "outbox.db", rejected.id)
        assert other is not None
        assert not other.complete
        late, undelivered = await ledger.sweep(unacknowledged_after=60, now=time.time() + 120)
        assert (late, undelivered) == (0, {"rejected": 1})
    finally:
        await database.close()
