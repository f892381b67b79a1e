"""Dead letters on the real broker: what a reader cannot accept lands in its DLQ, and the flow goes on.

Two gateways (KBRI Kuching publishes, Kemensos reads). Records are injected with a raw aiokafka producer
straight into KBRI Kuching's case topic, between good events from its gateway: forged, unsigned, invalid,
garbage and tampered records. Each must land in Kemensos's dead-letter topic with the reason code the
verification pipeline (docs/REASON_CODES.md) defines for it, the original key, value and headers kept as
they were, and the origin named; the good events around them are delivered once each; the metrics count
it all; and no header repeats personal data from the payload. A sink that keeps failing sends its event to
the DLQ (``sink.failed``) after the configured retries, and the next event is delivered.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from gateway.bus.delivery import SinkError
from gateway.bus.kafka import KafkaSettings
from gateway.bus.subscriber import DLQ_HEADERS
from gateway.contract.canonical import canonical_json
from gateway.contract.envelope import Envelope
from gateway.contract.keys import SigningKey
from gateway.contract.policy import dlq_topic, topic_for
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.seal import EventBinding, Recipient, seal
from gateway.contract.sign import EventSigner, build_event, sign_envelope
from gateway.contract.verify import Accepted
from gateway.errors import Reason
from gateway.sandbox.memory import MemorySink
from tests.integration.exchange import (
    Node,
    eventually,
    exchange,
    metric_total,
    received_ids,
)
from tests.world import example, resign

KCH, READER = "kemlu.kbri-kuching", "kemensos"
REFERRAL = "id.trafficking.case.referral"
TOPIC = topic_for(KCH, "case", 1)  # xchg.kemlu.kbri-kuching.case.v1
DLQ = dlq_topic(READER)  # xchg.kemensos.dlq.v1
#: A retry horizon of 1.8 s (0.0005 h), so a sink that keeps failing one event dead-letters it within seconds.
RETRY = {"retry": {"base_delay": 0.05, "max_delay": 0.1, "horizon_hours": 0.0005}}


def count(actual: float, expected: int, *, exact: bool) -> bool:
    """Exactly ``expected`` on a fresh broker; at least that on an external cluster, whose fixed-name topics
    may still hold records an earlier test left unconsumed (the reader rejects those too)."""
    return actual == expected if exact else actual >= expected


# ---- building records ---------------------------------------------------------------------------------


def _referral() -> dict[str, Any]:
    return example("case.referral", "1.0")[0][1]


def _invalid_referral() -> dict[str, Any]:
    """Fails the schema only because the victim's name travels in clear (``victim_name``)."""
    [(_, payload)] = [
        (p, d) for p, d in example("case.referral", "1.0", "invalid") if "victim-name" in p.name
    ]
    return payload


def synthetic_names() -> list[str]:
    """The (synthetic) personal names in the payloads these tests send: none may reach a DLQ header."""
    names = []
    for payload in (_referral(), _invalid_referral()):
        identity = payload["identity"]
        names += [identity["prs_FirstName"], identity["prs_SecondName"]]
        names += [payload[k] for k in ("victim_name",) if k in payload]
    assert "Dewi Fiktif" in names  # the invalid example still carries its name in clear
    return names


def sign_unvalidated(
    signer: EventSigner, registry: Registry, schemas: SchemaStore, payload: Mapping[str, Any], reader: str
) -> Envelope:
    """Seal and sign ``payload`` as a referral without validating it (a broken or hostile producer)."""
    schema = schemas.latest(REFERRAL)
    now = datetime.now(UTC).replace(microsecond=0)
    binding = EventBinding(str(uuid.uuid4()), signer.party, REFERRAL)
    clear = {k: v for k, v in payload.items() if k not in schema.sealed_fields}
    secret = {k: v for k, v in payload.items() if k in schema.sealed_fields}
    key = registry.current_key(reader, "seal", now)
    assert key is not None
    clear["sealed"] = seal(secret, binding, [Recipient(reader, key.kid, key.public_key)])
    case_id = str(payload[schema.partition_key_field])
    attributes = {
        "id": binding.id,
        "source": signer.party,
        "specversion": "1.0",
        "type": REFERRAL,
        "datacontenttype": "application/json",
        "dataschema": schema.id,
        "subject": case_id,
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "partitionkey": case_id,
        "dataclassification": schema.classification,
    }
    return sign_envelope(Envelope.from_attributes(attributes, canonical_json(clear)), signer)


