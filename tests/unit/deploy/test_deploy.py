"""Production deployment: topics, users and ACLs derived from the registry, and the files that apply them.

The ACLs are checked against an independent computation from ``Party.may_read``/``Party.may_publish`` over
the topic names built here (not with ``gateway.runtime.gateway``), for the sample registry and for one where
two agencies joined (``bp2mi`` with a sloppy read pattern, ``polri`` reading only alerts). Each notation --
``acls.json``, ``kafka-init.sh`` (run against stub ``kafka-*.sh`` tools that record their argv) and the
Strimzi YAML -- is parsed back and must say exactly the same. The checked-in generated files must equal a
fresh render. ``docker-compose config`` and ``kubernetes-validate`` must pass: skipped only when the tool is
missing outside CI (``CI`` set), failed in CI, where ``.ci/install-system-deps`` and the dev extras install
them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.contract.policy import parse_topic
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.deploy import acls as deploy
from gateway.deploy import kubernetes, strimzi
from gateway.deploy.manifest import MANIFEST_FORMAT, to_manifest
from gateway.deploy.script import to_shell_script
from gateway.errors import GatewayError
from gateway.runtime.config import GatewayConfig
from tests.paths import REPO

ROOT = REPO
SAMPLE = ROOT / "deploy" / "registry.example.toml"
COMPOSE = ROOT / "deploy" / "compose"
K8S = ROOT / "deploy" / "k8s"
NOTARY = "User:xchg-notary"
BASH = shutil.which("bash") or "/bin/bash"

BP2MI = {
    "id": "bp2mi",
    "name": "Badan Pelindungan Pekerja Migran Indonesia",
    "name_en": "Indonesian Migrant Workers Protection Agency",
    "roles": ["migrant-worker-protection"],
    "publish": [
        "id.trafficking.case.referral",
        "id.trafficking.case.consent-change",
        "id.trafficking.alert.*",
    ],
    # "xchg.kemensos.*" is sloppy on purpose: it also matches xchg.kemensos.dlq.v1, which must not be granted
    "read": ["xchg.kemlu.*.case.v1", "xchg.kemlu.*.alert.v1", "xchg.kemensos.*"],
}
POLRI = {
    "id": "polri",
    "name": "Kepolisian Negara Republik Indonesia",
    "name_en": "Indonesian National Police",
    "roles": ["law-enforcement"],
    "publish": [],
    "read": ["xchg.*.alert.v1"],
}


# ---- fixtures and helpers -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schemas() -> SchemaStore:
    return SchemaStore.load()


def _sample_document() -> dict[str, Any]:
    with SAMPLE.open("rb") as handle:
        return tomllib.load(handle)


def _extended_registry() -> Registry:
    document = _sample_document()
    document["parties"] = [*document["parties"], BP2MI, POLRI]
    return Registry.from_mapping(document)


REGISTRIES = {"sample": lambda: Registry.load(SAMPLE), "extended": _extended_registry}


@pytest.fixture(scope="module", params=sorted(REGISTRIES))
def case(request: pytest.FixtureRequest, schemas: SchemaStore) -> tuple[Registry, deploy.Rendered]:
    registry = REGISTRIES[request.param]()
    return registry, deploy.render(registry, schemas, partitions=3, replication=3, min_insync=2)


Acl = tuple[str, str, str, str]  # principal, resource type, resource name, operation


def expected_acls(registry: Registry, schemas: SchemaStore) -> set[Acl]:
    """What each principal may do, computed from the registry's own predicates over every topic name."""
    majors = {(s.kind, s.version[0]) for s in schemas.schemas()}
    types = {key: [s.type for s in schemas.schemas() if (s.kind, s.version[0]) == key] for key in majors}
    parties = sorted(registry.parties)
    acls: set[Acl] = set()
    for party_id in parties:
        party = registry.parties[party_id]
        principal = f"User:xchg-{party_id}"
        for kind, major in majors:
            name = f"xchg.{party_id}.{kind}.v{major}"
            acls.add((principal, "topic", name, "Describe"))
            if any(party.may_publish(t) for t in types[(kind, major)]):
                acls.add((principal, "topic", name, "Write"))
        for operation in ("Read", "Write", "Describe"):
            acls.add((principal, "topic", f"xchg.{party_id}.dlq.v1", operation))
        reads = {
            f"xchg.{other}.{kind}.v{major}"
            for other in parties
            if other != party_id
            for kind, major in majors
            if party.may_read(f"xchg.{other}.{kind}.v{major}")
        }
        for name in reads:
            acls.update({(principal, "topic", name, "Read"), (principal, "topic", name, "Describe")})
        if reads:
            acls.add((principal, "group", f"xchg.{party_id}", "Read"))
        acls.add((principal, "cluster", "kafka-cluster", "IdempotentWrite"))
    everything = [f"xchg.{p}.{k}.v{m}" for p in parties for k, m in majors] + [
        f"xchg.{p}.dlq.v1" for p in parties
    ]
    for name in everything:
        acls.update({(NOTARY, "topic", name, "Read"), (NOTARY, "topic", name, "Describe")})
    for operation in ("Read", "Write", "Describe"):
        acls.add((NOTARY, "topic", "xchg.notary.checkpoints.v1", operation))
    acls.update(
        {(NOTARY, "group", "xchg.notary", "Read"), (NOTARY, "cluster", "kafka-cluster", "IdempotentWrite")}
    )
    return acls


