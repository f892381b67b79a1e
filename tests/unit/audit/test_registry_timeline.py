"""The auditor judges each record against the registry version in force at its leaf (issue 12).

A log holds: registry version 1, an IOM alert, version 2 (which revokes IOM's signing key), the same kind
of alert again, then a replay of version 1. Replayed with the anchor, the first alert is accepted (version 1
was in force), the second is ``key.revoked`` (version 2 was), version 2 is applied and the replay is logged
as ``registry.rollback``; with one fixed registry instead, registry leaves are judged ``anchor-mismatch``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from gateway.audit.leaf import ConsumedRecord
from gateway.audit.registry_timeline import FixedRegistry, RegistryEpochs, RegistryTimeline
from gateway.contract.policy import REGISTRY_TOPIC, event_topic
from gateway.contract.registry_chain import Anchor
from gateway.contract.registry_changes import draft_from, initial_document, revoke_key
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.verify import EventVerifier
from gateway.sandbox.maintainers import maintainer_set, new_maintainers, signed_version
from tests.world import World, example

ALERT = "id.trafficking.alert.supply"


def _alert(world: World, n: int, topic_offset: int, timestamp_ms: int, at: datetime) -> ConsumedRecord:
    data = {**example("alert.supply", "1.0")[0][1]}
    event = world.event(ALERT, data, by="iom", now=at)
    record = event.to_kafka()
    return ConsumedRecord(
        topic=event_topic("iom", world.schemas.get(event.dataschema)),
        partition=0,
        offset=topic_offset,
        timestamp=timestamp_ms + n,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers),
    )


def _registry_record(version: RegistryVersion, offset: int, timestamp_ms: int) -> ConsumedRecord:
    return ConsumedRecord(
        topic=REGISTRY_TOPIC, partition=0, offset=offset, timestamp=timestamp_ms, value=version.to_bytes()
    )


def test_each_record_is_judged_by_the_version_in_force_at_its_leaf() -> None:
    world = World.build()
    maintainers = new_maintainers()
    now = datetime.now(UTC).replace(microsecond=0)
    v1 = signed_version(
        initial_document(world.registry, maintainer_set(maintainers, 2), now=now), maintainers[:2]
    )
    revoked_at = now - timedelta(minutes=1)
    document = draft_from(v1, now=now)
    revoke_key(document, "iom-sig-test", revoked_at)
    v2 = signed_version(document, maintainers[1:])
    ms = int(time.time() * 1000)
    log = [
        _registry_record(v1, 0, ms),
        _alert(world, 1, 0, ms, now),
        _registry_record(v2, 1, ms + 2),
        _alert(world, 3, 1, ms, now),
        _registry_record(v1, 2, ms + 4),  # a replay of version 1
        _alert(world, 5, 2, ms, now),
    ]
    epochs = RegistryEpochs()
    for index, record in enumerate(log):
        epochs.add(index, record.topic, record.partition, record.offset)
    registry_values = [r.value for r in log if r.topic == REGISTRY_TOPIC]
    timeline = RegistryTimeline(Anchor.of(v1), world.schemas, epochs, registry_values)

    leaves = [timeline.leaf(record) for record in log]
    assert [(leaf.verdict, leaf.reason) for leaf in leaves] == [
        ("accepted", None),  # version 1 (the anchored one)
        ("accepted", None),  # IOM's key valid in version 1
        ("accepted", None),  # version 2: revokes it
        ("rejected", "key.revoked"),
        ("rejected", "registry.rollback"),
        ("rejected", "key.revoked"),  # still version 2: the replay changed nothing
    ]
    assert leaves[2].id == v2.digest
    assert [(row["serial"], row["outcome"]) for row in timeline.versions()] == [
        (1, "applied"),
        (2, "applied"),
        (1, "registry.rollback"),
    ]
    # a worker rebuilt from the same inputs judges alike
    again = RegistryTimeline(
        Anchor.of(v1), world.schemas, RegistryEpochs.from_json(epochs.to_json()), registry_values
    )
    assert again.fingerprint() == timeline.fingerprint()

    fixed = FixedRegistry(EventVerifier(registry=v1.registry, schemas=world.schemas))
    assert fixed.leaf(log[3]).verdict == "accepted"  # one registry for the whole log: the revocation unseen
    assert fixed.leaf(log[0]).reason == "registry.anchor-mismatch"


def test_without_a_registry_version_nothing_is_accepted() -> None:
    world = World.build()
    maintainers = new_maintainers()
    now = datetime.now(UTC).replace(microsecond=0)
    v1 = signed_version(
        initial_document(world.registry, maintainer_set(maintainers, 2), now=now), maintainers[:2]
    )
    record = _alert(world, 0, 0, int(time.time() * 1000), now)
    epochs = RegistryEpochs()
    epochs.add(0, record.topic, record.partition, record.offset)
    leaf = RegistryTimeline(Anchor.of(v1), world.schemas, epochs, []).leaf(record)
    assert (leaf.verdict, leaf.reason) == ("rejected", "registry.unavailable")
