"""The CloudEvents 1.0 envelope, parsed at the edge and frozen.

An :class:`Envelope` is only built by its ``from_…`` constructors, which check everything about the shape of
an event (attributes present, well-formed, data canonical). Nothing downstream re-checks raw dicts or headers.
Two codecs are lossless inverses of each other:

* structured JSON (HTTP, files): one JSON object, ``data`` as a JSON value;
* Kafka binary mode: ``ce_<attribute>`` headers, ``content-type`` for ``datacontenttype``, value = the data
  bytes, record key = the ``partitionkey`` extension.

Profile (what this gateway accepts, stricter than CloudEvents itself): ``datacontenttype`` is
``application/json`` (and present); the data bytes are the RFC 8785 (JCS) form of ``data``, so the
binary-mode value must already be canonical; attribute values are non-empty strings without control
characters (Unicode category Cc); ``time``, ``subject``, ``dataschema``, ``partitionkey`` and
``dataclassification`` are required; ``time`` has a UTC form (``time.out-of-range`` otherwise); a Kafka
record's key is present and equals ``partitionkey``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import orjson

from gateway.contract.canonical import canonical_json, parse_canonical
from gateway.contract.dsse import CORE_ATTRIBUTES, normalize_time
from gateway.contract.strictjson import DEFAULT_MAX_DEPTH, parse_json
from gateway.errors import GatewayError, Reason

__all__ = [
    "CLASSIFICATIONS",
    "CONTENT_TYPE",
    "DEFAULT_LIMITS",
    "Envelope",
    "KafkaRecord",
    "Limits",
    "kafka_header_name",
]

SPECVERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"
CLASSIFICATIONS: Final = ("public", "internal", "confidential", "restricted")
_REQUIRED: Final = ("id", "source", "specversion", "type")
_PROFILE_REQUIRED: Final = (
    "datacontenttype",
    "time",
    "subject",
    "dataschema",
    "partitionkey",
    "dataclassification",
)
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]{1,20}")
_CORE: Final = frozenset(CORE_ATTRIBUTES)
#: Extension names every event carries; they match _EXTENSION_NAME, so the regex is skipped for them.
_KNOWN_EXTENSIONS: Final = frozenset({"partitionkey", "dataclassification", "signedextattrs", "dssematerial"})
_MAX_ATTRIBUTE_LENGTH: Final = 8192  # dssematerial with a few signatures stays far below this
#: Unicode control characters (category Cc: C0, DEL, C1 such as U+0085 NEXT LINE): never in an attribute. An
#: id or source with a line break splits log lines, CSV exports and HTTP headers of the systems behind us.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEADER_PREFIX: Final = "ce_"
#: Header name -> attribute name for the attributes every event has (others are derived by prefix).
_HEADER_ATTRIBUTES: Final = {
    "content-type": "datacontenttype",
    **{
        _HEADER_PREFIX + name: name
        for name in (*CORE_ATTRIBUTES, *_KNOWN_EXTENSIONS)
        if name != "datacontenttype"
    },
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds applied before any parsing work: total bytes and JSON nesting depth."""

    max_bytes: int = 256 * 1024
    max_depth: int = DEFAULT_MAX_DEPTH


DEFAULT_LIMITS: Final = Limits()


