"""Kafka topics, SCRAM users and LITERAL ACLs derived from the party registry: what the broker must enforce.

Why derived: the registry is the only statement of who may publish and read what. The broker enforces the
same thing a second time (defence in depth: a compromised gateway, or a stolen SCRAM password, must not read
another agency's topics), so the broker's ACLs must be *derived* from the registry, never typed by hand.
:func:`render` does that derivation once, into a :class:`Rendered`. The renderers only change its notation:
:mod:`gateway.deploy.manifest` (``acls.json``), :mod:`gateway.deploy.script` (``kafka-init.sh``) and
:mod:`gateway.deploy.strimzi` (``KafkaTopic``/``KafkaUser``); :mod:`gateway.deploy.kubernetes` writes each
party's gateway with the names chosen here. ``gateway deploy render`` is the command line around them
(``docs/OPERATIONS.md``).

What is derived, per party ``P`` (principal ``User:xchg-P``, SCRAM-SHA-512):

* topics: ``xchg.P.case.v<major>``, ``xchg.P.alert.v<major>`` and ``xchg.P.delivery.v<major>`` for every
  major version of the loaded schemas, and ``xchg.P.dlq.v1`` -- exactly
  :func:`gateway.contract.policy.own_topics`;
* ``Describe`` on each of its own topics (the gateway checks them at start-up), ``Write`` on its case/alert
  topic of a major only if the registry lets ``P`` publish some message type of that kind and major;
* ``Read``, ``Write``, ``Describe`` and ``Delete`` on its own dead-letter topic (it dead-letters there;
  operators triage it and ``gateway dlq purge`` deletes old records from it with DeleteRecords);
* ``Read`` and ``Describe`` on every *other* party's case/alert topic that ``P``'s ``read`` patterns match --
  exactly :func:`gateway.contract.policy.readable_topics`, so the broker allows what the gateway subscribes to
  and nothing else. A pattern can never grant another party's dead-letter topic: those are never candidates;
* ``Read`` on the consumer group ``xchg.P`` (the runtime's group id), only if ``P`` reads anything;
* ``IdempotentWrite`` on the cluster (producers are idempotent on real Kafka, ``gateway/bus/kafka.py``).

The notary (audit log, :class:`NotarySpec`) gets ``Read``/``Describe`` on every case, alert and dead-letter
topic, ``Read``/``Write``/``Describe`` on its checkpoint topic, ``Read`` on its group and ``IdempotentWrite``.

The signed registry's topic ``xchg.registry.v1`` (one partition, compacted, kept for ever): every party and
the notary may ``Read``/``Describe`` it (readers use no consumer group); only the maintainers' user
``xchg-registry`` (:data:`REGISTRY_PUBLISHER`) may ``Write`` it. A gateway holding only its own credentials
cannot publish a registry version, and a version it managed to publish anyway is still refused below the
maintainers' threshold (``docs/REGISTRY.md``).

Every ACL is LITERAL -- never PREFIXED, never a ``*`` wildcard. Party ids contain dots, so the producer
prefix ``xchg.kemlu.`` is also a prefix of ``xchg.kemlu.kbri-kuching.case.v1``: a PREFIXED Write for the
ministry would let it write into its embassies' topics, and a prefixed group ``xchg.kemlu`` would cover the
embassies' groups. Detecting overlaps at render time is not enough either: a prefix that is safe today
becomes unsafe when a party ``kemlu.kbri-tawau`` joins later, silently, without touching the ministry's ACLs.
Literal ACLs name each topic, so what a party may do is exactly what ``acls.json`` lists; the price is to
re-render and apply when a party or a major schema version is added -- which creates topics anyway.
:func:`prefix_conflicts` shows which parties a prefix ACL would have over-granted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from gateway.contract.policy import (
    CHECKPOINT_TOPIC,
    REGISTRY_TOPIC,
    TOPIC_PREFIX,
    MessageKind,
    dlq_topic,
    own_topics,
    parse_topic,
    readable_topics,
    topic_for,
)
from gateway.contract.registry import Party, Registry
from gateway.contract.schemas import SchemaStore
from gateway.errors import GatewayError, Reason

__all__ = [
    "DEFAULT_RETENTION_MS",
    "REGISTRY_PUBLISHER",
    "SCRAM_MECHANISM",
    "AclEntry",
    "NotarySpec",
    "Operation",
    "Rendered",
    "ResourceType",
    "TopicSpec",
    "UserSpec",
    "group_for",
    "prefix_conflicts",
    "principal_for",
    "render",
    "username_for",
]

#: Topic retention: 30 days, the inbox's de-duplication window (``gateway/bus/inbox.py``). A gateway that is
#: down longer than this loses events; a replay older than this is no longer de-duplicated.
DEFAULT_RETENTION_MS: Final = 30 * 24 * 3600 * 1000
USER_PREFIX: Final = "xchg-"
SCRAM_MECHANISM: Final = "SCRAM-SHA-512"

ResourceType = Literal["topic", "group", "cluster"]
Operation = Literal["Read", "Write", "Describe", "Delete", "IdempotentWrite"]
TopicRole = Literal["case", "alert", "delivery", "dlq", "checkpoints", "registry"]

#: The registry maintainers' Kafka user: the only principal that may write ``xchg.registry.v1``.
REGISTRY_PUBLISHER: Final = "xchg-registry"

_OPERATION_ORDER: Final = {"Read": 0, "Write": 1, "Describe": 2, "Delete": 3, "IdempotentWrite": 4}
_RESOURCE_ORDER: Final = {"cluster": 0, "group": 1, "topic": 2}
_CLUSTER_RESOURCE: Final = "kafka-cluster"  # the only name Kafka accepts for the cluster resource


# ---- the model -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """One topic to create: who owns it, what it holds, and its shape."""

    name: str
    owner: str  # party id, or the notary's user name for its checkpoint topic
    role: TopicRole
    partitions: int
    replication: int
    config: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class UserSpec:
    """One SCRAM-SHA-512 user. ``party`` is ``None`` for the notary."""

    username: str
    party: str | None
    group: str | None

    @property
    def principal(self) -> str:
        """The Kafka principal ACLs name: ``User:<username>``."""
        return f"User:{self.username}"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class AclEntry:
    """One ALLOW ACL, always on a LITERAL resource pattern, for any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    operation: Operation

    @property
    def pattern_type(self) -> Literal["literal"]:
        """Always ``literal``: see the module docstring for why no ACL is PREFIXED."""
        return "literal"

    def sort_key(self) -> tuple[str, int, str, int]:
        """Principal, then cluster/group/topic, then name, then Read/Write/Describe/IdempotentWrite."""
        return (
            self.principal,
            _RESOURCE_ORDER[self.resource_type],
            self.resource_name,
            _OPERATION_ORDER[self.operation],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NotarySpec:
    """The audit notary's identity: it reads every exchange and dead-letter topic and writes checkpoints."""

    username: str = "xchg-notary"
    group: str = "xchg.notary"
    checkpoint_topic: str = CHECKPOINT_TOPIC


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """Everything :func:`render` derived; deterministic (sorted) so re-rendering diffs cleanly."""

    topics: tuple[TopicSpec, ...]
    users: tuple[UserSpec, ...]
    acls: tuple[AclEntry, ...]
    partitions: int
    replication: int
    min_insync: int
    retention_ms: int
    notary: NotarySpec | None
    warnings: tuple[str, ...] = ()

    def acls_for(self, principal: str) -> list[AclEntry]:
        """The ACLs of one principal (``User:xchg-<party>``), in :meth:`AclEntry.sort_key` order."""
        return [acl for acl in self.acls if acl.principal == principal]

    def topic_names(self) -> list[str]:
        """Every topic to create, sorted."""
        return [topic.name for topic in self.topics]


# ---- naming ----------------------------------------------------------------------------------------------
def username_for(party: str) -> str:
    """The SCRAM user name of a party's gateway: ``xchg-<party>`` (Kafka principal ``User:xchg-<party>``)."""
    return f"{USER_PREFIX}{party}"


def principal_for(party: str) -> str:
    """The Kafka principal of a party's gateway: ``User:xchg-<party>``."""
    return f"User:{username_for(party)}"


def group_for(party: str) -> str:
    """The consumer group of a party's gateway, exactly as :class:`gateway.runtime.gateway.Gateway` uses
    it."""
    return f"{TOPIC_PREFIX}.{party}"


# ---- derivation ------------------------------------------------------------------------------------------
def _majors(schemas: SchemaStore) -> list[tuple[MessageKind, int]]:
    majors: list[tuple[MessageKind, int]] = sorted({(s.kind, s.version[0]) for s in schemas.schemas()})
    if not majors:
        raise GatewayError(Reason.CONFIG_INVALID, "deploy: no message schemas loaded; nothing to provision")
    return majors


def _publishes(party: Party, schemas: SchemaStore, kind: str, major: int) -> bool:
    return any(
        party.may_publish(s.type) for s in schemas.schemas() if s.kind == kind and s.version[0] == major
    )


def _check_retention(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 3_600_000 and value != -1):
        raise GatewayError(Reason.CONFIG_INVALID, f"deploy: {name} must be -1 (forever) or >= one hour")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"deploy: {name} must be an integer >= {low}, got {value!r}"
        )
    return value


