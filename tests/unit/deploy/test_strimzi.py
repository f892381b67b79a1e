"""Strimzi resources (``gateway.deploy.strimzi``) say exactly what the derivation says, and the checked-in
``deploy/k8s/kafka.yaml`` fits them."""

from __future__ import annotations

import re
from typing import Any

from gateway.contract.registry import Registry
from gateway.deploy.acls import Rendered
from gateway.deploy.strimzi import STRIMZI_API_VERSIONS, to_strimzi
from tests.unit.deploy._common import K8S, Acl, as_tuples, documents, yaml_documents


def strimzi_acls(docs: list[dict[str, Any]]) -> set[Acl]:
    acls: set[Acl] = set()
    for doc in docs:
        if doc["kind"] != "KafkaUser":
            continue
        principal = f"User:{doc['metadata']['name']}"
        for rule in doc["spec"]["authorization"]["acls"]:
            resource = rule["resource"]
            name = resource.get("name", "kafka-cluster")
            for operation in rule["operations"]:
                acls.add((principal, resource["type"], name, operation))
    return acls


def test_strimzi_resources_round_trip(case: tuple[Registry, Rendered]) -> None:
    _, rendered = case
    docs = documents(to_strimzi(rendered, namespace="xchg"))
    assert strimzi_acls(docs) == as_tuples(rendered)
    check_strimzi(docs, cluster="xchg")
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == set(rendered.topic_names())
    old = documents(to_strimzi(rendered, api_version="kafka.strimzi.io/v1beta2"))
    assert {d["apiVersion"] for d in old} == {"kafka.strimzi.io/v1beta2"}


def check_strimzi(docs: list[dict[str, Any]], *, cluster: str) -> None:
    """Structural checks of the Strimzi resources: the fields they use, and the ACL invariants."""
    topics = {d["spec"].get("topicName", d["metadata"]["name"]) for d in docs if d["kind"] == "KafkaTopic"}
    for doc in docs:
        assert doc["apiVersion"] in STRIMZI_API_VERSIONS, doc["apiVersion"]
        assert doc["kind"] in {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
        meta, spec = doc["metadata"], doc["spec"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        if doc["kind"] != "Kafka":
            assert meta["labels"]["strimzi.io/cluster"] == cluster
        if doc["kind"] == "KafkaTopic":
            assert spec["partitions"] >= 1
            assert spec["replicas"] >= 1
            assert 1 <= int(spec["config"]["min.insync.replicas"]) < spec["replicas"] or spec["replicas"] == 1
        elif doc["kind"] == "KafkaUser":
            assert spec["authentication"] == {"type": "scram-sha-512"}
            assert spec["authorization"]["type"] == "simple"
            for rule in spec["authorization"]["acls"]:
                resource = rule["resource"]
                assert resource["type"] in {"topic", "group", "cluster"}
                assert rule["operations"]
                assert "operation" not in rule  # removed in the v1 API
                assert rule.get("type", "allow") == "allow"
                if resource["type"] == "cluster":
                    continue
                assert resource["patternType"] == "literal"
                assert "*" not in resource["name"]
                if resource["type"] == "topic":
                    assert resource["name"] in topics, (
                        f"{meta['name']}: ACL on unknown topic {resource['name']}"
                    )
                else:
                    assert resource["name"].startswith("xchg.")
        elif doc["kind"] == "KafkaNodePool":
            assert spec["replicas"] >= 3
            assert set(spec["roles"]) <= {"controller", "broker"}
            assert spec["storage"]["type"] in {"jbod", "persistent-claim", "ephemeral"}
        else:
            kafka = spec["kafka"]
            assert meta["name"] == cluster
            assert "replicas" not in kafka  # KRaft with node pools
            assert "zookeeper" not in spec
            assert doc["spec"]["kafka"]["authorization"]["type"] == "simple"
            listeners = kafka["listeners"]
            assert listeners
            assert all(item["tls"] for item in listeners)
            assert all(item["authentication"]["type"] == "scram-sha-512" for item in listeners)
            assert kafka["config"]["auto.create.topics.enable"] is False
            assert kafka["config"]["min.insync.replicas"] == 2


def test_strimzi_files_are_consistent() -> None:
    docs = yaml_documents(K8S / "kafka.yaml") + yaml_documents(K8S / "strimzi-topics-users.yaml")
    check_strimzi(docs, cluster="xchg")
    pools = [d for d in docs if d["kind"] == "KafkaNodePool"]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert all(d["spec"]["replicas"] <= brokers for d in docs if d["kind"] == "KafkaTopic")
