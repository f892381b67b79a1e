"""A fourth agency joins by configuration and keys only: a registry entry, `keys new`, a gateway config.

BP2MI (Badan Pelindungan Pekerja Migran Indonesia, the migrant-worker protection agency) is not in the sample
registry and no code knows its name. It gets a registry entry (publish group-arrival alerts; read Kemensos
alerts), Kemensos' entry is extended to read BP2MI's alerts, fresh keys, and a generated gateway.toml.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.bus.kafka import KafkaSettings
from gateway.sandbox.deployment import SAMPLE_REGISTRY
from tests.integration.exchange import eventually, exchange, metric_total, received_ids
from tests.world import example

BP2MI = {
    "id": "bp2mi",
    "name": "Badan Pelindungan Pekerja Migran Indonesia",
    "name_en": "Indonesian Migrant Workers Protection Agency",
    "roles": ["migrant-worker-protection"],
    "publish": ["id.trafficking.alert.group-arrival"],
    "read": ["xchg.kemensos.alert.v1"],
}
KEMENSOS_READ = 'read = [\n  "xchg.kemlu.case.v1",'


@pytest.fixture
def template(tmp_path: Path) -> Path:
    """The sample registry where Kemensos agrees to read BP2MI's alerts: one change to its entry."""
    text = SAMPLE_REGISTRY.read_text()
    assert text.count(KEMENSOS_READ) == 1
    path = tmp_path / "registry-template.toml"
    path.write_text(
        text.replace(KEMENSOS_READ, 'read = [\n  "xchg.bp2mi.alert.v1",\n  "xchg.kemlu.case.v1",')
    )
    return path


async def test_a_new_agency_joins_by_registry_keys_and_config(
    tmp_path: Path, isolated_kafka: KafkaSettings, template: Path
) -> None:
    async with exchange(
        tmp_path / "deployment",
        ["kemensos", "bp2mi"],
        isolated_kafka,
        extra_parties=[BP2MI],
        template=template,
    ) as nodes:
        arrival = await nodes["bp2mi"].gateway.publisher.publish(
            "id.trafficking.alert.group-arrival", example("alert.group-arrival", "1.0")[0][1]
        )
        capacity = await nodes["kemensos"].gateway.publisher.publish(
            "id.trafficking.alert.shelter-capacity", example("alert.shelter-capacity", "1.0")[0][1]
        )
        ours = {arrival.id, capacity.id}
        await eventually(
            lambda: (
                received_ids(nodes["kemensos"], ours) == [arrival.id]
                and received_ids(nodes["bp2mi"], ours) == [capacity.id]
            ),
            what="both agencies to receive each other's alert",
        )
        for node in nodes.values():
            assert metric_total(node, "xchg_rejected_total") == 0
