"""The gateways on Kubernetes (``gateway.deploy.kubernetes``): every manifest validates against the
Kubernetes schemas (``kubernetes-validate``) and the pods are locked down."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.contract.registry import Registry
from gateway.deploy.kubernetes import gateway_manifests
from gateway.errors import GatewayError
from tests.unit.deploy._common import (
    K8S,
    POLRI,
    documents,
    extended_registry,
    require_tool,
    sample_document,
    yaml_documents,
)


def builtin_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml_documents(path):
            if not doc["apiVersion"].startswith("kafka.strimzi.io/"):
                yield path.name, doc
    registry = extended_registry()
    for party in ("bp2mi", "polri"):
        for doc in documents(gateway_manifests(registry, party)):
            yield f"rendered {party}", doc


def test_kubernetes_manifests_validate() -> None:
    try:
        import kubernetes_validate  # noqa: PLC0415 - optional dev dependency
    except ImportError:
        require_tool(False, "kubernetes-validate (pip, dev extras)")
        return
    kinds = set()
    for where, doc in builtin_documents():
        kinds.add(doc["kind"])
        for version in ("1.30.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)  # raises with the failing field
        assert doc["metadata"]["namespace"] == "xchg", where
    assert kinds == {
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    }


def test_gateway_pods_are_locked_down() -> None:
    registry = extended_registry()
    docs = {d["kind"]: d for d in documents(gateway_manifests(registry, "kemlu.kbri-kuching"))}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes["state"]["persistentVolumeClaim"]["claimName"]
        == docs["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert docs["Deployment"]["spec"]["strategy"]["type"] == "Recreate"
    policy = docs["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    (ingress,) = policy["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert all("to" in rule and rule["to"] for rule in policy["egress"])  # no rule allows every destination
    config = tomllib.loads(docs["ConfigMap"]["data"]["gateway.toml"])
    assert config["party"] == "kemlu.kbri-kuching"
    assert config["kafka"]["sasl"]["username"] == "xchg-kemlu.kbri-kuching"
    assert config["kafka"]["security_protocol"] == "SASL_SSL"
    document = sample_document()
    document["parties"].append({**POLRI, "id": "kemlu-kbri.kuching"})
    clashing = Registry.from_mapping(document)
    with pytest.raises(GatewayError, match="both map"):
        gateway_manifests(clashing, "kemlu.kbri-kuching")