def _add_registry_topic(
    rendered: tuple[list[TopicSpec], list[UserSpec], set[AclEntry]],
    parties: Sequence[str],
    notary: NotarySpec | None,
    *,
    replication: int,
    min_insync: int,
) -> None:
    """``xchg.registry.v1``: written by the maintainers' user only, read by every party and the notary."""
    topics, users, acls = rendered
    config = {"min.insync.replicas": str(min_insync), "cleanup.policy": "compact", "retention.ms": "-1"}
    topics.append(
        TopicSpec(
            name=REGISTRY_TOPIC,
            owner=REGISTRY_PUBLISHER,
            role="registry",
            partitions=1,
            replication=replication,
            config=config,
        )
    )
    users.append(UserSpec(username=REGISTRY_PUBLISHER, party=None, group=None))
    grants: list[tuple[str, tuple[Operation, ...]]] = [
        (f"User:{REGISTRY_PUBLISHER}", ("Read", "Write", "Describe"))
    ]
    readers = [principal_for(p) for p in parties] + ([f"User:{notary.username}"] if notary else [])
    grants += [(principal, ("Read", "Describe")) for principal in readers]
    for principal, operations in grants:
        for operation in operations:
            acls.add(
                AclEntry(
                    principal=principal,
                    resource_type="topic",
                    resource_name=REGISTRY_TOPIC,
                    operation=operation,
                )
            )