def as_tuples(rendered: deploy.Rendered) -> set[Acl]:
    return {(a.principal, a.resource_type, a.resource_name, a.operation) for a in rendered.acls}


def documents(text: str) -> list[dict[str, Any]]:
    """The documents of a rendered multi-document YAML file (JSON documents), checked with PyYAML too."""
    chunks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line == "---":
            chunks.append([])
        elif not line.startswith("#"):
            chunks[-1].append(line)
    parsed = [json.loads("\n".join(chunk)) for chunk in chunks if "".join(chunk).strip()]
    try:
        import yaml  # noqa: PLC0415 - optional: installed with kubernetes-validate (dev extras)
    except ImportError:
        return parsed
    assert [d for d in yaml.safe_load_all(text) if d is not None] == parsed
    return parsed


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


def require_tool(available: bool, what: str) -> None:
    """Skip when a validation tool is missing on a developer machine; fail in CI, which must have it."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI: .ci/install-system-deps and the dev extras must install it")
    pytest.skip(f"{what} is not installed here (outside CI); install it to run this check")


# ---- the derivation -----------------------------------------------------------------------------------
def test_every_party_has_exactly_its_acls(
    case: tuple[Registry, deploy.Rendered], schemas: SchemaStore
) -> None:
    registry, rendered = case
    assert as_tuples(rendered) == expected_acls(registry, schemas)


def test_users_topics_and_groups(case: tuple[Registry, deploy.Rendered], schemas: SchemaStore) -> None:
    registry, rendered = case
    assert {u.username for u in rendered.users} == {f"xchg-{p}" for p in registry.parties} | {"xchg-notary"}
    majors = {(s.kind, s.version[0]) for s in schemas.schemas()}
    exchange = {f"xchg.{p}.{k}.v{m}" for p in registry.parties for k, m in majors}
    dlqs = {f"xchg.{p}.dlq.v1" for p in registry.parties}
    assert set(rendered.topic_names()) == exchange | dlqs | {"xchg.notary.checkpoints.v1"}
    for topic in rendered.topics:
        assert (topic.partitions, topic.replication) == ((1 if topic.role == "checkpoints" else 3), 3)
        assert topic.config["min.insync.replicas"] == "2"
    checkpoints = next(t for t in rendered.topics if t.role == "checkpoints")
    assert checkpoints.config["retention.ms"] == "-1"


def test_acls_are_literal_and_never_wildcards(case: tuple[Registry, deploy.Rendered]) -> None:
    _, rendered = case
    topics = set(rendered.topic_names())
    for acl in rendered.acls:
        assert acl.pattern_type == "literal"
        assert not set(acl.resource_name) & set("*?[]"), acl
        if acl.resource_type == "topic":
            assert acl.resource_name in topics, acl


def test_a_party_writes_only_its_own_topics(case: tuple[Registry, deploy.Rendered]) -> None:
    """No Write (and so no prefix) reaches another party's topics -- the kemlu / kemlu.kbri-* trap."""
    registry, rendered = case
    for acl in rendered.acls:
        if acl.operation != "Write" or acl.principal == NOTARY:
            continue
        assert parse_topic(acl.resource_name).party == acl.principal.removeprefix("User:xchg-"), acl
    ministry = {a.resource_name for a in rendered.acls_for("User:xchg-kemlu") if a.operation == "Write"}
    assert ministry == {"xchg.kemlu.case.v1", "xchg.kemlu.alert.v1", "xchg.kemlu.dlq.v1"}
    assert deploy.prefix_conflicts(registry)["kemlu"] == ["kemlu.kbri-kuala-lumpur", "kemlu.kbri-kuching"]


