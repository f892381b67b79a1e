"""No single input stops a gateway (issue 18), on the real broker: each poison ends in a reason code.

KBRI Kuching publishes, Kemensos reads. The hostile records of the black-box campaign are injected with a
raw producer between good events from KBRI Kuching's gateway: a ``ce_time`` header edited to a time with no
UTC form (no key needed), a signed time before year 1000, a null record key, a control character (U+0085)
in the event id, an event copied into a topic its source does not own, and a record just under the broker's
size limit whose dead-letter copy used to exceed the producer's. Each must land in Kemensos's dead-letter
topic with its reason code (the large one as a bounded record), every good event after it must be
delivered, no supervised task may have restarted, and ``/healthz`` and ``/readyz`` must say 200 because
the gateway is in fact healthy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from gateway.bus.deadletter import record_size
from gateway.bus.kafka import KafkaSettings
from gateway.contract.envelope import Envelope
from gateway.contract.keys import SigningKey
from gateway.contract.policy import dlq_topic, topic_for
from gateway.contract.sign import EventSigner, sign_envelope
from gateway.errors import Reason
from tests.integration.exchange import Node, eventually, exchange, metric_total, received_ids
from tests.integration.test_dead_letters import header, origin, read_topic
from tests.world import example

KCH, READER = "kemlu.kbri-kuching", "kemensos"
ARRIVAL = "id.trafficking.alert.group-arrival"
TOPIC = topic_for(KCH, "alert", 1)
FOREIGN = topic_for("iom", "alert", 1)  # Kemensos reads it; KBRI Kuching's events do not belong there
DLQ = dlq_topic(READER)


@dataclass(frozen=True)
class Poison:
    what: str
    reason: Reason
    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]


def arrival(n: int, run: str) -> dict[str, Any]:
    base = example("alert.group-arrival", "1.0")[0][1]
    return {**base, "alert_id": f"ALR-KCH-{run}-{n:06d}"}


def poisons(publisher: Node, run: str) -> list[Poison]:
    gateway = publisher.gateway
    signer = EventSigner(party=KCH, kid=gateway.signer.kid, key=SigningKey.load(gateway.config.signing_key))

    def valid(n: int) -> Envelope:
        from gateway.contract.sign import build_event  # noqa: PLC0415 - only here

        return build_event(
            signer=signer, registry=gateway.registry, schemas=gateway.schemas, event_type=ARRIVAL,
            data=arrival(n, run),
        )  # fmt: skip

    def edited(n: int, name: str, value: bytes) -> list[tuple[str, bytes]]:
        return [(k, value if k == name else v) for k, v in valid(n).to_kafka().headers]

    event = valid(900)
    attributes = {k: v for k, v in event.attributes().items() if k not in ("dssematerial", "signedextattrs")}
    ancient_time = {**attributes, "time": "0999-06-01T00:00:00Z"}
    ancient = sign_envelope(Envelope.from_attributes(ancient_time, event.data), signer).to_kafka()
    record = valid(901).to_kafka()
    keyless = valid(902).to_kafka()
    foreign = valid(903).to_kafka()
    # just under the producer's 1 MiB: the broker takes it; its copy plus seven reason headers would not fit
    room = 1_048_576 - 64 - record_size(record.key, b"", record.headers)
    near = b'"' + b"x" * room + b'"'
    assert 1_048_576 - 100 < record_size(record.key, near, record.headers) <= 1_048_576
    return [
        Poison("ce_time edited to year 0 in UTC", Reason.TIME_OUT_OF_RANGE, TOPIC, record.value, record.key,
               edited(901, "ce_time", b"0001-01-01T00:00:00+01:00")),
        Poison("ce_time edited to year 10000 in UTC", Reason.TIME_OUT_OF_RANGE, TOPIC, record.value,
               record.key, edited(901, "ce_time", b"9999-12-31T23:59:59-01:00")),
        Poison("signed time before year 1000", Reason.TIME_OUT_OF_RANGE, TOPIC, ancient.value, ancient.key,
               ancient.headers),
        Poison("null record key", Reason.CE_INVALID_ATTRIBUTE, TOPIC, keyless.value, None, keyless.headers),
        Poison("U+0085 in the event id", Reason.CE_INVALID_ATTRIBUTE, TOPIC, record.value, record.key,
               edited(901, "ce_id", "evt\u0085x".encode())),
        Poison("copied into IOM's topic", Reason.AUTHZ_TOPIC_MISMATCH, FOREIGN, foreign.value, foreign.key,
               foreign.headers),
        Poison("just under the size limit", Reason.SIZE_EXCEEDED, TOPIC, near, record.key, record.headers),
    ]  # fmt: skip


async def ops(node: Node, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{node.gateway.ops_port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_poison_records_end_in_reason_codes_and_the_reader_goes_on(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    run = tmp_path.name[-6:].upper().replace("_", "0")
    async with exchange(tmp_path, [KCH, READER], isolated_kafka) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]
        publish = publisher.gateway.publisher.publish

        first = await publish(ARRIVAL, arrival(1, run))
        await eventually(lambda: received_ids(reader, {first.id}) == [first.id], what="the first event")

        injected: dict[tuple[str, int, int], Poison] = {}
        good: set[str] = {first.id}
        producer = AIOKafkaProducer(**isolated_kafka.producer_kwargs())
        await producer.start()
        try:
            for n, poison in enumerate(poisons(publisher, run), start=10):
                meta = await producer.send_and_wait(
                    poison.topic, poison.value, key=poison.key, headers=poison.headers
                )
                injected[(poison.topic, meta.partition, meta.offset)] = poison
                good.add((await publish(ARRIVAL, arrival(n, run))).id)  # and a good one behind each
        finally:
            await producer.stop()

        def settled() -> bool:
            delivered = set(received_ids(reader, good)) == good
            return delivered and metric_total(reader, "xchg_dead_lettered_total") >= len(injected)

        await eventually(settled, what="every good event delivered and every poison dead-lettered")

        wanted: Callable[[ConsumerRecord], bool] = lambda r: origin(r) in injected  # noqa: E731
        dead = await read_topic(isolated_kafka, DLQ, wanted, len(injected))
        assert sorted(map(origin, dead)) == sorted(injected)
        for record in dead:
            poison = injected[origin(record)]
            assert header(record, "xchg-reason") == poison.reason, poison.what
            if poison.reason is Reason.SIZE_EXCEEDED:  # bounded: reason, digests, the first bytes
                assert header(record, "xchg-truncated") == "1"
                assert record.value is not None
                assert poison.value is not None
                assert poison.value.startswith(record.value)
                assert record_size(record.key, record.value, list(record.headers)) <= 1_048_576

        # healthy, and truthfully so: nothing restarted, both endpoints 200
        assert metric_total(reader, "xchg_task_restarts_total") == 0
        assert {s.state for s in reader.gateway.supervisor.states()} == {"running"}
        assert await ops(reader, "/healthz") == (200, {"status": "alive"})
        status, body = await ops(reader, "/readyz")
        assert (status, body["ready"]) == (200, True), body