@dataclass(frozen=True)
class Bad:
    """A record injected into the topic and the reason code it must be dead-lettered with."""

    what: str
    reason: Reason
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


def bad_records(publisher: Node, reader: Node) -> list[Bad]:
    gateway = publisher.gateway
    registry, schemas = gateway.registry, gateway.schemas
    own = EventSigner(party=KCH, kid=gateway.signer.kid, key=SigningKey.load(gateway.config.signing_key))
    reader_signer = reader.gateway.signer
    stolen = EventSigner(  # Kemensos's real, registered key, claiming to be KBRI Kuching
        party=KCH, kid=reader_signer.kid, key=SigningKey.load(reader.gateway.config.signing_key)
    )
    ghost = EventSigner(party=KCH, kid=f"{KCH}-sig-ghost", key=SigningKey.generate())

    def event(signer: EventSigner) -> Envelope:
        honest = build_event(
            signer=own,
            registry=registry,
            schemas=schemas,
            event_type=REFERRAL,
            data=_referral(),
            recipients=[READER],
        )
        return honest if signer is own else resign(honest, signer)  # a producer skipping the key check

    def bad(what: str, reason: Reason, envelope: Envelope) -> Bad:
        record = envelope.to_kafka()
        return Bad(what, reason, record.value, record.key, record.headers)

    good = event(own).to_kafka()
    unsigned = Envelope.from_attributes(
        {k: v for k, v in event(own).attributes().items() if k not in ("dssematerial", "signedextattrs")},
        good.value,
    )
    flipped = bytearray(good.value)
    at = good.value.index(b'"ct":"') + len(b'"ct":"')  # a character of the sealed ciphertext (base64)
    flipped[at] ^= 0x01  # still a JSON string character, so the value stays canonical JSON
    spaced = good.value.replace(b"{", b"{ ", 1)  # same JSON value, not its RFC 8785 form
    return [
        bad("signed by a key not in the registry", Reason.KEY_UNKNOWN, event(ghost)),
        bad("signed by Kemensos's key, claiming KBRI Kuching", Reason.KEY_WRONG_PARTY, event(stolen)),
        bad("unsigned", Reason.SIG_MISSING, unsigned),
        bad(
            "signed, fails the schema",
            Reason.SCHEMA_INVALID,
            sign_unvalidated(own, registry, schemas, _invalid_referral(), READER),
        ),
        Bad("garbage, not UTF-8", Reason.PARSE_UTF8, b"\xff\xfe\x00 garbage \xc3\x28", b"junk-1", []),
        Bad("garbage, not JSON", Reason.PARSE_JSON, b"this is not json {", None, []),
        Bad(
            "JSON without any CloudEvents header",
            Reason.CE_MISSING_ATTRIBUTE,
            b'{"hello":"world"}',
            b"junk-2",
            [],
        ),
        Bad("tampered: one byte flipped", Reason.SIG_DIGEST_MISMATCH, bytes(flipped), good.key, good.headers),
        Bad("tampered: whitespace added", Reason.CE_DATA_NOT_CANONICAL, spaced, good.key, good.headers),
    ]


# ---- reading the DLQ ----------------------------------------------------------------------------------


def header(record: ConsumerRecord, name: str) -> str:
    values = [value for key, value in record.headers if key == name]
    assert len(values) == 1, (name, record.headers)
    return bytes(values[0]).decode("utf-8")


async def read_topic(
    settings: KafkaSettings, topic: str, wanted: Callable[[ConsumerRecord], bool], count: int
) -> list[ConsumerRecord]:
    """Read ``topic`` from the earliest offset (no group) until ``count`` wanted records are in hand."""
    consumer = AIOKafkaConsumer(**settings.consumer_kwargs(None))
    await consumer.start()
    try:
        assert topic in await consumer.topics(), f"{topic} does not exist"
        # Without a group, subscribe() takes every partition, from the earliest offset. (Not assign() with
        # partitions_for_topic(): topics() does not load the topic into the consumer's own metadata, which
        # only Tansu's answer for "no topics" -- every topic -- happened to do.)
        consumer.subscribe([topic])
        found: list[ConsumerRecord] = []
        async with asyncio.timeout(30):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=200)
                found += [r for records in batches.values() for r in records if wanted(r)]
        return found
    finally:
        await consumer.stop()