def test_a_dead_letter_topic_is_read_only_by_its_owner(case: tuple[Registry, deploy.Rendered]) -> None:
    registry, rendered = case
    for party in registry.parties:
        readers = {
            a.principal
            for a in rendered.acls
            if a.resource_name == f"xchg.{party}.dlq.v1" and a.operation == "Read"
        }
        assert readers == {f"User:xchg-{party}", NOTARY}


def test_new_agencies_join_by_configuration(schemas: SchemaStore) -> None:
    rendered = deploy.render(_extended_registry(), schemas)
    polri = rendered.acls_for("User:xchg-polri")
    assert {a.resource_name for a in polri if a.operation == "Write"} == {"xchg.polri.dlq.v1"}
    reads = {a.resource_name for a in polri if a.operation == "Read" and a.resource_type == "topic"}
    assert reads == {f"xchg.{p}.alert.v1" for p in _extended_registry().parties if p != "polri"} | {
        "xchg.polri.dlq.v1"
    }
    bp2mi = {a.resource_name for a in rendered.acls_for("User:xchg-bp2mi") if a.operation == "Read"}
    assert {"xchg.kemensos.case.v1", "xchg.kemensos.alert.v1"} <= bp2mi
    assert "xchg.kemensos.dlq.v1" not in bp2mi
    assert any("bp2mi" in w and "xchg.kemensos.dlq.v1" in w for w in rendered.warnings)


def test_render_refuses_impossible_settings(schemas: SchemaStore) -> None:
    registry = Registry.load(SAMPLE)
    with pytest.raises(GatewayError, match="min_insync"):
        deploy.render(registry, schemas, replication=2, min_insync=3)
    with pytest.raises(GatewayError, match="partitions"):
        deploy.render(registry, schemas, partitions=0)
    document = _sample_document()
    document["parties"].append({**POLRI, "id": "notary"})
    with pytest.raises(GatewayError, match="notary"):
        deploy.render(Registry.from_mapping(document), schemas)
    without = deploy.render(registry, schemas, with_notary=False)
    assert all(a.principal != NOTARY for a in without.acls)
    assert "xchg.notary.checkpoints.v1" not in without.topic_names()


# ---- the notations say the same -----------------------------------------------------------------------
def test_manifest_round_trips(case: tuple[Registry, deploy.Rendered]) -> None:
    _, rendered = case
    manifest = json.loads(to_manifest(rendered))
    assert manifest["format"] == MANIFEST_FORMAT
    acls = {
        (a["principal"], a["resource_type"], a["resource_name"], a["operation"]) for a in manifest["acls"]
    }
    assert acls == as_tuples(rendered)
    assert {a["pattern_type"] for a in manifest["acls"]} == {"literal"}
    assert [t["name"] for t in manifest["topics"]] == rendered.topic_names()


def test_strimzi_resources_round_trip(case: tuple[Registry, deploy.Rendered]) -> None:
    _, rendered = case
    docs = documents(strimzi.to_strimzi(rendered, namespace="xchg"))
    assert strimzi_acls(docs) == as_tuples(rendered)
    check_strimzi(docs, cluster="xchg")
    topics = {d["spec"]["topicName"]: d["spec"] for d in docs if d["kind"] == "KafkaTopic"}
    assert set(topics) == set(rendered.topic_names())
    old = documents(strimzi.to_strimzi(rendered, api_version="kafka.strimzi.io/v1beta2"))
    assert {d["apiVersion"] for d in old} == {"kafka.strimzi.io/v1beta2"}