class KafkaRecord(NamedTuple):
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A structurally valid CloudEvent in this gateway's profile. Build with ``from_*`` only."""

    id: str
    source: str
    type: str
    time: str
    subject: str
    dataschema: str
    datacontenttype: str = CONTENT_TYPE
    specversion: str = SPECVERSION
    extensions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    data: bytes
    """The data bytes: RFC 8785 canonical JSON."""

    # ---- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_attributes(cls, attributes: Mapping[str, object], data: bytes) -> Envelope:
        """Build from attribute values and canonical data bytes, checking the profile."""
        _check_attributes(attributes)
        core = {name: attributes[name] for name in CORE_ATTRIBUTES if name in attributes}
        extensions = {k: v for k, v in attributes.items() if k not in _CORE}
        return cls(
            **core,  # type: ignore[arg-type]  # every value was checked to be a str by _check_attributes
            extensions=MappingProxyType(dict(sorted(extensions.items()))),  # type: ignore[arg-type]  # same
            data=data,
        )

    @classmethod
    def from_structured(cls, raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Envelope:
        """Parse a structured-mode JSON CloudEvent (``application/cloudevents+json``)."""
        _check_size(len(raw), limits)
        document = parse_json(raw, max_depth=limits.max_depth)
        if not isinstance(document, dict):
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "a structured event must be a JSON object")
        if "data_base64" in document:
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "data_base64 is not accepted; data must be JSON")
        if "data" not in document:
            raise GatewayError(Reason.CE_MISSING_ATTRIBUTE, "data is missing")
        data = canonical_json(document.pop("data"))
        return cls.from_attributes(document, data)

    @classmethod
    def from_kafka(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
        key: bytes | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Envelope:
        """Parse a Kafka binary-mode record (CloudEvents Kafka protocol binding)."""
        return cls.parse_kafka(value, headers, key, limits=limits)[0]

    @classmethod
    def parse_kafka(
        cls,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
        key: bytes | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> tuple[Envelope, Any]:
        """:meth:`from_kafka`, also returning the data as the JSON value it was parsed into while checking
        that it is canonical (the verifier needs it; :meth:`data_value` would parse the bytes again)."""
        header_list = list(headers)
        size = len(value or b"") + len(key or b"")
        for name, raw_value in header_list:
            size += len(name) + len(raw_value or b"")
        _check_size(size, limits)
        attributes: dict[str, object] = {}
        for name, raw_value in header_list:
            attr = _HEADER_ATTRIBUTES.get(name)
            if attr is not None:
                pass
            elif name.startswith(_HEADER_PREFIX):
                attr = name[len(_HEADER_PREFIX) :]
            else:
                continue  # transport headers (tracing, DLQ reasons) are not part of the event
            if attr in attributes:
                raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"header for {attr!r} appears twice")
            try:
                attributes[attr] = (raw_value or b"").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise GatewayError(Reason.PARSE_UTF8, f"header for {attr!r} is not UTF-8") from exc
        if value is None:
            raise GatewayError(Reason.CE_MISSING_ATTRIBUTE, "record has no value (data)")
        parsed = parse_canonical(value, max_depth=limits.max_depth)
        envelope = cls.from_attributes(attributes, bytes(value))
        if key is None:  # the key routes the case to its partition: it must be the signed partitionkey
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "record has no key (it must equal partitionkey)")
        if key != envelope.partitionkey.encode("utf-8"):
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "record key differs from partitionkey")
        return envelope, parsed

    # ---- codecs -------------------------------------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        """All context attributes (core and extensions) by name, as the DSSE material expects them."""
        attrs = {
            "id": self.id,
            "source": self.source,
            "specversion": self.specversion,
            "type": self.type,
            "datacontenttype": self.datacontenttype,
            "dataschema": self.dataschema,
            "subject": self.subject,
            "time": self.time,
        }
        attrs.update(self.extensions)
        return attrs

    def data_value(self) -> Any:
        """The data as a JSON value (the bytes were checked to be canonical JSON at construction)."""
        return orjson.loads(self.data)

    def to_structured(self) -> bytes:
        """Structured-mode JSON, canonical (RFC 8785) so the same event always has the same bytes."""
        document: dict[str, Any] = dict(self.attributes())
        document["data"] = self.data_value()
        return canonical_json(document)

    def to_kafka(self) -> KafkaRecord:
        headers = [
            (kafka_header_name(name), value.encode("utf-8")) for name, value in self.attributes().items()
        ]
        return KafkaRecord(self.partitionkey.encode("utf-8"), self.data, headers)

    # ---- derived views ------------------------------------------------------------------------------
    @property
    def partitionkey(self) -> str:
        return self.extensions["partitionkey"]

    @property
    def dataclassification(self) -> str:
        return self.extensions["dataclassification"]

    @property
    def dssematerial(self) -> str | None:
        return self.extensions.get("dssematerial")

    @property
    def signedextattrs(self) -> str | None:
        return self.extensions.get("signedextattrs")

    def with_extensions(self, **values: str) -> Envelope:
        """A copy with extensions added or replaced (used when signing)."""
        merged = dict(self.extensions)
        merged.update(values)
        _check_attributes({**self.attributes(), **values})
        return replace(self, extensions=MappingProxyType(dict(sorted(merged.items()))))

    def with_signature(self, signedextattrs: str, dssematerial: str) -> Envelope:
        """A copy with the ``signedextattrs`` and ``dssematerial`` extensions set (used when signing).

        The same outcome as ``with_extensions(signedextattrs=..., dssematerial=...)`` on an envelope built by
        a ``from_*`` constructor, whose other attributes were all checked then (and the profile-wide checks
        do not involve these two): only the two new values are checked, not every attribute again.
        """
        _check_attribute("signedextattrs", signedextattrs)
        _check_attribute("dssematerial", dssematerial)
        merged = dict(self.extensions)
        merged["signedextattrs"] = signedextattrs
        merged["dssematerial"] = dssematerial
        return self._copy(MappingProxyType(dict(sorted(merged.items()))))

    def only_extensions(self, names: Sequence[str]) -> Envelope:
        """A copy keeping only the named extensions (verified events carry signed extensions only)."""
        kept = {k: v for k, v in self.extensions.items() if k in names}
        if len(kept) == len(self.extensions):
            return self  # nothing to drop (the usual case): an equal copy of an immutable object is itself
        return self._copy(MappingProxyType(kept))

    def _copy(self, extensions: Mapping[str, str]) -> Envelope:
        """``dataclasses.replace(self, extensions=...)``, without its per-call field introspection."""
        return Envelope(
            id=self.id,
            source=self.source,
            type=self.type,
            time=self.time,
            subject=self.subject,
            dataschema=self.dataschema,
            datacontenttype=self.datacontenttype,
            specversion=self.specversion,
            extensions=extensions,
            data=self.data,
        )


