"""A node of the 3-node Apache Kafka cluster dies mid-exchange: no event is lost, none is delivered twice.

KBRI Kuching's gateway publishes 10,000 alerts (10,000 distinct alert ids, so every partition of its alert
topic carries some) which Kemensos's gateway receives, each gateway connected as its own SCRAM user. The
flow runs in three phases so that events are published and consumed before, during and after the failure:
3,000 published, and once 2,000 have been delivered one node is SIGKILLed (no clean shutdown); 4,000 more
are published while it is down, and once 5,000 have been delivered it is restarted on its data while the
last 3,000 are published. Then every one of the 10,000 must reach Kemensos's sink exactly once.

The victim is a broker leading partitions of the topic (not the quorum leader), then the active KRaft
controller (the quorum leader, found with ``kafka-metadata-quorum``). What keeps the promise: replication 3
with ``min.insync.replicas=2`` and ``acks=all`` (an acknowledged event is on two nodes), the idempotent
producer (no duplicate from a retried batch), the durable outbox (unacknowledged events are sent again) and
the inbox (a redelivered record is recognised by ``(source, id)`` and not handed to the sink again).

Marked ``kafka_cluster`` and ``slow``; needs a cluster this session started (skipped when attached to one).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from gateway.contract.policy import topic_for
from tests.integration.exchange import eventually, exchange, received_ids
from tests.kafka.cluster import ClusterDeployment
from tests.world import example

pytestmark = [
    pytest.mark.kafka_cluster,
    pytest.mark.slow,
    # After a node is killed, aiokafka can drop a connection without closing its socket: the conftest's
    # KAFKA_CONNECTION_FINALIZED filter covers it, as for every kafka_cluster test.
]

KCH, READER = "kemlu.kbri-kuching", "kemensos"
ALERT = "id.trafficking.alert.network"
TOPIC = topic_for(KCH, "alert", 1)
EVENTS = 10_000
PHASES = ((0, 3_000), (3_000, 7_000), (7_000, EVENTS))
KILL_AT, RESTART_AT = 2_000, 5_000
CONCURRENCY = 200


def alert(index: int) -> dict[str, object]:
    payload = example("alert.network", "1.0")[0][1]
    payload["alert_id"] = f"ALR-KCH-FAIL-{index:06d}"
    return payload


async def partition_leaders(deployment: ClusterDeployment, topic: str) -> Counter[int]:
    """How many partitions of ``topic`` each node leads."""
    admin = AIOKafkaAdminClient(**deployment.admin().admin_kwargs())
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return Counter(int(p["leader"]) for p in described["partitions"])


@pytest.mark.parametrize("victim", ["partition leader", "active controller"])
async def test_a_killed_node_loses_no_event_and_duplicates_none(
    kafka_cluster: ClusterDeployment, tmp_path: Path, victim: str
) -> None:
    cluster = kafka_cluster.cluster
    if not cluster.owned:
        pytest.skip("attached to a cluster another process runs: its nodes cannot be killed from here")
    await kafka_cluster.truncate()
    async with exchange(tmp_path, [KCH, READER], kafka_cluster.admin()) as nodes:
        publisher, reader = nodes[KCH].gateway.publisher, nodes[READER]
        controller = await asyncio.to_thread(cluster.active_controller)
        if victim == "active controller":
            node = controller
        else:
            leaders = await partition_leaders(kafka_cluster, TOPIC)
            node = max((n for n in leaders if n != controller), key=lambda n: leaders[n])
        published: list[str] = []

        async def publish(start: int, end: int) -> None:
            for first in range(start, end, CONCURRENCY):
                batch = range(first, min(end, first + CONCURRENCY))
                events = await asyncio.gather(*(publisher.publish(ALERT, alert(i)) for i in batch))
                published.extend(e.id for e in events)

        def delivered() -> int:
            return len(received_ids(reader, set(published)))

        await publish(*PHASES[0])
        await eventually(lambda: delivered() >= KILL_AT, timeout=120, what=f"{KILL_AT} deliveries")
        cluster.kill(node)
        await publish(*PHASES[1])
        await eventually(
            lambda: delivered() >= RESTART_AT, timeout=180, what=f"{RESTART_AT} deliveries, node {node} down"
        )
        cluster.spawn(node)  # from the event loop's (main) thread; waiting for it runs in a worker thread
        back = asyncio.create_task(asyncio.to_thread(cluster.wait_back, 120.0))
        await publish(*PHASES[2])
        await back
        assert sorted(cluster.running()) == [1, 2, 3]
        await eventually(lambda: delivered() >= EVENTS, timeout=240, what=f"all {EVENTS} deliveries")

        counts = Counter(received_ids(reader, set(published)))
        assert len(published) == EVENTS
        assert set(counts) == set(published)  # zero lost
        assert [i for i, n in counts.items() if n != 1] == []  # zero delivered twice
        assert publisher.outbox.depth == 0
