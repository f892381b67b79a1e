"""The producer side of the contract: payload -> validated, sealed, signed CloudEvent.

:func:`build_event` is the one way an event is made: validate the logical payload against the newest (or the
named) schema version, check the producing party may publish the type, move every ``x-seal`` property into a
sealed block for the named recipients (each must be allowed to read the event's topic), validate the wire
form, then sign per Verifiable CloudEvents with DSSE, with a key the registry says is this party's signing key
and valid at the event time (:func:`check_signing_key`: a revoked or expired key is refused here rather than
by every verifier later). It does no I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.contract.canonical import canonical_json
from gateway.contract.dsse import PAYLOAD_TYPE, DsseEnvelope, DsseSignature, pae, verification_material
from gateway.contract.envelope import CONTENT_TYPE, Envelope
from gateway.contract.formulas import FORMULA_EXTENSION, flag_value, formula_pointers
from gateway.contract.keys import SigningKey
from gateway.contract.lawful import check_lawful_basis
from gateway.contract.policy import SIGNED_EXTENSIONS, event_topic, may_publish
from gateway.contract.registry import Registry
from gateway.contract.schemas import MessageSchema, SchemaStore
from gateway.contract.seal import EventBinding, Recipient, seal
from gateway.errors import GatewayError, Reason

__all__ = ["EventSigner", "build_event", "check_signing_key", "sign_envelope"]

_SIGNED_EXTATTRS: Final = ",".join(SIGNED_EXTENSIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSigner:
    """A party's identity for signing: the party id (= CloudEvents ``source``), key id and private key."""

    party: str
    kid: str
    key: SigningKey


def build_event(
    *,
    signer: EventSigner,
    registry: Registry,
    schemas: SchemaStore,
    event_type: str,
    data: Mapping[str, Any],
    recipients: Sequence[str] = (),
    subject: str | None = None,
    dataschema: str | None = None,
    event_id: str | None = None,
    now: datetime | None = None,
) -> Envelope:
    """Validate, seal and sign ``data`` as a ``event_type`` event from ``signer.party``."""
    schema = schemas.get(dataschema) if dataschema else schemas.latest(event_type)
    if schema.type != event_type:
        raise GatewayError(
            Reason.SCHEMA_TYPE_MISMATCH, f"{schema.id} describes {schema.type}, not {event_type}"
        )
    party = registry.party(signer.party)
    if party is None:
        raise GatewayError(Reason.AUTHZ_UNKNOWN_SOURCE, f"{signer.party!r} is not in the registry")
    if not may_publish(party, event_type):
        raise GatewayError(Reason.AUTHZ_TYPE_NOT_PERMITTED, f"{signer.party} may not publish {event_type}")
    schema.validate(dict(data))
    schema.check_parties(data, signer.party)
    check_lawful_basis(event_type, data)

    instant = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    check_signing_key(registry, signer, instant)
    binding = EventBinding(id=event_id or _uuid4(), source=signer.party, type=event_type)
    if schema.sealed_fields:
        clear = {k: v for k, v in data.items() if k not in schema.sealed_fields}
        secret = {k: v for k, v in data.items() if k in schema.sealed_fields}
    else:
        clear, secret = dict(data), {}
    if secret:
        clear["sealed"] = seal(
            secret, binding, _recipients(registry, schema, signer.party, recipients, instant)
        )
    schema.validate_wire(clear)

    key_value = str(data[schema.partition_key_field])
    if subject is not None and subject != key_value:
        raise GatewayError(
            Reason.SCHEMA_PARTITIONKEY, f"subject differs from the payload's {schema.partition_key_field}"
        )
    attributes = {
        "id": binding.id,
        "source": signer.party,
        "specversion": "1.0",
        "type": event_type,
        "datacontenttype": CONTENT_TYPE,
        "dataschema": schema.id,
        "subject": key_value,
        "time": _zulu(instant),
        "partitionkey": key_value,
        "dataclassification": schema.classification,
    }
    signed: tuple[str, ...] = SIGNED_EXTENSIONS
    # spreadsheet formulas in the clear data are flagged, signed (never the base64 of the sealed block)
    flagged = flag_value(formula_pointers({k: v for k, v in clear.items() if k != "sealed"}))
    if flagged is not None:
        attributes[FORMULA_EXTENSION] = flagged
        signed = (*SIGNED_EXTENSIONS, FORMULA_EXTENSION)
    data_bytes = canonical_json(clear)
    envelope = Envelope.from_attributes(attributes, data_bytes)  # checks every attribute
    # The material covers the core attributes, the data and the signed extensions, not signedextattrs
    # itself: computed from the attributes just checked, it is what envelope.attributes() would give.
    dssematerial = _dssematerial(verification_material(attributes, data_bytes, signed), signer)
    return envelope.with_signature(",".join(signed), dssematerial)