def render(  # noqa: PLR0915 - one derivation, read top to bottom
    registry: Registry,
    schemas: SchemaStore,
    *,
    partitions: int = 6,
    replication: int = 3,
    min_insync: int = 2,
    retention_ms: int = DEFAULT_RETENTION_MS,
    retention_ms_by_kind: Mapping[str, int] | None = None,
    notary: NotarySpec | None = None,
    with_notary: bool = True,
) -> Rendered:
    """Derive topics, users and LITERAL ACLs from ``registry`` for the message majors in ``schemas``.

    ``retention_ms`` is every exchange and dead-letter topic's ``retention.ms``; ``retention_ms_by_kind``
    overrides it per topic kind (``case``, ``alert``, ``delivery``, ``dlq``: keep cases only as long as the
    law and the SOP need, alerts longer). ``notary`` overrides the notary's names (default
    :class:`NotarySpec`); ``with_notary=False`` leaves the notary out. Raises
    ``GatewayError(CONFIG_INVALID)`` for impossible settings (``min_insync`` above ``replication``, a
    retention under an hour, a kind that names no topic), a party whose user name or group collides with
    the notary's, or a checkpoint topic name that is an exchange topic name.
    """
    partitions = _check_int("partitions", partitions, 1)
    replication = _check_int("replication", replication, 1)
    min_insync = _check_int("min_insync", min_insync, 1)
    if min_insync > replication:
        raise GatewayError(
            Reason.CONFIG_INVALID,
            f"deploy: min_insync ({min_insync}) cannot exceed replication ({replication})",
        )
    _check_retention("retention_ms", retention_ms)
    by_kind = dict(retention_ms_by_kind or {})
    for kind, value in by_kind.items():
        _check_retention(f"retention_ms for kind {kind!r}", value)
    spec = (notary or NotarySpec()) if with_notary else None
    majors = _majors(schemas)
    parties = sorted(registry.parties)
    warnings: list[str] = []
    if min_insync == replication and replication > 1:
        warnings.append(
            f"min_insync = replication = {replication}: one broker down stops every producer; "
            f"use {replication - 1}"
        )
    if replication == 1:
        warnings.append("replication 1: losing one broker loses events; use 3 in production")

    topics: list[TopicSpec] = []
    for owner in parties:
        for name in own_topics(schemas, owner):
            role = parse_topic(name).kind
            retention = by_kind.get(role, retention_ms)
            topics.append(
                TopicSpec(
                    name=name,
                    owner=owner,
                    role=role,
                    partitions=partitions,
                    replication=replication,
                    config={"min.insync.replicas": str(min_insync), "retention.ms": str(retention)},
                )
            )
    unknown = sorted(set(by_kind) - {topic.role for topic in topics})
    if unknown:
        kinds = ", ".join(sorted({topic.role for topic in topics}))
        raise GatewayError(
            Reason.CONFIG_INVALID, f"deploy: no topic of kind {', '.join(unknown)}; the kinds are {kinds}"
        )

    users: list[UserSpec] = []
    acls: set[AclEntry] = set()

    def allow(principal: str, resource_type: ResourceType, name: str, *operations: Operation) -> None:
        for operation in operations:
            acls.add(
                AclEntry(
                    principal=principal, resource_type=resource_type, resource_name=name, operation=operation
                )
            )

    for party_id in parties:
        party = registry.parties[party_id]
        principal = principal_for(party_id)
        reads = readable_topics(registry, schemas, party_id)
        users.append(
            UserSpec(
                username=username_for(party_id), party=party_id, group=group_for(party_id) if reads else None
            )
        )
        for kind, major in majors:
            name = topic_for(party_id, kind, major)
            allow(principal, "topic", name, "Describe")
            if _publishes(party, schemas, kind, major):
                allow(principal, "topic", name, "Write")
        allow(principal, "topic", dlq_topic(party_id), "Read", "Write", "Describe", "Delete")
        for name in reads:
            allow(principal, "topic", name, "Read", "Describe")
        if reads:
            allow(principal, "group", group_for(party_id), "Read")
        allow(principal, "cluster", _CLUSTER_RESOURCE, "IdempotentWrite")
        warnings.extend(_pattern_warnings(party, parties, majors))

    if spec is not None:
        _check_notary(spec, parties)
        principal = f"User:{spec.username}"
        users.append(UserSpec(username=spec.username, party=None, group=spec.group))
        for topic in topics:
            allow(principal, "topic", topic.name, "Read", "Describe")
        topics.append(
            TopicSpec(
                name=spec.checkpoint_topic,
                owner=spec.username,
                role="checkpoints",
                partitions=1,
                replication=replication,
                config={"min.insync.replicas": str(min_insync), "retention.ms": "-1"},
            )
        )
        allow(principal, "topic", spec.checkpoint_topic, "Read", "Write", "Describe")
        allow(principal, "group", spec.group, "Read")
        allow(principal, "cluster", _CLUSTER_RESOURCE, "IdempotentWrite")

    _add_registry_topic((topics, users, acls), parties, spec, replication=replication, min_insync=min_insync)

    names = [t.name for t in topics]
    if len(names) != len(set(names)):
        raise GatewayError(Reason.CONFIG_INVALID, "deploy: two topics have the same name")
    return Rendered(
        topics=tuple(sorted(topics, key=lambda t: t.name)),
        users=tuple(sorted(users, key=lambda u: u.username)),
        acls=tuple(sorted(acls, key=AclEntry.sort_key)),
        partitions=partitions,
        replication=replication,
        min_insync=min_insync,
        retention_ms=retention_ms,
        notary=spec,
        warnings=tuple(warnings),
    )