def origin(record: ConsumerRecord) -> tuple[str, int, int]:
    return (
        header(record, "xchg-origin-topic"),
        int(header(record, "xchg-origin-partition")),
        int(header(record, "xchg-origin-offset")),
    )


def assert_dead_letter(
    record: ConsumerRecord, reason: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> None:
    assert header(record, "xchg-reason") == reason
    assert record.value == value  # the original bytes, as they were
    assert record.key == key
    assert [(k, bytes(v)) for k, v in record.headers[: len(headers)]] == list(headers)
    assert [k for k, _ in record.headers[len(headers) :]] == list(DLQ_HEADERS)
    assert header(record, "xchg-detail")  # an operator can tell what was wrong
    assert header(record, "xchg-dead-lettered-by") == READER
    at = datetime.strptime(header(record, "xchg-dead-lettered-at"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - at).total_seconds()) < 300
    names = synthetic_names()
    for name, raw in record.headers:
        text = bytes(raw or b"").decode("utf-8", "replace")
        assert not any(n in text for n in names), f"header {name} repeats a personal name: {text!r}"


# ---- tests --------------------------------------------------------------------------------------------


async def test_bad_records_are_dead_lettered_with_their_reason_and_good_ones_flow(
    tmp_path: Path, isolated_kafka: KafkaSettings, external_kafka: str | None
) -> None:
    exact = external_kafka is None
    async with exchange(tmp_path, [KCH, READER], isolated_kafka) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]

        async def publish_good(n: int) -> set[str]:
            events = [
                await publisher.gateway.publisher.publish(REFERRAL, _referral(), recipients=[READER])
                for _ in range(n)
            ]
            return {e.id for e in events}

        before = await publish_good(3)
        await eventually(lambda: set(received_ids(reader, before)) == before, what="the first good events")

        bad = bad_records(publisher, reader)
        injected: dict[tuple[str, int, int], Bad] = {}
        producer = AIOKafkaProducer(**isolated_kafka.producer_kwargs())
        await producer.start()
        try:
            for record in bad:
                meta = await producer.send_and_wait(
                    TOPIC, record.value, key=record.key, headers=record.headers
                )
                injected[(TOPIC, meta.partition, meta.offset)] = record
        finally:
            await producer.stop()

        after = await publish_good(3)
        ours = before | after

        def settled() -> bool:
            return set(received_ids(reader, ours)) == ours and metric_total(
                reader, "xchg_dead_lettered_total"
            ) >= len(bad)

        await eventually(settled, what="good events delivered and bad records dead-lettered")

        # the good events, before and after the bad records, each delivered exactly once
        counts = Counter(received_ids(reader, ours))
        assert set(counts) == ours
        assert all(n == 1 for n in counts.values()), counts

        # each bad record in the DLQ once, with its reason, its bytes and where it came from
        dead = await read_topic(isolated_kafka, DLQ, lambda r: origin(r) in injected, len(injected))
        assert sorted(map(origin, dead)) == sorted(injected)  # once each
        for record in dead:
            source = injected[origin(record)]
            assert header(record, "xchg-reason") == source.reason, source.what
            assert_dead_letter(record, source.reason, source.value, source.key, source.headers)

        # the metrics count every rejection, by reason
        expected = Counter(str(b.reason) for b in bad)
        for reason, n in expected.items():
            assert count(metric_total(reader, "xchg_rejected_total", reason=reason), n, exact=exact), reason
            assert count(metric_total(reader, "xchg_dead_lettered_total", reason=reason), n, exact=exact)
        assert count(metric_total(reader, "xchg_rejected_total"), len(bad), exact=exact)
        assert count(metric_total(reader, "xchg_dead_lettered_total"), len(bad), exact=exact)
        assert metric_total(reader, "xchg_accepted_total", type=REFERRAL) == len(ours)
        # the reader told KBRI about every record that claimed to be its own (signed receipts, outcome
        # "rejected"): KBRI's gateway sent none of them, so it refuses those receipts and marks nothing
        claimed = sum(1 for b in bad if _claims_to_be(b, KCH))
        refused = sum(
            metric_total(publisher, "xchg_rejected_total", reason=r)
            for r in ("receipt.unknown-event", "receipt.digest-mismatch")
        )
        await eventually(
            lambda: metric_total(publisher, "xchg_receipts_received_total", outcome="delivered") >= len(ours),
            what="the receipts for the good events",
        )
        assert count(refused, claimed, exact=exact)
        assert metric_total(publisher, "xchg_rejected_total") == refused  # nothing else


