"""The signed registry distributed over the bus and applied live (issue 12), on a real broker.

Four gateways run (Kemensos, KBRI Kuching, IOM, Kemlu). BP2MI is in registry version 1 without keys. The
maintainers publish version 2, signed by two of three, adding BP2MI's keys (and letting KBRI Kuching read
BP2MI's alerts): within seconds every gateway accepts BP2MI's events, none restarted, and KBRI Kuching
resubscribed to read them. A version signed by one maintainer, a replay of version 1 and a version with a
broken chain are each refused and counted by every gateway, which stays on version 2. Version 3 revokes
BP2MI's signing key: an event the key's thief signs after the revocation is dead-lettered as ``key.revoked``
by every gateway.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from aiokafka import AIOKafkaProducer

from gateway.bus.admin import ensure_topics
from gateway.bus.kafka import KafkaSettings
from gateway.bus.registry_feed import publish_version
from gateway.contract.keys import SealingKey, SigningKey
from gateway.contract.registry_changes import add_keys, draft_from, revoke_key, set_permissions
from gateway.contract.registry_version import RegistryVersion
from gateway.contract.sign import EventSigner, build_event
from gateway.errors import Reason
from gateway.runtime.ops import run_checks
from gateway.sandbox.deployment import SAMPLE_REGISTRY, load_maintainers, sandbox_registry
from gateway.sandbox.maintainers import SandboxMaintainer, signed_version
from tests.integration.exchange import Node, eventually, exchange, metric_total, received_ids
from tests.world import example, key_entry

KCH, KEMENSOS, IOM, KEMLU = "kemlu.kbri-kuching", "kemensos", "iom", "kemlu"
PARTIES = [KEMENSOS, KCH, IOM, KEMLU]
ARRIVAL = "id.trafficking.alert.group-arrival"
BP2MI_ALERTS = "xchg.bp2mi.alert.v1"
BP2MI = {
    "id": "bp2mi",
    "name": "Badan Pelindungan Pekerja Migran Indonesia",
    "name_en": "Indonesian Migrant Workers Protection Agency",
    "roles": ["migrant-worker-protection"],
    "publish": [ARRIVAL],
    "read": ["xchg.kemensos.alert.v1"],
}


@pytest.fixture
def template(tmp_path: Path) -> Path:
    """The sample registry where Kemensos, IOM and Kemlu already agreed to read BP2MI's alerts."""
    document = tomllib.loads(SAMPLE_REGISTRY.read_text("utf-8"))
    for party in document["parties"]:
        if party["id"] in (KEMENSOS, IOM, KEMLU):
            party["read"].append(BP2MI_ALERTS)
    path = tmp_path / "template.toml"
    path.write_text(tomli_w.dumps(document), "utf-8")
    return path


def _next(
    base: RegistryVersion, signers: list[SandboxMaintainer], edit: Callable[[dict[str, Any]], None]
) -> RegistryVersion:
    document = draft_from(base, now=datetime.now(UTC))
    edit(document)
    return signed_version(document, signers)


def _serials(nodes: dict[str, Node]) -> set[int]:
    return {node.gateway.trust.current.serial for node in nodes.values()}


