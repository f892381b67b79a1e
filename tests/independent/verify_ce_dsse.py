"""Independent verifier for "Verifiable CloudEvents with DSSE" (structured-mode JSON CloudEvents).

Written from the specifications alone, without importing anything from ``gateway``, so that a test can check
that events produced by the gateway verify with a second implementation:

- CloudEvents extension "Verifiable CloudEvents with DSSE", ``cloudevents/spec``
  ``cloudevents/extensions/verifiability.md`` (read at commit 0dcb92309cf73ae6c529e5ce10dc4f3d2e2bf6d1),
  section "Verification" / "Protocol", steps 1-11; the verification material is built by the signing
  protocol's steps 4-5.
- DSSE v1.0.2 ``protocol.md`` (PAE, verification) and ``envelope.md`` (JSON envelope).
- CloudEvents 1.0.2 core spec (attribute naming, type system) and JSON event format (``data`` /
  ``data_base64``).

Only the standard library, ``cryptography`` (Ed25519, ECDSA P-256) and ``rfc8785`` (JCS) are used.

Data bytes (the spec's ``SHA256(event.data)`` does not say which bytes ``event.data`` are for a JSON
value; this is our documented profile, see docs/VECTORS.md):

- ``data_base64`` present: the base64-decoded bytes (CloudEvents JSON format, binary data);
- ``data`` present and ``datacontenttype`` absent, ``application/json`` or ``*/*+json``: the RFC 8785 (JCS)
  canonical UTF-8 form of the JSON value. This is the gateway's rule; it is *not* what produced the spec's
  own JSON test vectors, which hash the raw JSON text of the member (see ``data_rule="raw"``);
- ``data`` present with another content type: the value must be a JSON string; its UTF-8 bytes
  (CloudEvents JSON format, non-JSON data carried as a string);
- neither present: the empty byte sequence.

``data_rule="raw"`` instead hashes the exact bytes of the ``data`` member's value as they appear in the
event text, starting right after the ``:`` (leading whitespace included) and ending with the value's last
character. That is the rule that reproduces the spec's JSON test vectors (cases 1, 3, 4 against the spec's
older 2-space indented text, 6a, 6b, 7 against the current text); it exists for the vector tests only.

Choices where the spec is silent (each fails closed, i.e. the event is discarded):

- the event JSON must not contain duplicate member names (two parsers could see two different events) or
  NaN/Infinity;
- a signature without ``keyid``, or with a ``keyid`` not in the acceptable list, is skipped (step 5.1);
  at least one remaining signature must verify (DSSE threshold t = 1);
- ``time`` is normalised to UTC with a ``Z`` suffix; fractional seconds are kept exactly as written (the
  spec notes that only second precision is reliable; producers should write whole seconds);
- a signed extension attribute that is absent from the event is an error (step 9);
- extension attribute values that are JSON booleans or integers are digested in their CloudEvents
  canonical string form (``true``/``false``, decimal); other non-string values are an error.

CLI::

    python tests/independent/verify_ce_dsse.py EVENT.json --key KID ALG PUBKEY [--key ...]
    python tests/independent/verify_ce_dsse.py - --keys keys.json < EVENT.json

``ALG`` is ``Ed25519`` (32-byte raw public key) or ``ECDSA-P256-SHA256`` (SEC1 point, normally the 65-byte
uncompressed form); ``PUBKEY`` is standard or URL-safe base64, or hex prefixed with ``hex:``. ``keys.json``
is ``{"KID": {"alg": ALG, "public_key": PUBKEY}, ...}``. ``--data-rule raw`` selects the raw-text rule,
``--print-event`` prints the verified event (step 11). Exit status: 0 verified, 1 rejected (the failing step
is printed), 2 usage or input error.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

__all__ = [
    "ALG_ECDSA_P256",
    "ALG_ED25519",
    "PAYLOAD_TYPE",
    "Result",
    "main",
    "pae",
    "raw_member_text",
    "verification_material",
    "verify",
    "verify_event",
]

PAYLOAD_TYPE: Final = "https://cloudevents.io/verifiability/dsse/v0.1"
ALG_ED25519: Final = "Ed25519"
ALG_ECDSA_P256: Final = "ECDSA-P256-SHA256"

DataRule = Literal["jcs", "raw"]

#: CloudEvents core context attributes, in the order of the signing protocol's steps 4.1-4.8.
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
#: CloudEvents 1.0.2: names "MUST consist of lower-case letters ('a' to 'z') or digits ('0' to '9')".
_ATTRIBUTE_NAME: Final = re.compile(r"[a-z0-9]+")
#: RFC 3339 date-time (section 5.6), "T"/"Z" case-insensitive as RFC 3339 allows.
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_STD_B64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL_B64: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")


@dataclass(frozen=True, slots=True)
class Result:
    """Outcome of :func:`verify_event`.

    ``step`` is the number of the spec's verification step that discarded the event (0: the input is not a
    structured-mode JSON CloudEvent), ``None`` when verified. ``event`` is the step-11 verified event: the
    context attributes, the data and exactly the signed extension attributes.
    """

    verified: bool
    step: int | None
    reason: str
    event: dict[str, Any] | None = None


class _Discard(Exception):
    """The event MUST be discarded at ``step``."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