def _check_notary(spec: NotarySpec, parties: Sequence[str]) -> None:
    for what, value in (("user name", spec.username), ("group", spec.group)):
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,200}", value):
            raise GatewayError(Reason.CONFIG_INVALID, f"deploy: notary {what} {value!r} is not a plain name")
    for party in parties:
        if username_for(party) == spec.username or group_for(party) == spec.group:
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"deploy: party {party!r} has the notary's user name or group; rename the notary",
            )
    try:
        parse_topic(spec.checkpoint_topic)
    except GatewayError:
        pass
    else:
        raise GatewayError(
            Reason.CONFIG_INVALID,
            f"deploy: notary checkpoint topic {spec.checkpoint_topic!r} looks like an exchange topic",
        )
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,200}", spec.checkpoint_topic):
        raise GatewayError(Reason.CONFIG_INVALID, f"deploy: {spec.checkpoint_topic!r} is not a topic name")


def _pattern_warnings(
    party: Party, parties: Sequence[str], majors: Sequence[tuple[MessageKind, int]]
) -> list[str]:
    """Read patterns that match nothing (typo?) or match topics a party never gets (its own, any DLQ)."""
    exchange = [topic_for(p, k, m) for p in parties if p != party.id for k, m in majors]
    own = [topic_for(party.id, k, m) for k, m in majors]
    dlqs = [dlq_topic(p) for p in parties if p != party.id]
    warnings = []
    for pattern in party.read:
        probe = Party(
            id=party.id,
            name=party.name,
            name_en=party.name_en,
            roles=(),
            publish=(),
            read=(pattern,),
            keys=(),
        )
        hits_dlq = [t for t in dlqs if probe.may_read(t)]
        if hits_dlq:
            warnings.append(
                f"{party.id}: read pattern {pattern!r} matches dead-letter topic(s) {', '.join(hits_dlq)}; "
                "not granted (a DLQ is read only by its owner)"
            )
        if not any(probe.may_read(t) for t in exchange) and not any(probe.may_read(t) for t in own):
            warnings.append(f"{party.id}: read pattern {pattern!r} matches no exchange topic")
    return warnings


def prefix_conflicts(registry: Registry) -> dict[str, list[str]]:
    """For each party, the other parties whose topics a PREFIXED ACL on ``xchg.<party>.`` would also cover.

    ``{"kemlu": ["kemlu.kbri-kuala-lumpur", "kemlu.kbri-kuching"]}`` for the sample registry. Parties
    without conflicts are left out. This is why :func:`render` only emits LITERAL ACLs.
    """
    parties = sorted(registry.parties)
    conflicts: dict[str, list[str]] = {}
    for party in parties:
        # xchg.<other>.<kind>.v<n> starts with xchg.<party>. exactly when <other> starts with <party>.
        covered = [other for other in parties if other.startswith(f"{party}.")]
        if covered:
            conflicts[party] = covered
    return conflicts
