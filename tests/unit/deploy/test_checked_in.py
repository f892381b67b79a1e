"""The checked-in generated files (``deploy/compose/kafka-init.sh``, ``deploy/k8s/``) equal a fresh render."""

from __future__ import annotations

from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.deploy.acls import render
from gateway.deploy.kubernetes import gateway_manifests
from gateway.deploy.script import to_shell_script
from gateway.deploy.strimzi import to_strimzi
from tests.unit.deploy._common import COMPOSE, K8S, SAMPLE


def test_checked_in_files_are_current(schemas: SchemaStore) -> None:
    """Re-render with the parameters in docs/OPERATIONS.md if this fails after a registry or schema change."""
    registry = Registry.load(SAMPLE)
    compose = render(registry, schemas, partitions=3, replication=3, min_insync=2)
    assert (COMPOSE / "kafka-init.sh").read_text() == to_shell_script(compose)
    k8s = render(registry, schemas, partitions=6, replication=3, min_insync=2)
    assert (K8S / "strimzi-topics-users.yaml").read_text() == to_strimzi(k8s, namespace="xchg")
    files = {p.name for p in (K8S / "gateways").glob("*.yaml")}
    assert files == {f"{p}.yaml" for p in registry.parties}
    for party in registry.parties:
        assert (K8S / "gateways" / f"{party}.yaml").read_text() == gateway_manifests(registry, party)