# ------------------------------------------------------------------------------------------ building blocks


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 PAE: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN = ASCII decimal byte length."""
    type_bytes = payload_type.encode("utf-8")
    return b"".join(
        [
            b"DSSEv1 ",
            str(len(type_bytes)).encode("ascii"),
            b" ",
            type_bytes,
            b" ",
            str(len(body)).encode("ascii"),
            b" ",
            body,
        ]
    )


def _b64decode(text: str) -> bytes:
    """RFC 4648 base64: standard (section 4) or URL-safe (section 5) alphabet, padding required.

    DSSE: "Either standard or URL-safe base64 encodings are allowed ... verifiers MUST accept either."
    Whitespace, mixed alphabets and missing padding are rejected.
    """
    if len(text) % 4:
        raise ValueError("base64 length is not a multiple of 4")
    if _STD_B64.fullmatch(text):
        return base64.b64decode(text, validate=True)
    if _URL_B64.fullmatch(text):
        return base64.urlsafe_b64decode(text)
    raise ValueError("not base64")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _normalize_time(value: str) -> str:
    """RFC 3339 timestamp -> the same instant as RFC 3339 in UTC ("Zulu"), fraction kept as written."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError("time is not an RFC 3339 date-time")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    instant = datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}{offset}")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (fraction or "") + "Z"


def _attribute_string(name: str, value: object) -> str:
    """The string a context attribute is digested as (CloudEvents type system, canonical string encoding)."""
    if isinstance(value, str):
        return value
    if name not in CORE_ATTRIBUTES:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
    raise ValueError(f"attribute {name!r} has no CloudEvents string form")


def verification_material(
    attributes: Mapping[str, str], data: bytes, signed_extensions: Sequence[str]
) -> bytes:
    """Signing protocol steps 4-5: the 32-byte VERIFICATION_MATERIAL.

    ``attributes`` holds the attribute values as strings (absent attributes are missing); every signed
    extension must be present in ``attributes``.
    """
    sequence = bytearray()  # step 4: "create an empty byte sequence"
    for name in CORE_ATTRIBUTES:  # steps 4.1-4.8
        value = attributes.get(name)
        if value is None:
            # "if the attribute is not set, use the digest of the empty byte sequence"
            sequence += _sha256(b"")
        elif name == "time":
            sequence += _sha256(_normalize_time(value).encode("utf-8"))  # 4.8: RFC 3339 Zulu
        else:
            sequence += _sha256(value.encode("utf-8"))  # 4.1-4.7: SHA256(UTF8(value))
    sequence += _sha256(data)  # 4.9: SHA256(event.data)
    for name in signed_extensions:  # 4.10: in the given order
        sequence += _sha256(name.encode("utf-8"))  # 4.10.1: digest of the name
        sequence += _sha256(attributes[name].encode("utf-8"))  # 4.10.2: digest of the value
    return _sha256(bytes(sequence))  # step 5


# --------------------------------------------------------------------------------------------- keys