STUB = """#!/usr/bin/env bash
{ printf '%s\\0' "$(basename "$0")" "$@"; printf '\\1\\0'; } >>"$XCHG_STUB_LOG"
"""


def run_init_script(
    script: str, tmp_path: Path, rendered: deploy.Rendered, *, password: str | None = None
) -> list[list[str]]:
    """Run kafka-init.sh against stub kafka-*.sh tools; return the argv of every call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    scram = tmp_path / "scram"
    scram.mkdir()
    for user in rendered.users:
        (scram / user.username).write_text(
            (password or f"pw-{user.username}-0123456789abcdef").replace(".", "_") + "\n"
        )
    (tmp_path / "kafka-init.sh").write_text(script)
    log = tmp_path / "calls"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_BIN": str(bin_dir),
        "XCHG_STUB_LOG": str(log),
        "XCHG_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
        "XCHG_ADMIN_CONFIG": "/etc/xchg/admin.properties",
        "XCHG_SCRAM_DIR": str(scram),
    }
    result = subprocess.run(
        [BASH, str(tmp_path / "kafka-init.sh")], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)
    calls: list[list[str]] = []
    current: list[str] = []
    for field in log.read_text().split("\0")[:-1]:
        if field == "\1":
            calls.append(current)
            current = []
        else:
            current.append(field)
    return calls


def _values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_shell_script_does_exactly_the_same(case: tuple[Registry, deploy.Rendered], tmp_path: Path) -> None:
    _, rendered = case
    calls = run_init_script(to_shell_script(rendered), tmp_path, rendered)
    for call in calls:
        assert call[1:5] == [
            "--bootstrap-server",
            "kafka-1:9093,kafka-2:9093",
            "--command-config",
            "/etc/xchg/admin.properties",
        ]
    topics = {}
    users = {}
    acls: set[Acl] = set()
    for tool, *argv in calls:
        if tool == "kafka-topics.sh":
            assert {"--create", "--if-not-exists"} <= set(argv)
            (name,) = _values(argv, "--topic")
            topics[name] = (
                int(_values(argv, "--partitions")[0]),
                int(_values(argv, "--replication-factor")[0]),
                dict(c.split("=", 1) for c in _values(argv, "--config")),
            )
        elif tool == "kafka-configs.sh":
            (user,) = _values(argv, "--entity-name")
            users[user] = _values(argv, "--add-config")[0]
        else:
            assert tool == "kafka-acls.sh"
            assert _values(argv, "--resource-pattern-type") == ["literal"]
            assert "prefixed" not in " ".join(argv).lower()
            (principal,) = _values(argv, "--allow-principal")
            resources = [("topic", n) for n in _values(argv, "--topic")] + [
                ("group", n) for n in _values(argv, "--group")
            ]
            if "--cluster" in argv:
                resources.append(("cluster", "kafka-cluster"))
            for operation in _values(argv, "--operation"):
                acls.update((principal, kind, name, operation) for kind, name in resources)
    assert acls == as_tuples(rendered)
    assert topics == {t.name: (t.partitions, t.replication, dict(t.config)) for t in rendered.topics}
    for user in rendered.users:
        expected = f"pw-{user.username}-0123456789abcdef".replace(".", "_")
        assert users[user.username] == f"SCRAM-SHA-512=[iterations=8192,password={expected}]"


def test_shell_script_refuses_weak_or_missing_passwords(tmp_path: Path, schemas: SchemaStore) -> None:
    rendered = deploy.render(Registry.load(SAMPLE), schemas)
    with pytest.raises(AssertionError, match="24\\+ characters"):
        run_init_script(to_shell_script(rendered), tmp_path, rendered, password="short]")


def test_cli_writes_the_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "deploy",
            "render",
            "--registry",
            str(SAMPLE),
            "--out",
            str(out),
            "--partitions",
            "3",
            "--k8s-gateways",
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "acls.json",
        "kafka-init.sh",
        "strimzi-topics-users.yaml",
        "k8s-gateways",
    }
    assert os.access(out / "kafka-init.sh", os.X_OK)
    printed = capsys.readouterr().out
    assert "User:xchg-kemlu.kbri-kuching" in printed
    assert "would also cover kemlu.kbri-kuala-lumpur, kemlu.kbri-kuching" in printed
    assert (
        main(
            [
                "deploy",
                "render",
                "--registry",
                str(SAMPLE),
                "--out",
                str(out),
                "--replication",
                "1",
                "--min-insync",
                "2",
            ]
        )
        == 2
    )


# ---- the checked-in files are what render produces ----------------------------------------------------
def test_checked_in_files_are_current(schemas: SchemaStore) -> None:
    """Re-render with the parameters in docs/OPERATIONS.md if this fails after a registry or schema change."""
    registry = Registry.load(SAMPLE)
    compose = deploy.render(registry, schemas, partitions=3, replication=3, min_insync=2)
    assert (COMPOSE / "kafka-init.sh").read_text() == to_shell_script(compose)
    k8s = deploy.render(registry, schemas, partitions=6, replication=3, min_insync=2)
    assert (K8S / "strimzi-topics-users.yaml").read_text() == strimzi.to_strimzi(k8s, namespace="xchg")
    files = {p.name for p in (K8S / "gateways").glob("*.yaml")}
    assert files == {f"{p}.yaml" for p in registry.parties}
    for party in registry.parties:
        assert (K8S / "gateways" / f"{party}.yaml").read_text() == kubernetes.gateway_manifests(
            registry, party
        )


# ---- Kubernetes -----------------------------------------------------------------------------------------
def check_strimzi(docs: list[dict[str, Any]], *, cluster: str) -> None:
    """Structural checks of the Strimzi resources: the fields they use, and the ACL invariants."""
    topics = {d["spec"].get("topicName", d["metadata"]["name"]) for d in docs if d["kind"] == "KafkaTopic"}
    for doc in docs:
        assert doc["apiVersion"] in strimzi.STRIMZI_API_VERSIONS, doc["apiVersion"]
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


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml") if not os.environ.get("CI") else __import__("yaml")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_strimzi_files_are_consistent() -> None:
    docs = yaml_documents(K8S / "kafka.yaml") + yaml_documents(K8S / "strimzi-topics-users.yaml")
    check_strimzi(docs, cluster="xchg")
    pools = [d for d in docs if d["kind"] == "KafkaNodePool"]
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert all(d["spec"]["replicas"] <= brokers for d in docs if d["kind"] == "KafkaTopic")


def builtin_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml_documents(path):
            if not doc["apiVersion"].startswith("kafka.strimzi.io/"):
                yield path.name, doc
    registry = _extended_registry()
    for party in ("bp2mi", "polri"):
        for doc in documents(kubernetes.gateway_manifests(registry, party)):
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
    registry = _extended_registry()
    docs = {d["kind"]: d for d in documents(kubernetes.gateway_manifests(registry, "kemlu.kbri-kuching"))}
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
    document = _sample_document()
    document["parties"].append({**POLRI, "id": "kemlu-kbri.kuching"})
    clashing = Registry.from_mapping(document)
    with pytest.raises(GatewayError, match="both map"):
        kubernetes.gateway_manifests(clashing, "kemlu.kbri-kuching")


# ---- docker compose -------------------------------------------------------------------------------------
def compose_document() -> dict[str, Any]:
    return dict(yaml_documents(COMPOSE / "compose.yaml")[0])


def test_compose_matches_the_registry() -> None:
    registry = Registry.load(SAMPLE)
    compose = compose_document()
    services = compose["services"]
    gateways = {name for name in services if name.startswith("gw-")}
    assert gateways == {f"gw-{kubernetes.k8s_slug(p)}" for p in registry.parties}
    targets = yaml_documents(COMPOSE / "prometheus" / "prometheus.yml")[0]["scrape_configs"][0][
        "static_configs"
    ][0]
    assert set(targets["targets"]) == {f"{g}:8080" for g in gateways}
    for party in registry.parties:
        service = services[f"gw-{kubernetes.k8s_slug(party)}"]
        assert f"./gateways/{party}.toml:/etc/xchg/gateway.toml:ro" in service["volumes"]
        config = tomllib.loads((COMPOSE / "gateways" / f"{party}.toml").read_text())
        assert config["party"] == party
        assert config["kafka"]["sasl"] == {
            "mechanism": "SCRAM-SHA-512",
            "username": deploy.username_for(party),
            "password_file": "/run/secrets/kafka-password",
        }
        assert config["kafka"]["security_protocol"] == "SASL_SSL"
        assert config["topics"]["partitions"] <= 3  # what deploy/compose/kafka-init.sh creates
        mounted = {s["target"] for s in service["secrets"]}
        paths = [
            config["keys"]["signing_key"],
            *config["keys"]["sealing_keys"],
            config["kafka"]["tls"]["ca_file"],
            config["kafka"]["sasl"]["password_file"],
        ]
        assert {Path(p).name for p in paths} <= mounted
        assert all(p.startswith("/run/secrets/") for p in paths)
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        assert "ports" not in services[name]  # Kafka is not published outside the compose network
    assert compose["networks"]["bus"]["internal"] is True
    assert services["notary"]["profiles"] == ["audit"]


def test_gen_secrets_provides_every_file_compose_mounts(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        require_tool(False, "openssl")
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    env = {
        **os.environ,
        "GATEWAY": str(Path(sys.executable).with_name("gateway")),
        "PYTHON": sys.executable,
        "REGISTRY_TEMPLATE": str(SAMPLE),
    }
    result = subprocess.run(
        [BASH, str(work / "gen-secrets.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    secrets = work / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    for name, secret in compose_document()["secrets"].items():
        assert (work / secret["file"]).is_file(), name
    generated = Registry.load(secrets / "registry.toml")
    assert all(len(p.keys) == 2 for p in generated.parties.values())
    schemas = SchemaStore.load()
    rendered = deploy.render(generated, schemas, partitions=3, replication=3, min_insync=2)
    assert to_shell_script(rendered) == (COMPOSE / "kafka-init.sh").read_text()  # keys change no ACL
    party = "kemlu.kbri-kuching"
    document = tomllib.loads((COMPOSE / "gateways" / f"{party}.toml").read_text())
    document["keys"] = {
        "signing_key": str(secrets / "parties" / party / "signing.pem"),
        "sealing_keys": [str(secrets / "parties" / party / "sealing.pem")],
    }
    document["kafka"]["tls"]["ca_file"] = str(secrets / "ca" / "ca.crt")
    document["kafka"]["sasl"]["password_file"] = str(secrets / "scram" / f"xchg-{party}")
    document["registry"] = str(secrets / "registry.toml")
    config = GatewayConfig.from_mapping(document, base_dir=work)
    assert config.kafka.sasl is not None
    assert config.kafka.sasl.username == f"xchg-{party}"


def test_docker_compose_config_passes() -> None:
    binary = shutil.which("docker-compose")
    require_tool(binary is not None, "docker-compose (Debian package docker-compose)")
    assert binary is not None
    for extra in ([], ["--profile", "audit"]):
        result = subprocess.run(
            [binary, "-f", str(COMPOSE / "compose.yaml"), *extra, "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
            cwd=COMPOSE,
        )
        assert result.returncode == 0, result.stderr


# ---- the image ------------------------------------------------------------------------------------------
def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2
    assert stages[0].endswith(" AS builder")
    base = next(line for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim@sha256:[0-9a-f]{64}", base)
    final = lines[lines.index(stages[1]) :]
    assert not any("apt-get" in line or "gcc" in line or "build-essential" in line for line in final)
    assert "USER 10001:10001" in final
    assert final.index("USER 10001:10001") < final.index('ENTRYPOINT ["gateway"]')
    assert any(line.startswith("HEALTHCHECK") for line in final)
    assert "/healthz" in text
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"  # an allow-list: nothing reaches the build context unless named
