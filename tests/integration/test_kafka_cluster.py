"""The production path on Apache Kafka: the ACLs rendered from the registry are what the broker enforces.

On the session's 3-node cluster (``kafka_cluster``: SASL_SSL, SCRAM-SHA-512, StandardAuthorizer,
``allow.everyone.if.no.acl.found=false``) after the rendered ``kafka-init.sh`` ran:

* every party's own SCRAM user reads exactly the topics the registry lets it read plus its own dead-letter
  topic, and the broker refuses it every other topic -- another party's DLQ included;
* writing into another party's topic is refused, and the gateway names it ``bus.not-authorized`` (a gateway
  started with another party's Kafka user logs that, for its sender and for the topics it may not read);
* a wrong SCRAM password and a CA that did not sign the brokers are refused with the setting named;
* ``gateway dlq list`` and ``purge`` work on Kafka with a party's own user (DeleteRecords, which the embedded
  broker lacks), and another party's user is refused the purge;
* implementations we did not write read what we write: Kafka's own console consumer, with a party's SCRAM
  credentials over TLS, and the CloudEvents SDK's Kafka binding, which decodes our records into CloudEvents
  with the attributes we signed.

All marked ``kafka_cluster`` (``-m kafka_cluster`` runs them, with the cluster tests of test_exchange.py,
test_dead_letters.py and test_kafka_failover.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.structs import ConsumerRecord, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

from gateway.bus.admin import refused_topics
from gateway.bus.connectivity import broker_refusal, check_connection
from gateway.bus.dlq import purge, read_dead_letters
from gateway.bus.kafka import KafkaSettings, SaslSettings, TlsSettings
from gateway.cli.main import main
from gateway.contract.envelope import Envelope
from gateway.contract.policy import REGISTRY_TOPIC, dlq_topic, own_topics, readable_topics, topic_for
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.errors import GatewayError, Reason
from gateway.sandbox.deployment import SAMPLE_REGISTRY
from tests.integration.exchange import eventually, exchange, metric_total
from tests.kafka.cluster import KAFKA_BIN, KAFKA_LIB, KAFKA_VERSION, ClusterDeployment
from tests.paths import REPO
from tests.tls import make_ca
from tests.world import example

pytestmark = pytest.mark.kafka_cluster

KCH = "kemlu.kbri-kuching"
MARKER = b"acl-probe"


def registry_and_schemas() -> tuple[Registry, SchemaStore]:
    return Registry.load(SAMPLE_REGISTRY), SchemaStore.load()


def exchange_topics(deployment: ClusterDeployment) -> list[str]:
    return [t for t in deployment.topics() if not t.startswith("xchg.notary.")]


async def can_read(settings: KafkaSettings, topic: str) -> bool:
    """Whether ``settings`` fetch the probe marker from partition 0 of ``topic`` (False when the broker
    refuses the fetch, which must then be a ``bus.not-authorized`` refusal). One consumer per topic: aiokafka
    keeps failing a consumer whose assignment holds a refused partition."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(**settings.consumer_kwargs(None))
    try:
        async with asyncio.timeout(30):
            await consumer.start()
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while True:
                try:
                    batches = await consumer.getmany(tp, timeout_ms=500)
                except TopicAuthorizationFailedError as exc:
                    refusal = broker_refusal(exc, "Read")
                    assert refusal is not None
                    assert refusal.reason is Reason.BUS_NOT_AUTHORIZED
                    assert repr(topic) in refusal.detail
                    return False
                if any(r.value == MARKER for r in batches.get(tp, [])):
                    return True
    finally:
        async with asyncio.timeout(30):
            await consumer.stop()