async def _send(kafka: KafkaSettings, record: Any) -> None:
    producer = AIOKafkaProducer(**kafka.producer_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(BP2MI_ALERTS, value=record.value, key=record.key, headers=record.headers)
    finally:
        await producer.stop()


def _arrival(n: int) -> dict[str, Any]:
    return {**example("alert.group-arrival", "1.0")[0][1], "alert_id": f"ALR-BP2MI-2026-{n:06d}"}


async def test_maintainers_publish_versions_live_and_every_gateway_follows(
    tmp_path: Path, isolated_kafka: KafkaSettings, template: Path
) -> None:
    root = tmp_path / "deployment"
    async with exchange(root, PARTIES, isolated_kafka, extra_parties=[BP2MI], template=template) as nodes:
        maintainers = load_maintainers(root)
        v1 = sandbox_registry(root)
        await publish_version(isolated_kafka, v1)  # the maintainers publish version 1 too
        assert _serials(nodes) == {1}
        await ensure_topics(isolated_kafka.admin_kwargs(), [BP2MI_ALERTS], 4, 1)  # what BP2MI's gateway does

        # BP2MI's keys (gateway keys new on its machine), added by two of the three maintainers
        signing, sealing = SigningKey.generate(), SealingKey.generate()
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        entries = [
            key_entry("bp2mi-sig-1", "sig", signing.public_key, valid_from=since),
            key_entry("bp2mi-seal-1", "seal", sealing.public_key, valid_from=since),
        ]
        for entry in entries:
            entry["valid_from"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")

        def join(document: dict[str, Any]) -> None:
            add_keys(document, "bp2mi", entries)
            kch = next(p for p in document["parties"] if p["id"] == KCH)
            set_permissions(document, KCH, read=[*kch["read"], BP2MI_ALERTS])

        v2 = _next(v1, [maintainers[1], maintainers[2]], join)
        await publish_version(isolated_kafka, v2)
        await eventually(lambda: _serials(nodes) == {2}, timeout=20, what="every gateway on version 2")

        thief_registry = v2.registry  # BP2MI's signer, and later a thief holding its key, sign with this
        signer = EventSigner(party="bp2mi", kid="bp2mi-sig-1", key=signing)
        arrival = build_event(
            signer=signer, registry=thief_registry, schemas=nodes[KEMENSOS].gateway.schemas,
            event_type=ARRIVAL, data=_arrival(1),
        )  # fmt: skip
        await _send(isolated_kafka, arrival.to_kafka())
        for node in nodes.values():
            await eventually(
                lambda n=node: received_ids(n, {arrival.id}) == [arrival.id],  # type: ignore[misc]
                timeout=30,
                what=f"{node.party} to accept BP2MI's event",
            )

        # refused versions: one maintainer alone, a replay of version 1, a broken chain
        rogue = _next(v2, [maintainers[0]], lambda d: d["parties"][0].update(read=["xchg.*"]))
        broken = _next(v2, maintainers[:2], lambda d: d.update(previous=v1.digest))
        for version in (rogue, v1, broken):
            await publish_version(isolated_kafka, version)
        refused = (
            Reason.REGISTRY_THRESHOLD_NOT_MET,
            Reason.REGISTRY_ROLLBACK,
            Reason.REGISTRY_CHAIN_BROKEN,
        )

        def counted() -> bool:
            return all(
                metric_total(node, "xchg_registry_refused_total", reason=str(reason)) == 1
                for node in nodes.values()
                for reason in refused
            )

        await eventually(counted, timeout=20, what="each refusal counted once by every gateway")
        assert _serials(nodes) == {2}
        checks = await run_checks([nodes[KEMENSOS].gateway.trust.readiness_check()], 2.0)
        assert checks[0].ok
        assert "serial 2" in checks[0].detail
        assert "last refused: registry.chain-broken" in checks[0].detail

        # version 3 revokes BP2MI's signing key: what its thief signs afterwards is dead-lettered
        revoked_at = datetime.now(UTC).replace(microsecond=0)
        v3 = _next(v2, [maintainers[0], maintainers[2]], lambda d: revoke_key(d, "bp2mi-sig-1", revoked_at))
        await publish_version(isolated_kafka, v3)
        await eventually(lambda: _serials(nodes) == {3}, timeout=20, what="every gateway on version 3")
        stolen = build_event(
            signer=signer, registry=thief_registry, schemas=nodes[KEMENSOS].gateway.schemas,
            event_type=ARRIVAL, data=_arrival(2), now=revoked_at + timedelta(seconds=1),
        )  # fmt: skip
        await _send(isolated_kafka, stolen.to_kafka())
        for node in nodes.values():
            await eventually(
                lambda n=node: metric_total(n, "xchg_dead_lettered_total", reason="key.revoked") == 1,  # type: ignore[misc]
                timeout=30,
                what=f"{node.party} to dead-letter the stolen key's event",
            )
            assert received_ids(node, {stolen.id}) == []
            assert metric_total(node, "xchg_registry_applied_total") >= 2
