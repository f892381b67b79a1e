"""Exchange policy every role applies alike: topic names, who may publish what, who reads which topic.

One module decides these so the publisher, the verifier, the subscriber, the notary, the auditor and the
rendered Kafka ACLs cannot drift apart.

Topic names are computed, never typed: topic ACLs are granted per producer prefix (``xchg.<party>.``), the
subscriber derives what to read from the party registry, and a new major schema version gets new topics.
One function builds every name and one parses it back:

* ``xchg.<party>.case.v<major>``  — case messages published by ``<party>`` (key = case id)
* ``xchg.<party>.alert.v<major>`` — alerts published by ``<party>`` (key = alert id)
* ``xchg.<party>.delivery.v<major>`` — delivery receipts signed by ``<party>`` for the events it finished
  (key = the original event's id; read by the parties whose events it receives, per the registry)
* ``xchg.<party>.dlq.v1``         — records ``<party>``'s gateway rejected, with a reason header

``<party>`` is a party id (:data:`gateway.contract.registry.PARTY_ID`, e.g. ``kemlu.kbri-kuching``), so a
name is parsed from the right: the last label is the version, the one before it the kind. Names never
contain ``_``, which Kafka treats as colliding with ``.`` in metric names.

Publishing is governed by the registry's ``publish`` patterns (:func:`may_publish`), reading by its ``read``
patterns (:func:`readable_topics`); every event signs :data:`SIGNED_EXTENSIONS` besides the core attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from gateway.contract.registry import PARTY_ID, Party, Registry
from gateway.contract.schemas import MessageKind, MessageSchema, SchemaStore
from gateway.errors import GatewayError, Reason

__all__ = [
    "CHECKPOINT_TOPIC",
    "MESSAGE_KINDS",
    "NOTARISED_TOPICS",
    "REGISTRY_TOPIC",
    "SIGNED_EXTENSIONS",
    "TOPIC_PREFIX",
    "MessageKind",
    "TopicKind",
    "TopicName",
    "dlq_topic",
    "event_topic",
    "exchange_topics",
    "may_publish",
    "own_topics",
    "parse_topic",
    "readable_topics",
    "topic_for",
]

TopicKind = Literal["case", "alert", "delivery", "dlq"]
MESSAGE_KINDS: Final[tuple[MessageKind, ...]] = get_args(MessageKind)
_TOPIC_KINDS: Final[tuple[TopicKind, ...]] = get_args(TopicKind)

TOPIC_PREFIX: Final = "xchg"
_DLQ_MAJOR: Final = 1
_MAX_TOPIC_LEN: Final = 249  # Kafka's limit
_KAFKA_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_VERSION_RE: Final = re.compile(r"^v([1-9][0-9]{0,5})$")

#: Where registry maintainers publish each signed registry version (compacted, one partition; key =
#: ``<serial>:<digest>``, value = the version's envelope). Every gateway, the notary and the auditor read it.
REGISTRY_TOPIC: Final = "xchg.registry.v1"
#: The topics the notary logs: every party's exchange, delivery-receipt and dead-letter topics, every major
#: version, and the registry versions (so an auditor evaluates each event against the registry in force where
#: it was logged).
NOTARISED_TOPICS: Final = r"^xchg\..*\.(case|alert|delivery|dlq)\.v[0-9]+$|^xchg\.registry\.v1$"
#: Where the notary publishes every checkpoint it signs (value = the note, key = the log origin).
CHECKPOINT_TOPIC: Final = "xchg.notary.checkpoints.v1"

#: Extensions every event signs: routing (partitionkey) and handling (dataclassification) must not be altered.
SIGNED_EXTENSIONS: Final = ("partitionkey", "dataclassification")


# ---- topic names ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TopicName:
    """A parsed exchange topic name."""

    party: str
    kind: TopicKind
    major: int

    def __str__(self) -> str:
        return f"{TOPIC_PREFIX}.{self.party}.{self.kind}.v{self.major}"


def _check_party(party: object) -> str:
    if not isinstance(party, str) or not PARTY_ID.fullmatch(party):
        raise GatewayError(
            Reason.CONFIG_INVALID,
            f"topic: party id {party!r} does not match {PARTY_ID.pattern}",
        )
    return party


def _check_major(major: object) -> int:
    if isinstance(major, bool) or not isinstance(major, int) or not 1 <= major <= 999_999:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"topic: major version must be an integer >= 1, got {major!r}"
        )
    return major


def _checked_name(name: TopicName) -> str:
    text = str(name)
    if len(text) > _MAX_TOPIC_LEN:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"topic: {text[:40]}... is longer than Kafka's {_MAX_TOPIC_LEN} characters"
        )
    return text


def topic_for(party: str, kind: MessageKind, major: int) -> str:
    """``xchg.<party>.<case|alert|delivery>.v<major>``: where ``party`` publishes messages of ``kind``."""
    if kind not in MESSAGE_KINDS:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"topic: kind must be one of {', '.join(MESSAGE_KINDS)}, got {kind!r}"
        )
    return _checked_name(TopicName(_check_party(party), kind, _check_major(major)))


def dlq_topic(party: str) -> str:
    """``xchg.<party>.dlq.v1``: where ``party``'s gateway dead-letters the records it rejected."""
    return _checked_name(TopicName(_check_party(party), "dlq", _DLQ_MAJOR))


