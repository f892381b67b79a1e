"""The audit log's entry format: one *leaf* per Kafka record of an exchange or dead-letter topic.

Why this shape: an auditor must be able to prove what was exchanged, by whom and when, and locate any
deletion, reordering or rewrite, without the log ever holding victim data. So a leaf holds

* where the record is: topic, partition, offset, the Kafka record timestamp (and its type);
* what it is, as digests: SHA-256 of the data bytes (the record value) and of the whole record (key,
  headers, value), plus the CloudEvents ``id``, ``source``, ``type``, ``time``, ``dataschema`` and the
  ``dssematerial`` signature exactly as they appear in the record headers;
* the notary's verdict: ``accepted`` (with the signing key id) or ``rejected`` with the reason code that
  :class:`gateway.contract.verify.EventVerifier` gives *without any sealing key* (the notary opens nothing)
  and with the record timestamp as "now", so the verdict is a pure function of the record, the registry and
  the schemas and an auditor recomputes it bit for bit;
* for dead-lettered records, the gateway's reason headers (``xchg-reason``, origin topic/partition/offset,
  who and when; never the free-text ``xchg-detail``);
* for records of the registry topic (:func:`leaf_for_registry_record`): the version's digest and issue time
  and the chain's verdict on it, so the log says which registry was in force from which entry on.

Never the data bytes, the key (the case id) or any sealed block. The data digest cannot be reversed into
content: referrals carry HPKE ciphertext with fresh randomness, and alerts hold no victim identifiers.

Encoding: the RFC 8785 (JCS) canonical JSON of one object with exactly the members listed in
``docs/AUDIT.md`` (section 10), all always present (``null`` when absent), so a leaf has one spelling and
anyone can recompute it from the record. Header-derived strings are bounded (:data:`MAX_ATTRIBUTE_CHARS`,
:data:`MAX_DSSE_CHARS`; longer or undecodable values become ``null``, the record digest still binds them),
which keeps every leaf far below the log's 65,535-byte entry limit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import orjson

from gateway.audit.layout import MAX_ENTRY_SIZE
from gateway.contract.canonical import canonical_json
from gateway.contract.policy import parse_topic
from gateway.contract.receipt import record_digest
from gateway.contract.registry import utc_text_of
from gateway.contract.registry_chain import Outcome
from gateway.contract.registry_version import FORMAT as REGISTRY_FORMAT
from gateway.contract.registry_version import PAYLOAD_TYPE as REGISTRY_PAYLOAD_TYPE
from gateway.contract.verify import Accepted, EventVerifier
from gateway.errors import GatewayError, Reason, Rejected

__all__ = [
    "DEAD_LETTER_HEADERS",
    "LEAF_FORMAT",
    "MAX_ATTRIBUTE_CHARS",
    "MAX_DSSE_CHARS",
    "ConsumedRecord",
    "Leaf",
    "RecordLike",
    "leaf_for_record",
    "leaf_for_registry_record",
    "record_sha256",
]

LEAF_FORMAT: Final = "xchg-audit-leaf/v1"
#: Header-derived strings longer than this (in characters) are logged as ``null``.
MAX_ATTRIBUTE_CHARS: Final = 512
#: ``dssematerial`` is kept only if it is printable ASCII (base64) of at most this many characters.
MAX_DSSE_CHARS: Final = 16384
#: Leaf member -> record header, for the CloudEvents attributes a leaf keeps.
_ATTRIBUTE_HEADERS: Final = {
    "id": "ce_id",
    "source": "ce_source",
    "type": "ce_type",
    "time": "ce_time",
    "dataschema": "ce_dataschema",
}
#: ``dead_letter`` member -> header a gateway adds when it dead-letters a record (``gateway.bus.subscriber``).
DEAD_LETTER_HEADERS: Final = {
    "reason": "xchg-reason",
    "origin_topic": "xchg-origin-topic",
    "origin_partition": "xchg-origin-partition",
    "origin_offset": "xchg-origin-offset",
    "by": "xchg-dead-lettered-by",
    "at": "xchg-dead-lettered-at",
}
_SAFE_INTEGER: Final = 2**53 - 1
#: 9999-12-31T23:59:59.999Z: record timestamps are clamped to [0, this] to serve as "now" (a datetime).
_MAX_TIMESTAMP_MS: Final = 253_402_300_799_999
_HEX64: Final = re.compile("[0-9a-f]{64}")
#: Bytes ``ce_dssematerial`` may hold (printable ASCII, 0x21-0x7E): deleting them must leave nothing.
_PRINTABLE: Final = bytes(range(0x21, 0x7F))


class RecordLike(Protocol):
    """What a leaf is computed from: an ``aiokafka`` ``ConsumerRecord`` or a :class:`ConsumedRecord`."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def timestamp_type(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumedRecord:
    """A Kafka record as consumed (the fields a leaf and a records dump need), independent of aiokafka."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int = 0
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @classmethod
    def of(cls, record: RecordLike) -> ConsumedRecord:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            timestamp_type=record.timestamp_type,
            key=None if record.key is None else bytes(record.key),
            value=None if record.value is None else bytes(record.value),
            headers=tuple((str(k), None if v is None else bytes(v)) for k, v in record.headers or ()),
        )

    def to_json(self) -> dict[str, Any]:
        """One line of a records dump (``docs/AUDIT.md`` section 12): bytes as standard base64."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "timestamp_type": self.timestamp_type,
            "key": _b64(self.key),
            "value": _b64(self.value),
            "headers": [[name, _b64(value)] for name, value in self.headers],
        }

    @classmethod
    def from_json(cls, document: object) -> ConsumedRecord:
        """Parse one records-dump line; raises ``GatewayError(CONFIG_INVALID)`` naming what is wrong."""
        if not isinstance(document, dict):
            raise GatewayError(Reason.CONFIG_INVALID, "records dump: a line is not a JSON object")
        try:
            headers = tuple((_text(n), _unb64(v)) for n, v in document["headers"])
            return cls(
                topic=_text(document["topic"]),
                partition=_integer(document["partition"]),
                offset=_integer(document["offset"]),
                timestamp=_integer(document["timestamp"]),
                timestamp_type=_integer(document.get("timestamp_type", 0)),
                key=_unb64(document["key"]),
                value=_unb64(document["value"]),
                headers=headers,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GatewayError(Reason.CONFIG_INVALID, f"records dump: malformed record ({exc})") from exc


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _unb64(value: object) -> bytes | None:
    """Strict standard base64: what ``base64.b64decode(value, validate=True)`` does on Python 3.11+,
    without its per-call overhead (a dump line holds a dozen of these)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("bytes must be base64 strings or null")
    return binascii.a2b_base64(value, strict_mode=True)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def record_sha256(record: RecordLike) -> str:
    """Hex SHA-256 binding a whole record: ``JCS({"headers": [[name, b64|null]...], "key": b64|null,
    "value": b64|null})``, headers in record order. A rewrite of any header, the key or the value shows.
    The same digest a delivery receipt names (:func:`gateway.contract.receipt.record_digest`)."""
    return record_digest(record.key, record.value, record.headers or ())


def _by_name(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, list[bytes | None]]:
    """Every header's values in record order, by name: one pass over the headers per record instead of one
    per leaf member (a leaf reads eleven of them)."""
    values: dict[str, list[bytes | None]] = {}
    for key, value in headers:
        values.setdefault(key, []).append(value)
    return values


def _header(headers: Mapping[str, list[bytes | None]], name: str) -> str | None:
    """The header's text if it occurs exactly once, is UTF-8 and at most MAX_ATTRIBUTE_CHARS long."""
    values = headers.get(name, ())
    if len(values) != 1 or values[0] is None:
        return None
    try:
        text = bytes(values[0]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if 0 < len(text) <= MAX_ATTRIBUTE_CHARS else None


def _dssematerial(headers: Mapping[str, list[bytes | None]]) -> str | None:
    """The header as sent if it occurs once and is 1-16,384 bytes of printable ASCII (checked in C:
    deleting every printable byte must leave nothing)."""
    values = headers.get("ce_dssematerial", ())
    if len(values) != 1 or values[0] is None:
        return None
    raw = bytes(values[0])
    if not 0 < len(raw) <= MAX_DSSE_CHARS or raw.translate(None, _PRINTABLE):
        return None
    return raw.decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class Leaf:
    """One decoded log entry. Build with :func:`leaf_for_record` (notary) or :meth:`decode` (auditor)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    record_sha256: str
    data_sha256: str | None
    id: str | None
    source: str | None
    type: str | None
    time: str | None
    dataschema: str | None
    dssematerial: str | None
    verdict: Literal["accepted", "rejected"]
    reason: str | None
    kid: str | None
    dead_letter: Mapping[str, str | None] | None

    @property
    def position(self) -> tuple[str, int, int]:
        """``(topic, partition, offset)``: the record this leaf stands for."""
        return (self.topic, self.partition, self.offset)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"format": LEAF_FORMAT}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            document[name] = dict(value) if isinstance(value, Mapping) else value
        return document

    def encode(self) -> bytes:
        """The entry bytes: RFC 8785 canonical JSON of :meth:`to_json` (at most 65,535 bytes)."""
        entry = canonical_json(self.to_json())
        if len(entry) > MAX_ENTRY_SIZE:  # unreachable with the bounds above; a guard, not a code path
            raise GatewayError(Reason.SIZE_EXCEEDED, f"leaf of {len(entry)} bytes > {MAX_ENTRY_SIZE}")
        return entry

    @classmethod
    def decode(cls, entry: bytes) -> Leaf:
        """Strictly parse an entry: canonical JSON, exactly the v1 members, each of its type.

        Raises ``GatewayError(LEAF_MALFORMED)``: a leaf that is not byte-for-byte what the notary writes
        cannot have been written by an honest notary.
        """
        try:
            document = orjson.loads(entry)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(Reason.LEAF_MALFORMED, "entry is not JSON") from exc
        if not isinstance(document, dict):
            raise GatewayError(Reason.LEAF_MALFORMED, "entry is not a JSON object")
        if document.get("format") != LEAF_FORMAT:
            raise GatewayError(Reason.LEAF_MALFORMED, f"entry format is not {LEAF_FORMAT}")
        if document.keys() != _MEMBERS:
            extra = sorted(set(document) ^ _MEMBERS)
            raise GatewayError(Reason.LEAF_MALFORMED, f"entry members differ from v1: {', '.join(extra)}")
        try:
            leaf = cls(
                topic=_need(document["topic"], str),
                partition=_count(document["partition"]),
                offset=_count(document["offset"]),
                timestamp=_int(document["timestamp"]),
                timestamp_type=_int(document["timestamp_type"]),
                record_sha256=_digest(document["record_sha256"]),
                data_sha256=None if document["data_sha256"] is None else _digest(document["data_sha256"]),
                id=_maybe(document["id"]),
                source=_maybe(document["source"]),
                type=_maybe(document["type"]),
                time=_maybe(document["time"]),
                dataschema=_maybe(document["dataschema"]),
                dssematerial=_maybe(document["dssematerial"]),
                verdict=_verdict(document["verdict"]),
                reason=_maybe(document["reason"]),
                kid=_maybe(document["kid"]),
                dead_letter=_dead_letter(document["dead_letter"]),
            )
        except (TypeError, ValueError) as exc:
            raise GatewayError(Reason.LEAF_MALFORMED, f"entry member of the wrong type ({exc})") from exc
        if (leaf.verdict == "accepted") != (leaf.reason is None) or (leaf.kid is not None) != (
            leaf.verdict == "accepted"
        ):
            raise GatewayError(Reason.LEAF_MALFORMED, "verdict, reason and kid do not agree")
        if len(entry) > MAX_ENTRY_SIZE:
            raise GatewayError(Reason.LEAF_MALFORMED, f"entry of {len(entry)} bytes > {MAX_ENTRY_SIZE}")
        if _canonical_document(document) != bytes(entry):
            raise GatewayError(Reason.LEAF_MALFORMED, "entry is not RFC 8785 canonical JSON")
        return leaf


#: Leaf member names in declaration order, and the exact member set of an entry.
_FIELD_NAMES: Final = tuple(item.name for item in fields(Leaf))
_MEMBERS: Final = frozenset({"format", *_FIELD_NAMES})


def _canonical_document(document: dict[str, Any]) -> bytes:
    """:func:`canonical_json` of a decoded entry that passed the member checks, which is the canonical form
    of ``leaf.to_json()`` (the same members with the same values: checked, never converted).

    Those checks put it inside the domain where canonical_json's fast path applies (ASCII member names,
    strings, null, integers within +-(2**53-1), one nested object of strings), so the walk that decides
    this is skipped; whatever orjson refuses still goes to the reference implementation.
    """
    try:
        return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # pragma: no cover - orjson.loads yields nothing it cannot dump
        pass
    try:
        return canonical_json(document)
    except GatewayError as exc:
        raise GatewayError(Reason.LEAF_MALFORMED, exc.detail) from exc


def _need(value: object, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}")
    return value


def _int(value: object) -> int:
    number: int = _need(value, int)
    if not -_SAFE_INTEGER <= number <= _SAFE_INTEGER:
        raise ValueError("integer out of range")
    return number


def _count(value: object) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError("negative partition or offset")
    return number


def _maybe(value: object) -> str | None:
    return None if value is None else str(_need(value, str))


def _digest(value: object) -> str:
    text: str = _need(value, str)
    if _HEX64.fullmatch(text) is None:
        raise ValueError("digest is not 64 lowercase hex digits")
    return text


def _verdict(value: object) -> Literal["accepted", "rejected"]:
    if value == "accepted":
        return "accepted"
    if value == "rejected":
        return "rejected"
    raise ValueError("verdict is neither accepted nor rejected")


def _dead_letter(value: object) -> Mapping[str, str | None] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(DEAD_LETTER_HEADERS):
        raise ValueError("dead_letter members differ from v1")
    return {name: _maybe(value[name]) for name in DEAD_LETTER_HEADERS}


def _read_from(record: RecordLike, by_name: Mapping[str, list[bytes | None]]) -> str | None:
    """The topic the event must belong to: the record's own, or for a dead-lettered copy the topic the
    gateway read the original from (its ``xchg-origin-topic`` header; only that gateway writes its DLQ)."""
    try:
        kind = parse_topic(record.topic).kind
    except GatewayError:
        return record.topic  # not an exchange topic: the event cannot belong there
    return _header(by_name, "xchg-origin-topic") if kind == "dlq" else record.topic


def leaf_for_record(record: RecordLike, verifier: EventVerifier | None) -> Leaf:
    """The leaf the notary logs for ``record``: a pure function of the record, registry and schemas.

    ``verifier`` (the registry version in force at this point of the log, and the schemas) must hold no
    sealing keys (the notary opens nothing); None means no registry version was in force yet, and the
    verdict is ``registry.unavailable``. The verdict is computed with the Kafka record timestamp as the
    current time, so re-running it later gives the same answer unless the registry changed what it says
    about that time (a retroactive revocation, which the auditor reports).
    """
    if verifier is not None and (verifier.party is not None or verifier.sealing_keys):
        raise GatewayError(Reason.CONFIG_INVALID, "the notary's verifier must hold no sealing keys")
    headers = tuple(record.headers or ())
    by_name = _by_name(headers)
    now = datetime.fromtimestamp(min(max(record.timestamp, 0), _MAX_TIMESTAMP_MS) / 1000, UTC)
    verdict = (
        verifier.verify_kafka(record.value, headers, record.key, now=now, topic=_read_from(record, by_name))
        if verifier is not None
        else Rejected(Reason.REGISTRY_UNAVAILABLE, "no registry version in force at this point of the log")
    )
    accepted = isinstance(verdict, Accepted)
    dead_letter = {name: _header(by_name, header) for name, header in DEAD_LETTER_HEADERS.items()}
    return Leaf(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        timestamp_type=record.timestamp_type,
        record_sha256=record_sha256(record),
        data_sha256=None if record.value is None else hashlib.sha256(record.value).hexdigest(),
        id=_header(by_name, _ATTRIBUTE_HEADERS["id"]),
        source=_header(by_name, _ATTRIBUTE_HEADERS["source"]),
        type=_header(by_name, _ATTRIBUTE_HEADERS["type"]),
        time=_header(by_name, _ATTRIBUTE_HEADERS["time"]),
        dataschema=_header(by_name, _ATTRIBUTE_HEADERS["dataschema"]),
        dssematerial=_dssematerial(by_name),
        verdict="accepted" if accepted else "rejected",
        reason=None if isinstance(verdict, Accepted) else str(verdict.reason),
        kid=verdict.kid if isinstance(verdict, Accepted) else None,
        dead_letter=dead_letter if any(v is not None for v in dead_letter.values()) else None,
    )


def leaf_for_registry_record(record: RecordLike, outcome: Outcome) -> Leaf:
    """The leaf of a record of the registry topic: what the chain (anchor, then every registry record
    logged before this one) made of it. ``id`` is the version's digest, ``time`` its ``issued_at``,
    ``type`` the registry payload type and ``dataschema`` its format; accepted (applied, or the version
    already in force) with ``kid`` = the maintainers who signed it, comma-separated; else rejected with
    the refusal's reason code. ``source`` and ``dssematerial`` are null: the record digest binds the
    envelope and its signatures."""
    version = outcome.version
    return Leaf(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp,
        timestamp_type=record.timestamp_type,
        record_sha256=record_sha256(record),
        data_sha256=None if record.value is None else hashlib.sha256(record.value).hexdigest(),
        id=None if version is None else version.digest,
        source=None,
        type=REGISTRY_PAYLOAD_TYPE,
        time=None if version is None else utc_text_of(version.issued_at),
        dataschema=REGISTRY_FORMAT,
        dssematerial=None,
        verdict="accepted" if outcome.accepted else "rejected",
        reason=None if outcome.accepted else str(outcome.reason),
        kid=",".join(outcome.signers) if outcome.accepted else None,
        dead_letter=None,
    )