def kafka_header_name(attribute: str) -> str:
    """The Kafka header carrying a context attribute in binary mode: ``content-type`` or ``ce_<name>``."""
    return "content-type" if attribute == "datacontenttype" else _HEADER_PREFIX + attribute


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise GatewayError(Reason.SIZE_EXCEEDED, f"{size} bytes exceeds the limit of {limits.max_bytes}")


def _check_attributes(attributes: Mapping[str, object]) -> None:
    for name in _REQUIRED:
        if name not in attributes:
            raise GatewayError(Reason.CE_MISSING_ATTRIBUTE, f"{name} is missing")
    for name, value in attributes.items():  # _check_attribute, inlined for the common case: all is well
        if name not in _CORE and name not in _KNOWN_EXTENSIONS and not _EXTENSION_NAME.fullmatch(name):
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "an attribute name is not [a-z0-9]{1,20}")
        if (
            not isinstance(value, str)
            or not value
            or len(value) > _MAX_ATTRIBUTE_LENGTH
            or _CONTROL.search(value) is not None
        ):
            _check_attribute(name, value)  # raises the precise reason
    if attributes["specversion"] != SPECVERSION:
        raise GatewayError(Reason.CE_UNSUPPORTED_SPECVERSION, "specversion must be 1.0")
    for name in _PROFILE_REQUIRED:
        if name not in attributes:
            raise GatewayError(Reason.CE_MISSING_ATTRIBUTE, f"{name} is missing")
    if attributes["datacontenttype"] != CONTENT_TYPE:
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"datacontenttype must be {CONTENT_TYPE}")
    if attributes["dataclassification"] not in CLASSIFICATIONS:
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "dataclassification is not a known level")
    if attributes["partitionkey"] != attributes["subject"]:
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "partitionkey must equal subject")
    normalize_time(str(attributes["time"]))


def _check_attribute(name: str, value: object) -> None:
    """The checks on one attribute: its name (extensions: ``[a-z0-9]{1,20}``), a non-empty string, bounded,
    without control characters."""
    if name not in _CORE and name not in _KNOWN_EXTENSIONS and not _EXTENSION_NAME.fullmatch(name):
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "an attribute name is not [a-z0-9]{1,20}")
    if not isinstance(value, str):
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} must be a string")
    if not value:
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} must not be empty")
    if len(value) > _MAX_ATTRIBUTE_LENGTH:
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} is longer than {_MAX_ATTRIBUTE_LENGTH}")
    if _CONTROL.search(value) is not None:
        raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} contains a control character")
