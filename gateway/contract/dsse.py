"""Verifiable CloudEvents with DSSE (cloudevents/spec, extensions/verifiability.md), DSSE protocol v1.0.2.

The signature covers a 32-byte *verification material*: SHA-256 over the concatenated SHA-256 digests of the
core attributes, the data bytes and the signed extension attributes (names and values), in the spec's order.
That digest is the DSSE payload; the DSSE envelope, base64-encoded, travels in the ``dssematerial``
attribute. This module is pure: no key lookup, no policy (see :mod:`gateway.contract.verify`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from gateway.contract.canonical import canonical_json, loads_if_canonical
from gateway.contract.instants import utc_text
from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason

__all__ = [
    "CORE_ATTRIBUTES",
    "PAYLOAD_TYPE",
    "DsseEnvelope",
    "DsseSignature",
    "check_signed_extensions",
    "normalize_time",
    "pae",
    "verification_material",
]

PAYLOAD_TYPE: Final = "https://cloudevents.io/verifiability/dsse/v0.1"
#: The core context attributes in the order the spec digests them (data comes after ``time``).
CORE_ATTRIBUTES: Final = (
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
)
_NOT_SIGNABLE: Final = frozenset({*CORE_ATTRIBUTES, "dssematerial", "signedextattrs", "data", "data_base64"})
_EMPTY_DIGEST: Final = hashlib.sha256(b"").digest()
_EXTENSION_NAME: Final = re.compile(r"[a-z0-9]{1,20}")
_DIGITS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_STANDARD: Final = _DIGITS + b"+/"  # base64 alphabets (RFC 4648 sections 4 and 5)
_URLSAFE: Final = _DIGITS + b"-_"
# Memo sizes for the pure helpers below (hot path: several calls per event). Values longer than
# _MEMO_MAX_LENGTH are computed without being remembered, so the memos stay small (< 1 MiB) whatever comes.
_MEMO_ENTRIES: Final = 1024
_MEMO_MAX_LENGTH: Final = 256


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``."""
    encoded_type = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(encoded_type), encoded_type, len(payload), payload)


def normalize_time(value: str) -> str:
    """RFC 3339 timestamp -> the same instant in UTC with a ``Z`` suffix.

    Fractional seconds are kept exactly as written (digits are not rounded or trimmed), so a producer that
    writes whole seconds, as this gateway does, is reproduced by any implementation. Text that is not RFC
    3339 with an offset is ``ce.invalid-attribute``; an instant with no UTC form in years 0001-9999 (e.g.
    ``0001-01-01T00:00:00+01:00``) is ``time.out-of-range`` (:mod:`gateway.contract.instants`, which also
    memoises: this is called several times per event).
    """
    return utc_text(value)