def check_signing_key(registry: Registry, signer: EventSigner, at: datetime) -> None:
    """Refuse to sign with a key every verifier would reject: not in the registry (``key.unknown``),
    another party's or another public key (``key.wrong-party``), not a signing key (``key.wrong-use``), or
    revoked, expired or not yet valid at the event time ``at`` (``key.revoked``, ``key.expired``,
    ``key.not-yet-valid``)."""
    entry = registry.key(signer.kid)
    if entry is None:
        raise GatewayError(Reason.KEY_UNKNOWN, f"signing key {signer.kid!r} is not in the registry")
    if entry.party != signer.party or entry.public_key.raw != signer.key.public_key.raw:
        raise GatewayError(
            Reason.KEY_WRONG_PARTY, f"key {signer.kid!r} in the registry is not this key of {signer.party!r}"
        )
    if entry.use != "sig":
        raise GatewayError(Reason.KEY_WRONG_USE, f"{signer.kid} is not a signing key")
    problem = entry.problem_at(at)
    if problem is not None:
        raise GatewayError(problem, f"signing key {signer.kid} is not valid at the event time")


def sign_envelope(envelope: Envelope, signer: EventSigner) -> Envelope:
    """Add ``signedextattrs`` and ``dssematerial`` (spec "Signature" protocol, steps 2-7)."""
    unsigned = envelope.with_extensions(signedextattrs=_SIGNED_EXTATTRS)
    material = verification_material(unsigned.attributes(), unsigned.data, SIGNED_EXTENSIONS)
    return unsigned.with_signature(_SIGNED_EXTATTRS, _dssematerial(material, signer))


def _dssematerial(material: bytes, signer: EventSigner) -> str:
    """The ``dssematerial`` value: a DSSE envelope of ``material`` with ``signer``'s signature, base64."""
    signature = DsseSignature(signer.kid, signer.key.sign(pae(PAYLOAD_TYPE, material)))
    return DsseEnvelope(PAYLOAD_TYPE, material, (signature,)).to_b64()


def _zulu(instant: datetime) -> str:
    """``instant.strftime("%Y-%m-%dT%H:%M:%SZ")`` for a UTC instant without microseconds (isoformat is faster;
    strftime is kept for years before 1000, which it does not zero-pad)."""
    if instant.year < 1000:
        return instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    return instant.isoformat()[:19] + "Z"


def _uuid4() -> str:
    """``str(uuid.uuid4())``: a random (version 4, RFC 4122 variant) UUID in its canonical text form."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _recipients(
    registry: Registry, schema: MessageSchema, source: str, parties: Sequence[str], at: datetime
) -> list[Recipient]:
    if not parties:
        raise GatewayError(
            Reason.SEAL_NO_RECIPIENTS,
            f"{schema.type} carries sealed fields ({', '.join(sorted(schema.sealed_fields))}); "
            "name recipients",
        )
    topic = event_topic(source, schema)
    result = []
    for party_id in dict.fromkeys(parties):  # de-duplicate, keep order
        party = registry.party(party_id)
        if party is None:
            raise GatewayError(
                Reason.SEAL_UNKNOWN_RECIPIENT, f"recipient {party_id!r} is not in the registry"
            )
        if not party.may_read(topic):
            raise GatewayError(
                Reason.SEAL_RECIPIENT_NOT_PERMITTED, f"recipient {party_id!r} may not read topic {topic}"
            )
        key = registry.current_key(party_id, "seal", at)
        if key is None:
            raise GatewayError(
                Reason.SEAL_UNKNOWN_RECIPIENT, f"recipient {party_id!r} has no valid sealing key"
            )
        result.append(Recipient(party_id, key.kid, key.public_key))
    return result
