"""The CloudEvents 1.0 envelope, parsed at the edge and frozen.

An :class:`Envelope` is only built by its ``from_…`` constructors, which check everything about the shape of
an event (attributes present, well-formed, data canonical). Nothing downstream re-checks raw dicts or headers.
Two codecs are lossless inverses of each other:

* structured JSON (HTTP, files): one JSON object, ``data`` as a JSON value;
* Kafka binary mode: ``ce_<attribute>`` headers, ``content-type`` for ``datacontenttype``, value = the data
  bytes, record key = the ``partitionkey`` extension.

Profile (what this gateway accepts, stricter than CloudEvents itself): ``datacontenttype`` is
``application/json`` (and present); the data bytes are the RFC 8785 (JCS) form of ``data``, so the
binary-mode value must already be canonical; attribute values are strings; ``time``, ``subject``,
``dataschema``, ``partitionkey`` and ``dataclassification`` are required.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import orjson

from gateway._json import DEFAULT_MAX_DEPTH, parse_json
from gateway.canonical import canonical_json, parse_canonical
from gateway.dsse import CORE_ATTRIBUTES, normalize_time
from gateway.errors import GatewayError, Reason

__all__ = [
    "CLASSIFICATIONS",
    "CONTENT_TYPE",
    "DEFAULT_LIMITS",
    "Envelope",
    "KafkaRecord",
    "Limits",
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
_MAX_ATTRIBUTE_LENGTH: Final = 8192  # dssematerial with a few signatures stays far below this
_HEADER_PREFIX: Final = "ce_"


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
        extensions = {k: v for k, v in attributes.items() if k not in CORE_ATTRIBUTES}
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
        header_list = list(headers)
        size = len(value or b"") + sum(len(k) + len(v or b"") for k, v in header_list) + len(key or b"")
        _check_size(size, limits)
        attributes: dict[str, object] = {}
        for name, raw_value in header_list:
            if name == "content-type":
                attr = "datacontenttype"
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
        parse_canonical(value, max_depth=limits.max_depth)
        envelope = cls.from_attributes(attributes, bytes(value))
        if key is not None and key.decode("utf-8", "replace") != envelope.partitionkey:
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "record key differs from partitionkey")
        return envelope

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
            (("content-type" if name == "datacontenttype" else _HEADER_PREFIX + name), value.encode("utf-8"))
            for name, value in self.attributes().items()
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

    def only_extensions(self, names: Sequence[str]) -> Envelope:
        """A copy keeping only the named extensions (verified events carry signed extensions only)."""
        kept = {k: v for k, v in self.extensions.items() if k in names}
        return replace(self, extensions=MappingProxyType(kept))


def _check_size(size: int, limits: Limits) -> None:
    if size > limits.max_bytes:
        raise GatewayError(Reason.SIZE_EXCEEDED, f"{size} bytes exceeds the limit of {limits.max_bytes}")


def _check_attributes(attributes: Mapping[str, object]) -> None:
    for name in _REQUIRED:
        if name not in attributes:
            raise GatewayError(Reason.CE_MISSING_ATTRIBUTE, f"{name} is missing")
    for name, value in attributes.items():
        if name not in CORE_ATTRIBUTES and not _EXTENSION_NAME.fullmatch(name):
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, "an attribute name is not [a-z0-9]{1,20}")
        if not isinstance(value, str):
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} must be a string")
        if not value:
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} must not be empty")
        if len(value) > _MAX_ATTRIBUTE_LENGTH:
            raise GatewayError(Reason.CE_INVALID_ATTRIBUTE, f"{name} is longer than {_MAX_ATTRIBUTE_LENGTH}")
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