@functools.lru_cache(maxsize=_MEMO_ENTRIES)
def _text_digest_memo(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def _text_digest(value: str) -> bytes:
    """SHA-256 of a string's UTF-8 bytes; short values (attribute names, source, type, schema, time, subject:
    the same few strings event after event) come from a memo."""
    if len(value) <= _MEMO_MAX_LENGTH:
        return _text_digest_memo(value)
    return hashlib.sha256(value.encode("utf-8")).digest()


def check_signed_extensions(value: str | None) -> tuple[str, ...]:
    """Parse ``signedextattrs`` and enforce the spec's constraints (no repeats, no core attributes, ...)."""
    if not value:
        return ()
    names = tuple(value.split(","))
    if len(set(names)) != len(names):
        raise GatewayError(Reason.SIG_EXTATTRS_INVALID, "signedextattrs repeats a name")
    for name in names:
        if name in _NOT_SIGNABLE:
            raise GatewayError(Reason.SIG_EXTATTRS_INVALID, f"signedextattrs may not name {name!r}")
        if not _EXTENSION_NAME.fullmatch(name):
            raise GatewayError(Reason.SIG_EXTATTRS_INVALID, "signedextattrs holds an invalid attribute name")
    return names


def verification_material(
    attributes: Mapping[str, str], data: bytes, signed_extensions: Sequence[str]
) -> bytes:
    """The 32-byte digest the DSSE signature covers (spec, "Signature", steps 4-5).

    ``attributes`` maps CloudEvents attribute names to their string values; an absent attribute contributes
    the digest of the empty byte string. A signed extension that is absent contributes its name and the
    digest of the empty value, so removing it changes the material.
    """
    sha256 = hashlib.sha256
    digest = _text_digest
    parts: list[bytes] = []
    append = parts.append
    for name in CORE_ATTRIBUTES:
        value = attributes.get(name)
        if value is None:
            append(_EMPTY_DIGEST)
        elif name == "time":
            append(digest(normalize_time(value)))
        elif name == "id":  # unique per event: not worth remembering
            append(sha256(value.encode("utf-8")).digest())
        else:
            append(digest(value))
    append(sha256(data).digest())
    for name in signed_extensions:
        append(digest(name))
        append(digest(attributes.get(name, "")))
    return sha256(b"".join(parts)).digest()


@dataclass(frozen=True, slots=True)
class DsseSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class DsseEnvelope:
    """A parsed DSSE JSON envelope (``payload`` and ``sig`` already base64-decoded)."""

    payload_type: str
    payload: bytes
    signatures: tuple[DsseSignature, ...]

    @classmethod
    def from_b64(cls, dssematerial: str) -> DsseEnvelope:
        """Decode the ``dssematerial`` attribute. Every failure is ``sig.malformed``."""
        return cls.from_json(_b64decode(dssematerial, "dssematerial"))

    @classmethod
    def from_json(cls, raw: bytes, *, require_signature: bool = True) -> DsseEnvelope:
        """Parse a DSSE JSON envelope (strict JSON, nested at most 4 deep). Every failure is
        ``sig.malformed``; callers outside the event contract (signed registry versions, key requests)
        convert it to their own reason. ``require_signature=False`` admits an envelope with no signature
        yet (a registry draft circulating for signatures)."""
        # Fast path: this gateway writes the envelope as canonical JSON (to_b64), and canonical bytes parse
        # to the same value with orjson as with the strict parser. Anything else takes the strict parser.
        envelope = loads_if_canonical(raw, max_depth=4)
        try:
            if envelope is None:
                envelope = parse_json(raw, max_depth=4)
        except GatewayError as exc:
            if exc.reason == Reason.SIG_MALFORMED:
                raise
            raise GatewayError(
                Reason.SIG_MALFORMED, f"DSSE envelope is not strict JSON ({exc.reason})"
            ) from exc
        if not isinstance(envelope, dict):
            raise GatewayError(Reason.SIG_MALFORMED, "DSSE envelope is not a JSON object")
        payload_type = envelope.get("payloadType")
        payload = envelope.get("payload")
        signatures = envelope.get("signatures")
        if not isinstance(payload_type, str) or not isinstance(payload, str):
            raise GatewayError(Reason.SIG_MALFORMED, "DSSE envelope lacks payloadType or payload")
        if not isinstance(signatures, list) or (require_signature and not signatures):
            raise GatewayError(Reason.SIG_MALFORMED, "DSSE envelope has no signatures")
        parsed: list[DsseSignature] = []
        for entry in signatures:
            if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
                raise GatewayError(Reason.SIG_MALFORMED, "DSSE signature entry lacks sig")
            keyid = entry.get("keyid", "")
            if not isinstance(keyid, str):
                raise GatewayError(Reason.SIG_MALFORMED, "DSSE keyid is not a string")
            parsed.append(DsseSignature(keyid, _b64decode(entry["sig"], "sig")))
        return cls(payload_type, _b64decode(payload, "payload"), tuple(parsed))

    def to_b64(self) -> str:
        """Serialise as JCS JSON, then standard base64 (the ``dssematerial`` value)."""
        return base64.b64encode(self.to_json()).decode("ascii")

    def to_json(self) -> bytes:
        """The envelope as RFC 8785 (JCS) JSON bytes."""
        body = {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in self.signatures
            ],
        }
        # Every key is ASCII and every value a string: orjson's sorted output is JCS
        # (gateway.contract.canonical); a string orjson cannot encode (a lone surrogate in keyid) goes to the
        # reference implementation.
        try:
            return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            return canonical_json(body)

    def signed_message(self) -> bytes:
        return pae(self.payload_type, self.payload)


def _b64decode(value: str, what: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows either), padding required, nothing else tolerated."""
    try:
        text = value.encode("ascii")
        if b"-" in text or b"_" in text:
            return base64.urlsafe_b64decode(_strict(text, urlsafe=True))
        # what base64.b64decode(validate=True) does, without its argument conversion
        return binascii.a2b_base64(_strict(text, urlsafe=False), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise GatewayError(Reason.SIG_MALFORMED, f"{what} is not valid base64") from exc


def _strict(text: bytes, *, urlsafe: bool) -> bytes:
    """``text`` if it is ``[alphabet]*={0,2}`` with a length that is a multiple of 4, else ValueError.

    Same test as the regular expression, done with ``bytes.translate`` (C speed on the ~400-byte
    ``dssematerial``): strip the padding, then nothing may be left once the alphabet is deleted.
    """
    data = text.rstrip(b"=")
    if len(text) % 4 or len(text) - len(data) > 2 or data.translate(None, _URLSAFE if urlsafe else _STANDARD):
        raise ValueError("not canonical base64")
    return text