def _claims_to_be(record: Bad, party: str) -> bool:
    """Whether ``record`` names ``party`` as its source and has an id, each in one header (as the receipt
    issuer reads a rejected record, gateway/bus/receipts.py)."""
    sources = [v for k, v in record.headers if k == "ce_source"]
    ids = [v for k, v in record.headers if k == "ce_id"]
    return (
        sources == [party.encode()] and len(ids) == 1 and re.fullmatch(rb"[!-~]{1,256}", ids[0]) is not None
    )


class FailingSink(MemorySink):
    """An agency system that is down for some events: every attempt to deliver them fails (retryably)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.failing: set[str] = set()
        self.attempts: Counter[str] = Counter()

    async def deliver(self, accepted: Accepted) -> None:
        self.attempts[accepted.event.id] += 1
        if accepted.event.id in self.failing:
            raise SinkError(f"sink {self.name}: agency system unavailable", retryable=True, status=503)
        await super().deliver(accepted)


async def test_an_event_the_sink_keeps_failing_is_dead_lettered_beyond_the_horizon_and_the_case_goes_on(
    tmp_path: Path, isolated_kafka: KafkaSettings, external_kafka: str | None
) -> None:
    """A transient failure that never clears for one event (the system answers 503 to it alone): the event
    waits at the head of its partition — the case's later events wait behind it, per-case order — until its
    retry horizon has passed, then it is dead-lettered as ``sink.failed`` and the case goes on."""
    exact = external_kafka is None
    sink = FailingSink("kemensos-case-system")
    poisoned = str(uuid.uuid4())
    sink.failing.add(poisoned)
    async with exchange(
        tmp_path, [KCH, READER], isolated_kafka, overrides=RETRY, sinks={READER: sink}
    ) as nodes:
        publisher, reader = nodes[KCH].gateway.publisher, nodes[READER]
        assert reader.gateway.config.retry.horizon == 1.8  # from [retry] in the gateway's configuration file
        refused = await publisher.publish(REFERRAL, _referral(), recipients=[READER], event_id=poisoned)
        # same case, so the same partition: these come after the refused event and wait for it
        later = [await publisher.publish(REFERRAL, _referral(), recipients=[READER]) for _ in range(2)]
        ids = {e.id for e in later}

        def settled() -> bool:
            return (
                set(received_ids(reader, ids)) == ids
                and metric_total(reader, "xchg_dead_lettered_total", reason="sink.failed") >= 1
            )

        await eventually(settled, what="the refused event dead-lettered and the next ones delivered")
        assert sink.attempts[poisoned] >= 2  # retried while within the horizon
        assert Counter(received_ids(reader, ids | {poisoned})) == dict.fromkeys(ids, 1)
        assert received_ids(reader, ids) == [e.id for e in later]  # in order, after the dead letter

        original = refused.to_kafka()
        [dead] = await read_topic(
            isolated_kafka,
            DLQ,
            lambda r: header(r, "xchg-reason") == "sink.failed" and r.value == original.value,
            1,
        )
        assert_dead_letter(dead, "sink.failed", original.value, original.key, original.headers)
        assert origin(dead)[0] == TOPIC
        assert "retry horizon" in header(dead, "xchg-detail")

        assert metric_total(reader, "xchg_dead_lettered_total", reason="sink.failed") == 1
        assert count(metric_total(reader, "xchg_dead_lettered_total"), 1, exact=exact)
        assert count(metric_total(reader, "xchg_rejected_total"), 0, exact=exact)  # it passed verification
        assert metric_total(reader, "xchg_accepted_total", type=REFERRAL) == 3
        assert metric_total(reader, "xchg_delivered_total", sink=sink.name) == 2
        assert metric_total(reader, "xchg_sink_failures_total", sink=sink.name) == sink.attempts[poisoned]
