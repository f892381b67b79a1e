"""The derivation (``gateway.deploy.acls``): topics, users and ACLs derived from the registry.

The ACLs are checked against an independent computation from ``Party.may_read``/``Party.may_publish`` over
the topic names built here (not with ``gateway.runtime.gateway``), for the sample registry and for one where
two agencies joined.
"""

from __future__ import annotations

import pytest

from gateway.contract.policy import parse_topic
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.deploy.acls import Rendered, prefix_conflicts, render
from gateway.errors import GatewayError
from tests.unit.deploy._common import POLRI, SAMPLE, Acl, as_tuples, extended_registry, sample_document

NOTARY = "User:xchg-notary"


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
        for operation in ("Read", "Write", "Describe", "Delete"):  # Delete: `gateway dlq purge`
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
    # the signed registry: every party and the notary read it, only the maintainers' user writes it
    for principal in [f"User:xchg-{p}" for p in parties] + [NOTARY, "User:xchg-registry"]:
        acls.update(
            {
                (principal, "topic", "xchg.registry.v1", "Read"),
                (principal, "topic", "xchg.registry.v1", "Describe"),
            }
        )
    acls.add(("User:xchg-registry", "topic", "xchg.registry.v1", "Write"))
    return acls


def test_every_party_has_exactly_its_acls(case: tuple[Registry, Rendered], schemas: SchemaStore) -> None:
    registry, rendered = case
    assert as_tuples(rendered) == expected_acls(registry, schemas)


def test_users_topics_and_groups(case: tuple[Registry, Rendered], schemas: SchemaStore) -> None:
    registry, rendered = case
    users = {f"xchg-{p}" for p in registry.parties} | {"xchg-notary", "xchg-registry"}
    assert {u.username for u in rendered.users} == users
    majors = {(s.kind, s.version[0]) for s in schemas.schemas()}
    exchange = {f"xchg.{p}.{k}.v{m}" for p in registry.parties for k, m in majors}
    dlqs = {f"xchg.{p}.dlq.v1" for p in registry.parties}
    assert set(rendered.topic_names()) == exchange | dlqs | {"xchg.notary.checkpoints.v1", "xchg.registry.v1"}
    for topic in rendered.topics:
        single = topic.role in ("checkpoints", "registry")
        assert (topic.partitions, topic.replication) == ((1 if single else 3), 3)
        assert topic.config["min.insync.replicas"] == "2"
    checkpoints = next(t for t in rendered.topics if t.role == "checkpoints")
    assert checkpoints.config["retention.ms"] == "-1"
    registry_topic = next(t for t in rendered.topics if t.role == "registry")
    assert (registry_topic.config["cleanup.policy"], registry_topic.config["retention.ms"]) == (
        "compact",
        "-1",
    )


def test_acls_are_literal_and_never_wildcards(case: tuple[Registry, Rendered]) -> None:
    _, rendered = case
    topics = set(rendered.topic_names())
    for acl in rendered.acls:
        assert acl.pattern_type == "literal"
        assert not set(acl.resource_name) & set("*?[]"), acl
        if acl.resource_type == "topic":
            assert acl.resource_name in topics, acl


def test_a_party_writes_only_its_own_topics(case: tuple[Registry, Rendered]) -> None:
    """No Write (and so no prefix) reaches another party's topics -- the kemlu / kemlu.kbri-* trap."""
    registry, rendered = case
    for acl in rendered.acls:
        if acl.operation != "Write" or acl.principal in (NOTARY, "User:xchg-registry"):
            continue
        assert parse_topic(acl.resource_name).party == acl.principal.removeprefix("User:xchg-"), acl
    ministry = {a.resource_name for a in rendered.acls_for("User:xchg-kemlu") if a.operation == "Write"}
    assert ministry == {
        "xchg.kemlu.case.v1",
        "xchg.kemlu.alert.v1",
        "xchg.kemlu.delivery.v1",
        "xchg.kemlu.dlq.v1",
    }
    assert prefix_conflicts(registry)["kemlu"] == ["kemlu.kbri-kuala-lumpur", "kemlu.kbri-kuching"]


def test_a_dead_letter_topic_is_read_only_by_its_owner(case: tuple[Registry, Rendered]) -> None:
    registry, rendered = case
    for party in registry.parties:
        readers = {
            a.principal
            for a in rendered.acls
            if a.resource_name == f"xchg.{party}.dlq.v1" and a.operation == "Read"
        }
        assert readers == {f"User:xchg-{party}", NOTARY}


def test_new_agencies_join_by_configuration(schemas: SchemaStore) -> None:
    rendered = render(extended_registry(), schemas)
    polri = rendered.acls_for("User:xchg-polri")
    assert {a.resource_name for a in polri if a.operation == "Write"} == {"xchg.polri.dlq.v1"}
    reads = {a.resource_name for a in polri if a.operation == "Read" and a.resource_type == "topic"}
    assert reads == {f"xchg.{p}.alert.v1" for p in extended_registry().parties if p != "polri"} | {
        "xchg.polri.dlq.v1",
        "xchg.registry.v1",
    }
    bp2mi = {a.resource_name for a in rendered.acls_for("User:xchg-bp2mi") if a.operation == "Read"}
    assert {"xchg.kemensos.case.v1", "xchg.kemensos.alert.v1"} <= bp2mi
    assert "xchg.kemensos.dlq.v1" not in bp2mi
    assert any("bp2mi" in w and "xchg.kemensos.dlq.v1" in w for w in rendered.warnings)


def test_render_refuses_impossible_settings(schemas: SchemaStore) -> None:
    registry = Registry.load(SAMPLE)
    with pytest.raises(GatewayError, match="min_insync"):
        render(registry, schemas, replication=2, min_insync=3)
    with pytest.raises(GatewayError, match="partitions"):
        render(registry, schemas, partitions=0)
    document = sample_document()
    document["parties"].append({**POLRI, "id": "notary"})
    with pytest.raises(GatewayError, match="notary"):
        render(Registry.from_mapping(document), schemas)
    without = render(registry, schemas, with_notary=False)
    assert all(a.principal != NOTARY for a in without.acls)
    assert "xchg.notary.checkpoints.v1" not in without.topic_names()


def test_retention_per_topic_kind(schemas: SchemaStore) -> None:
    """Case topics can be kept for less time than alerts (privacy), dead letters for their own period; the
    checkpoints and the registry stay for ever; a kind that names no topic is refused naming it."""
    registry = Registry.load(SAMPLE)
    day = 86_400_000
    rendered = render(
        registry, schemas, retention_ms=30 * day, retention_ms_by_kind={"case": 90 * day, "dlq": 14 * day}
    )
    retention = {t.name: t.config["retention.ms"] for t in rendered.topics}
    kinds = {t.name: t.role for t in rendered.topics}
    expected = {"case": str(90 * day), "dlq": str(14 * day), "checkpoints": "-1", "registry": "-1"}
    assert {kinds[name] for name in retention} >= {"case", "alert", "dlq"}
    for name, value in retention.items():
        assert value == expected.get(kinds[name], str(30 * day)), name
    with pytest.raises(GatewayError) as caught:
        render(registry, schemas, retention_ms_by_kind={"cases": 90 * day})
    assert "cases" in caught.value.detail
    with pytest.raises(GatewayError) as caught:
        render(registry, schemas, retention_ms_by_kind={"case": 60_000})
    assert "kind 'case'" in caught.value.detail