def parse_topic(name: str) -> TopicName:
    """Parse an exchange topic name; raises ``GatewayError(CONFIG_INVALID)`` naming what is wrong."""
    if not isinstance(name, str) or not _KAFKA_TOPIC_RE.match(name):
        raise GatewayError(Reason.CONFIG_INVALID, f"topic: {name!r} is not a valid Kafka topic name")
    labels = name.split(".")
    if len(labels) < 4 or labels[0] != TOPIC_PREFIX:
        raise GatewayError(
            Reason.CONFIG_INVALID,
            f"topic: {name!r} is not an exchange topic "
            f"({TOPIC_PREFIX}.<party>.<case|alert|delivery|dlq>.v<major>)",
        )
    version = _VERSION_RE.match(labels[-1])
    if version is None:
        raise GatewayError(Reason.CONFIG_INVALID, f"topic: {name!r} does not end in .v<major>")
    kind = labels[-2]
    if kind not in _TOPIC_KINDS:
        raise GatewayError(
            Reason.CONFIG_INVALID, f"topic: {name!r} has kind {kind!r}; expected case, alert, delivery or dlq"
        )
    party = ".".join(labels[1:-2])
    _check_party(party)
    major = int(version.group(1))
    if kind == "dlq" and major != _DLQ_MAJOR:
        raise GatewayError(Reason.CONFIG_INVALID, f"topic: {name!r}: dead-letter topics are v{_DLQ_MAJOR}")
    return TopicName(party, kind, major)


# ---- who publishes and reads what -----------------------------------------------------------------------
def event_topic(source: str, schema: MessageSchema) -> str:
    """The Kafka topic an event of ``schema`` from ``source`` is published to."""
    return topic_for(source, schema.kind, schema.version[0])


_PUBLISH_MEMO: dict[tuple[tuple[str, ...], str], bool] = {}
_MEMO_ENTRIES: Final = 1024


def may_publish(party: Party, event_type: str) -> bool:
    """``party.may_publish(event_type)``, remembered by (publish patterns, type).

    The answer depends on nothing else, and fnmatch over a party's patterns costs microseconds on every
    event signed or verified. Bounded: the memo is emptied when it reaches 1,024 pairs.
    """
    key = (party.publish, event_type)
    allowed = _PUBLISH_MEMO.get(key)
    if allowed is None:
        if len(_PUBLISH_MEMO) >= _MEMO_ENTRIES:
            _PUBLISH_MEMO.clear()
        allowed = _PUBLISH_MEMO[key] = party.may_publish(event_type)
    return allowed


def readable_topics(registry: Registry, schemas: SchemaStore, party: str) -> list[str]:
    """Every exchange topic of another party that ``party`` may read, per the registry."""
    me = registry.party(party)
    if me is None:
        return []
    majors = {
        kind: sorted({s.version[0] for s in schemas.schemas() if s.kind == kind}) for kind in MESSAGE_KINDS
    }
    topics = []
    for producer in sorted(registry.parties):
        if producer == party:
            continue
        for kind in MESSAGE_KINDS:
            for major in majors[kind]:
                topic = topic_for(producer, kind, major)
                if me.may_read(topic):
                    topics.append(topic)
    return topics


def own_topics(schemas: SchemaStore, party: str) -> list[str]:
    """The topics ``party``'s gateway creates and writes: its case/alert/delivery topic per schema major, its
    DLQ."""
    majors = sorted({(s.kind, s.version[0]) for s in schemas.schemas()})
    return [*(topic_for(party, kind, major) for kind, major in majors), dlq_topic(party)]


def exchange_topics(registry: Registry, schemas: SchemaStore) -> list[str]:
    """Every exchange topic the registry and schemas predict: each party's :func:`own_topics`."""
    return sorted({topic for party in registry.parties for topic in own_topics(schemas, party)})