def _verify_signature(alg: str, public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Verify one signature; never raises for a bad signature or key."""
    try:
        if alg == ALG_ED25519:
            if len(public_key) != 32 or len(signature) != 64:
                return False
            ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
            return True
        if alg == ALG_ECDSA_P256:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
            for der in _ecdsa_der_candidates(signature):
                try:
                    key.verify(der, message, ec.ECDSA(hashes.SHA256()))
                except InvalidSignature:
                    continue
                return True
            return False
    except (InvalidSignature, ValueError):
        return False
    return False  # unknown algorithm: no key of it is acceptable


def _ecdsa_der_candidates(signature: bytes) -> list[bytes]:
    """ECDSA signature encodings we accept: raw r || s (2 x 32 bytes, as the spec's vectors) or strict DER."""
    candidates: list[bytes] = []
    if len(signature) == 64:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if r and s:
            candidates.append(encode_dss_signature(r, s))
    try:
        r, s = decode_dss_signature(signature)
    except ValueError:
        return candidates
    if encode_dss_signature(r, s) == signature:  # DER, not merely BER
        candidates.append(signature)
    return candidates


# --------------------------------------------------------------------------------------------- event parsing


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member name")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _strict_json(text: str | bytes) -> Any:
    return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def raw_member_text(event_text: str, member: str) -> str:
    """Exact text of a top-level member's value, from just after its ':' to the value's last character."""
    decoder = json.JSONDecoder()
    whitespace = " \t\n\r"
    index = 0
    while event_text[index] in whitespace:
        index += 1
    if event_text[index] != "{":
        raise ValueError("not a JSON object")
    index += 1
    while True:
        while event_text[index] in whitespace:
            index += 1
        if event_text[index] == "}":
            raise ValueError(f"no member {member!r}")
        name, index = json.decoder.scanstring(event_text, index + 1)  # type: ignore[attr-defined]
        while event_text[index] in whitespace:
            index += 1
        if event_text[index] != ":":
            raise ValueError("expected ':'")
        value_start = index + 1
        index = value_start
        while event_text[index] in whitespace:
            index += 1
        _, index = decoder.raw_decode(event_text, index)
        if name == member:
            return event_text[value_start:index]
        while event_text[index] in whitespace:
            index += 1
        if event_text[index] == ",":
            index += 1


def _is_json_content_type(content_type: str | None) -> bool:
    if content_type is None:
        return True  # CloudEvents JSON format: absent datacontenttype means application/json
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _data_bytes(event: Mapping[str, Any], event_text: str, data_rule: DataRule) -> bytes:
    """The bytes the spec's ``SHA256(event.data)`` covers (module docstring: our profile)."""
    if "data_base64" in event:
        if "data" in event:
            raise ValueError("event has both data and data_base64")
        encoded = event["data_base64"]
        if not isinstance(encoded, str):
            raise ValueError("data_base64 is not a string")
        return _b64decode(encoded)
    if "data" not in event:
        return b""
    if data_rule == "raw":
        try:
            return raw_member_text(event_text, "data").encode("utf-8")
        except IndexError as exc:
            raise ValueError("data member text not found") from exc
    value = event["data"]
    content_type = event.get("datacontenttype")
    if content_type is not None and not isinstance(content_type, str):
        raise ValueError("datacontenttype is not a string")
    if _is_json_content_type(content_type):
        try:
            return bytes(rfc8785.dumps(value))  # our profile: RFC 8785 JCS of the JSON value
        except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
            raise ValueError(f"data has no RFC 8785 form: {type(exc).__name__}") from exc
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError("non-JSON datacontenttype but data is not a string")


# --------------------------------------------------------------------------------------------- the protocol


def verify_event(
    event_json: bytes | str,
    public_keys: Mapping[str, tuple[str, bytes]],
    *,
    data_rule: DataRule = "jcs",
) -> Result:
    """Run the spec's verification protocol (steps 1-11) on a structured-mode JSON CloudEvent.

    ``public_keys`` maps each acceptable key id to ``(alg, raw public key bytes)``.
    """
    try:
        return _verify(event_json, public_keys, data_rule)
    except _Discard as discard:
        return Result(False, discard.step, discard.reason)


def verify(
    event_json_bytes: bytes | str,
    public_keys: Mapping[str, tuple[str, bytes]],
    *,
    data_rule: DataRule = "jcs",
) -> bool:
    """True when the event verifies (see :func:`verify_event`)."""
    return verify_event(event_json_bytes, public_keys, data_rule=data_rule).verified


def _verify(
    event_json: bytes | str, public_keys: Mapping[str, tuple[str, bytes]], data_rule: DataRule
) -> Result:
    # The event itself (not a numbered step): a structured-mode JSON CloudEvent, i.e. one JSON object.
    try:
        event_text = event_json.decode("utf-8") if isinstance(event_json, bytes) else event_json
        event = _strict_json(event_text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Discard(0, f"event is not strict JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise _Discard(0, "event is not a JSON object")

    # Step 1: obtain list of acceptable key ids for verification.
    acceptable = dict(public_keys)
    if not acceptable:
        raise _Discard(1, "no acceptable keys")

    # Step 2: read the event's dssematerial extension attribute.
    material = event.get("dssematerial")
    # 2.1: if it is not present or empty, the event was not signed and MUST be discarded.
    if material is None or material == "":
        raise _Discard(2, "dssematerial is not present or empty")

    # Step 3: decode the dssematerial as Base64 per RFC 4648.
    # 3.1: if decoding failed, the verification material is corrupted and the event MUST be discarded.
    if not isinstance(material, str):
        raise _Discard(3, "dssematerial is not a string")
    try:
        envelope_bytes = _b64decode(material)
    except (ValueError, binascii.Error) as exc:
        raise _Discard(3, "dssematerial is not base64") from exc

    # Step 4: parse the result into a JSON DSSE envelope (envelope.md: payload, payloadType, signatures[]).
    # 4.1: if parsing fails, the verification material is corrupted and the event MUST be discarded.
    try:
        envelope = _strict_json(envelope_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Discard(4, "DSSE envelope is not JSON") from exc
    if not isinstance(envelope, dict):
        raise _Discard(4, "DSSE envelope is not a JSON object")
    payload_b64 = envelope.get("payload")
    payload_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(payload_b64, str) or not isinstance(payload_type, str):
        raise _Discard(4, "DSSE envelope lacks payload or payloadType")
    if not isinstance(signatures, list) or not signatures:
        raise _Discard(4, "DSSE envelope has no signatures")
    entries: list[tuple[str | None, str]] = []
    for entry in signatures:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
            raise _Discard(4, "DSSE signature entry lacks sig")
        keyid = entry.get("keyid")
        if keyid is not None and not isinstance(keyid, str):
            raise _Discard(4, "DSSE keyid is not a string")
        entries.append((keyid, entry["sig"]))

    # Step 5: follow the DSSE verification protocol.
    # DSSE: "Receive and decode SERIALIZED_BODY, PAYLOAD_TYPE, SIGNATURE, and KEYID ... Reject if decoding
    # fails."
    try:
        serialized_body = _b64decode(payload_b64)
    except (ValueError, binascii.Error) as exc:
        raise _Discard(5, "DSSE payload is not base64") from exc
    message = pae(payload_type, serialized_body)  # PAE(UTF8(PAYLOAD_TYPE), SERIALIZED_BODY)
    accepted: set[str] = set()
    for keyid, sig_b64 in entries:
        # 5.1: filter signatures by keyid from the list of acceptable keys from step 1.
        if keyid is None or keyid not in acceptable:
            continue
        try:
            signature = _b64decode(sig_b64)
        except (ValueError, binascii.Error):
            continue  # DSSE multi-signature: a signature that does not verify is skipped
        alg, public_key = acceptable[keyid]
        if _verify_signature(alg, public_key, signature, message):
            accepted.add(keyid)
    # 5.2: if verification fails, the event MUST be discarded (threshold: one accepted key).
    if not accepted:
        raise _Discard(5, "no signature from an acceptable key verifies")

    # Step 6: read the envelope's payloadType value.
    # 6.1: if it is not equal to the v0.1 type, the payload is unknown and the event MUST be discarded.
    if payload_type != PAYLOAD_TYPE:
        raise _Discard(6, "unknown payloadType")

    # Step 7: read the envelope's payload and Base64 decode it (done in step 5: SERIALIZED_BODY).
    # 7.1: if the result is not a sequence of length 32, the payload is corrupted; discard.
    if len(serialized_body) != 32:
        raise _Discard(7, f"payload is {len(serialized_body)} bytes, not 32")

    # Step 8: read the event's signedextattrs extension attribute.
    signed_value = event.get("signedextattrs")
    signed_extensions: list[str]
    if signed_value is None or signed_value == "":
        signed_extensions = []  # 8.1: not present or empty -> the list is empty
    elif not isinstance(signed_value, str):
        raise _Discard(8, "signedextattrs is not a string")
    else:
        signed_extensions = signed_value.split(",")  # 8.2: a comma separated string of names
        # 8.3: validate the constraints of the signedextattrs definition; any violation -> discard.
        for name in signed_extensions:
            # "MUST be a comma-separated string of extension attribute names"
            if not _ATTRIBUTE_NAME.fullmatch(name):
                raise _Discard(8, "signedextattrs holds something that is not an attribute name")
            if name in CORE_ATTRIBUTES:  # MUST NOT include core context attributes
                raise _Discard(8, f"signedextattrs names core attribute {name!r}")
            if name in ("dssematerial", "signedextattrs"):  # MUST NOT include dssematerial / itself
                raise _Discard(8, f"signedextattrs names {name!r}")
            if name == "data":  # the JSON format reserves "data": it is the payload, not an attribute
                raise _Discard(8, "signedextattrs names 'data'")
        if len(set(signed_extensions)) != len(signed_extensions):  # MUST NOT contain repetitions
            raise _Discard(8, "signedextattrs repeats a name")

    # Step 9: create verification material from the event according to the signing protocol.
    attributes: dict[str, str] = {}
    try:
        for name in (*CORE_ATTRIBUTES, *signed_extensions):
            if name in event:
                attributes[name] = _attribute_string(name, event[name])
            elif name in signed_extensions:
                raise ValueError(f"signed extension attribute {name!r} is absent")
        data = _data_bytes(event, event_text, data_rule)
        computed = verification_material(attributes, data, signed_extensions)
    except ValueError as exc:
        raise _Discard(9, f"cannot build verification material: {exc}") from exc

    # Step 10: compare the newly created verification material to that in the envelope.
    # 10.1: if the values are not equal, the event has been modified in transit and MUST be discarded.
    if not hmac.compare_digest(computed, serialized_body):
        raise _Discard(10, "verification material differs: the event was modified or signed differently")

    # Step 11: the event is returned as verified: context attributes, data and exactly the signed extensions.
    verified = {name: event[name] for name in (*CORE_ATTRIBUTES, "data", "data_base64") if name in event}
    verified.update({name: event[name] for name in signed_extensions})
    return Result(True, None, f"verified with key(s) {', '.join(sorted(accepted))}", verified)


# --------------------------------------------------------------------------------------------- CLI


def _decode_key_text(text: str) -> bytes:
    if text.startswith("hex:"):
        return bytes.fromhex(text[4:])
    return _b64decode(text)


def _load_keys(arguments: argparse.Namespace) -> dict[str, tuple[str, bytes]]:
    keys: dict[str, tuple[str, bytes]] = {}
    if arguments.keys is not None:
        document = _strict_json(Path(arguments.keys).read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise ValueError("keys file must be a JSON object")
        for kid, entry in document.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("alg"), str):
                raise ValueError(f"key {kid!r}: need alg and public_key")
            public_key = entry.get("public_key")
            if not isinstance(public_key, str):
                raise ValueError(f"key {kid!r}: need alg and public_key")
            keys[kid] = (entry["alg"], _decode_key_text(public_key))
    for kid, alg, text in arguments.key or []:
        keys[kid] = (alg, _decode_key_text(text))
    for kid, (alg, _) in keys.items():
        if alg not in (ALG_ED25519, ALG_ECDSA_P256):
            raise ValueError(f"key {kid!r}: unsupported algorithm {alg!r}")
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="verify_ce_dsse",
        description="Verify a structured-mode JSON CloudEvent signed per 'Verifiable CloudEvents with DSSE'.",
    )
    parser.add_argument("event", help="event file, or - for standard input")
    parser.add_argument(
        "--key",
        nargs=3,
        action="append",
        metavar=("KID", "ALG", "PUBKEY"),
        help=f"acceptable key: ALG is {ALG_ED25519} or {ALG_ECDSA_P256}; PUBKEY base64, or hex:...",
    )
    parser.add_argument("--keys", help='JSON file {"KID": {"alg": ALG, "public_key": PUBKEY}}')
    parser.add_argument("--data-rule", choices=("jcs", "raw"), default="jcs")
    parser.add_argument("--print-event", action="store_true", help="print the verified event as JSON")
    arguments = parser.parse_args(argv)
    try:
        keys = _load_keys(arguments)
        raw = sys.stdin.buffer.read() if arguments.event == "-" else Path(arguments.event).read_bytes()
    except (OSError, ValueError) as exc:
        print(f"verify_ce_dsse: {exc}", file=sys.stderr)
        return 2
    result = verify_event(raw, keys, data_rule=arguments.data_rule)
    if not result.verified:
        print(f"REJECTED at step {result.step}: {result.reason}")
        return 1
    print(f"VERIFIED: {result.reason}")
    if arguments.print_event:
        print(json.dumps(result.event, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