async def test_the_tested_kafka_is_the_pinned_version_with_the_rendered_topics(
    kafka_cluster: ClusterDeployment,
) -> None:
    assert (KAFKA_LIB / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    version = (
        await asyncio.to_thread(
            subprocess.run,
            [str(KAFKA_BIN / "kafka-topics.sh"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        )
    ).stdout
    assert version.split()[0] == KAFKA_VERSION
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - this test only

    admin = AIOKafkaAdminClient(**kafka_cluster.admin().admin_kwargs())
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics(kafka_cluster.topics())}
        brokers = (await admin.describe_cluster())["brokers"]
    finally:
        await admin.close()
    assert len(brokers) == 3
    for name, entry in described.items():
        assert entry["error_code"] == 0, name
        assert all(len(p["replicas"]) == 3 for p in entry["partitions"]), name  # kafka-init.sh's RF 3


async def test_each_party_reads_exactly_what_the_registry_permits(kafka_cluster: ClusterDeployment) -> None:
    await kafka_cluster.truncate()
    topics = exchange_topics(kafka_cluster)
    admin = kafka_cluster.admin()
    producer = AIOKafkaProducer(**admin.producer_kwargs())
    await producer.start()
    try:  # one marker record in partition 0 of every topic, written by the super user
        async with asyncio.timeout(60):
            # keyed: the registry topic is compacted, and a compacted topic refuses records without a key
            await asyncio.gather(
                *[await producer.send(topic, MARKER, key=b"probe", partition=0) for topic in topics]
            )
    finally:
        await producer.stop()

    registry, schemas = registry_and_schemas()
    parties = sorted(registry.parties)
    assert len(parties) >= 5
    for party in parties:
        settings = kafka_cluster.party(party)
        # its readable topics, its own DLQ and the signed registry (every party follows it; issue 12)
        permitted = {*readable_topics(registry, schemas, party), dlq_topic(party), REGISTRY_TOPIC}
        async with asyncio.timeout(30):
            hidden = set(await refused_topics(settings.admin_kwargs(), topics))  # not even Describe
        visible = [t for t in topics if t not in hidden]
        readable = {t for t in visible if await can_read(settings, t)}
        fetch_refused = set(visible) - readable
        assert readable == permitted, party  # reads what the registry allows, its own DLQ included
        assert hidden | fetch_refused == set(topics) - permitted, party  # the broker refuses all else
        assert fetch_refused <= set(own_topics(schemas, party)), party  # Describe, no Read: its own topics
        others_dlqs = {dlq_topic(p) for p in parties if p != party}
        assert others_dlqs <= hidden, party


async def test_writing_another_partys_topic_is_refused_and_named(kafka_cluster: ClusterDeployment) -> None:
    kemensos = kafka_cluster.party("kemensos")
    producer = AIOKafkaProducer(**kemensos.producer_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(topic_for("kemensos", "case", 1), b"own topic: allowed", key=b"k")
        await producer.send_and_wait(dlq_topic("kemensos"), b"own DLQ: allowed", key=b"k")
        for target in (topic_for("iom", "case", 1), dlq_topic("iom"), topic_for(KCH, "alert", 1)):
            with pytest.raises(TopicAuthorizationFailedError) as caught:
                await producer.send_and_wait(target, b"forged", key=b"k")
            refusal = broker_refusal(caught.value, "Write")
            assert refusal is not None
            assert refusal.reason is Reason.BUS_NOT_AUTHORIZED
            assert repr(target) in refusal.detail
            assert "Write" in refusal.detail
    finally:
        await producer.stop()


async def test_a_gateway_with_another_partys_kafka_user_reports_bus_not_authorized(
    kafka_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    """The Kemensos gateway, misconfigured with KBRI Kuching's SCRAM user: it may read Kemensos's topics
    but not write them, nor read KBRI Kuala Lumpur's case topic, which Kemensos reads; both are logged as
    ``bus.not-authorized``."""
    await kafka_cluster.truncate()
    wrong_user = {"kafka": {**_kafka_table(kafka_cluster.party(KCH)), "client_id": "xchg-kemensos"}}
    with structlog.testing.capture_logs() as logs:
        admin = kafka_cluster.admin()
        async with exchange(tmp_path, ["kemensos"], admin, per_party={"kemensos": wrong_user}) as nodes:
            supply = {**example("alert.supply", "1.0")[0][1], "from_party": "kemensos"}  # x-party: the signer
            await nodes["kemensos"].gateway.publisher.publish("id.trafficking.alert.supply", supply)

            def refused(message: str) -> list[dict[str, Any]]:
                return [
                    e
                    for e in logs
                    if e["event"].startswith(message) and e.get("reason") == "bus.not-authorized"
                ]

            await eventually(lambda: bool(refused("send refused by the broker")), what="the sender's refusal")
            await eventually(lambda: bool(refused("the broker refuses topics")), what="the reader's refusal")
    [send, *_] = refused("send refused by the broker")
    assert repr(topic_for("kemensos", "alert", 1)) in send["detail"]
    [read] = refused("the broker refuses topics")
    assert topic_for("kemlu.kbri-kuala-lumpur", "case", 1) in read["topics"]  # Kemensos may, KCH's user not
    assert nodes["kemensos"].gateway.outbox.depth == 1  # nothing lost: the event waits in the outbox


def _kafka_table(settings: KafkaSettings) -> dict[str, Any]:
    from tests.integration.exchange import kafka_table  # noqa: PLC0415 - one helper, as exchange() uses it

    return kafka_table(settings)


async def test_a_wrong_scram_password_is_refused_naming_the_setting(
    kafka_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    good = kafka_cluster.party("kemensos")
    assert good.sasl is not None
    await check_connection(good)  # the right password connects
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password-of-xchg-kemensos")
    wrong.chmod(0o600)
    settings = _replace(good, sasl=SaslSettings(mechanism="SCRAM-SHA-512", username=good.sasl.username,
                                                password_file=wrong))  # fmt: skip
    with pytest.raises(GatewayError) as caught:
        await check_connection(settings)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert caught.value.detail.startswith("kafka.sasl:")
    assert "xchg-kemensos" in caught.value.detail
    assert "not-the-password" not in caught.value.detail  # a secret never reaches a message


async def test_a_ca_that_did_not_sign_the_brokers_is_refused_naming_the_setting(
    kafka_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    other_ca, _, _ = make_ca(tmp_path / "other", "not the exchange's CA")
    settings = _replace(kafka_cluster.party("kemensos"), tls=TlsSettings(ca_file=other_ca))
    with pytest.raises(GatewayError) as caught:
        await check_connection(settings)
    assert caught.value.reason is Reason.CONFIG_INVALID
    assert caught.value.detail.startswith("kafka.tls.ca_file:")
    assert "certificate verify failed" in caught.value.detail


def _replace(settings: KafkaSettings, **changes: Any) -> KafkaSettings:
    from dataclasses import replace  # noqa: PLC0415 - this helper only

    return replace(settings, **changes)


# ---- implementations we did not write read our records -----------------------------------------------


async def _published(kafka_cluster: ClusterDeployment, tmp_path: Path) -> tuple[list[Envelope], str]:
    """KBRI Kuching's gateway publishes three alerts with one alert id (one key: one partition)."""
    await kafka_cluster.truncate()
    topic = topic_for(KCH, "alert", 1)
    async with exchange(tmp_path, [KCH], kafka_cluster.admin()) as nodes:
        publisher = nodes[KCH].gateway.publisher
        alert = example("alert.network", "1.0")[0][1]
        events = [await publisher.publish("id.trafficking.alert.network", alert) for _ in range(3)]
        await eventually(lambda: publisher.outbox.depth == 0, what="the outbox to drain to Kafka")
    return events, topic


async def _records(settings: KafkaSettings, topic: str, count: int) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(**settings.consumer_kwargs(None))
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.subscribe([topic])
        async with asyncio.timeout(30):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                records += [r for batch in batches.values() for r in batch]
    finally:
        await consumer.stop()
    return records


async def test_the_cloudevents_sdk_decodes_our_kafka_records_with_our_attributes(
    kafka_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    events, topic = await _published(kafka_cluster, tmp_path)
    records = await _records(kafka_cluster.party("kemensos"), topic, len(events))
    by_id = {e.id: e for e in events}
    assert len(records) == len(events)
    for record in records:
        message = KafkaMessage(
            headers={k: bytes(v) for k, v in record.headers}, key=record.key, value=record.value
        )
        decoded = from_binary_event(message)  # the SDK's Kafka binding, binary content mode
        ours = by_id[decoded.get_id()]
        assert decoded.get_specversion() == "1.0"
        assert decoded.get_source() == ours.source
        assert decoded.get_type() == ours.type
        assert decoded.get_subject() == ours.subject
        assert decoded.get_dataschema() == ours.dataschema
        assert decoded.get_datacontenttype() == ours.datacontenttype
        assert decoded.get_time() == datetime.fromisoformat(ours.time.replace("Z", "+00:00"))
        assert decoded.get_extension("partitionkey") == ours.partitionkey  # from the record key
        for name in ("dataclassification", "signedextattrs", "dssematerial"):
            assert decoded.get_extension(name) == ours.attributes()[name], name
        assert decoded.get_data() == json.loads(ours.data)


async def test_kafkas_console_consumer_reads_a_partys_topic_with_its_scram_user_over_tls(
    kafka_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    events, topic = await _published(kafka_cluster, tmp_path)
    kemensos = kafka_cluster.party("kemensos")
    assert kemensos.sasl is not None
    assert kemensos.tls is not None
    config = tmp_path / "kemensos.properties"
    password = kemensos.sasl.password()
    config.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{kemensos.sasl.username}" password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={kemensos.tls.ca_file}\n"
    )
    config.chmod(0o600)
    command = [
        *(
            str(KAFKA_BIN / "kafka-console-consumer.sh"),
            "--bootstrap-server",
            ",".join(kemensos.bootstrap_servers),
        ),
        *("--command-config", str(config), "--topic", topic, "--from-beginning"),
        *("--group", "xchg.kemensos"),  # the one group the rendered ACLs let this user use
        *("--max-messages", str(len(events)), "--timeout-ms", "60000"),
        *("--formatter-property", "print.key=true", "--formatter-property", "print.headers=true"),
        *("--formatter-property", "headers.separator=|"),
    ]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == len(events)
    for event in events:
        [line] = [line for line in lines if f"ce_id:{event.id}" in line]
        headers, key, value = line.split("\t")
        assert key == event.partitionkey
        assert value == event.data.decode("utf-8")  # the signed canonical bytes, as they are on the wire
        assert f"ce_source:{event.source}" in headers.split("|")
        assert f"ce_type:{event.type}" in headers.split("|")


async def test_the_cluster_benchmark_runs_at_smoke_size(
    kafka_cluster: ClusterDeployment, tmp_path: Path
) -> None:
    """bench/kafka_cluster.py still works (no timing asserted; docs/PERFORMANCE.md has the figures)."""
    env = {**os.environ, "XCHG_BENCH_RESULTS": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "bench.kafka_cluster",
        "--quick",
        "--attach",
        str(kafka_cluster.cluster.root),
    ]
    completed = await asyncio.to_thread(
        subprocess.run, command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    document = json.loads((tmp_path / "kafka_cluster.json").read_text("utf-8"))
    runs = document["median_runs"]
    assert runs
    assert all(run["delivered"] == run["events"] for run in runs.values())


async def test_gateway_dlq_purge_deletes_a_partys_old_dead_letters_and_only_its_own(
    kafka_cluster: ClusterDeployment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gateway dlq purge`` on Kafka (DeleteRecords, which the embedded broker lacks): run with Kemensos's
    configuration (its own SCRAM user, which the rendered ACLs let delete from its own dead-letter topic),
    it deletes the dead letters from before the cut and keeps the later one; another party's user is refused
    the same deletion and nothing is deleted."""
    await kafka_cluster.truncate()
    admin = kafka_cluster.admin()
    reader = "kemensos"
    async with exchange(tmp_path, [KCH, reader], admin) as nodes:
        config = str(nodes[reader].sandbox.config)
        producer = AIOKafkaProducer(**admin.producer_kwargs())
        await producer.start()
        try:

            async def dead_letter(values: list[bytes], total: int) -> None:
                for value in values:  # not an event: the reader dead-letters each
                    await producer.send_and_wait(topic_for(KCH, "case", 1), value, key=b"case-purge")
                await eventually(
                    lambda: metric_total(nodes[reader], "xchg_dead_lettered_total") >= total,
                    what=f"{total} dead letters",
                )

            await dead_letter([b"not an event 1", b"not an event 2", b"not an event 3"], 3)
            # dead-letter times are whole seconds: the cut is the next second, the fourth comes after it
            cut = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            await asyncio.sleep((cut - datetime.now(UTC)).total_seconds())
            await dead_letter([b"not an event 4"], 4)
        finally:
            await producer.stop()

        async def listing() -> list[dict[str, Any]]:
            capsys.readouterr()
            assert await asyncio.to_thread(main, ["dlq", "list", "--config", config, "--json"]) == 0
            return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

        before = await listing()
        assert len(before) == 4
        old = [letter for letter in before if datetime.fromisoformat(letter["dead_lettered_at"]) < cut]
        assert len(old) == 3

        letters = await read_dead_letters(kafka_cluster.party(reader), dlq_topic(reader))
        with pytest.raises(GatewayError) as refused:  # Kuching's user may not delete Kemensos's records
            await purge(kafka_cluster.party(KCH), letters)
        assert refused.value.reason == Reason.BUS_NOT_AUTHORIZED
        assert dlq_topic(reader) in refused.value.detail
        assert len(await listing()) == 4

        purge_command = ["dlq", "purge", "--config", config, "--before", cut.isoformat(), "--yes"]
        assert await asyncio.to_thread(main, purge_command) == 0
        cuts = capsys.readouterr().out
        assert "now starts at offset" in cuts
        after = await listing()
        assert [letter["position"] for letter in after] == [
            letter["position"] for letter in before if letter not in old
        ]
