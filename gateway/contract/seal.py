"""Sealed fields: personal and sensitive data encrypted for named recipients with HPKE (RFC 9180).

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode, single-shot, as implemented
by ``cryptography.hazmat.primitives.hpke``. The plaintext (RFC 8785 JSON of the sealed properties, padded
with trailing spaces to a multiple of 128 bytes so the length does not reveal e.g. a name's length) is
encrypted once per recipient.

Binding: the HPKE ``info`` string is ``"id.trafficking.xchg/seal/v1" 0x00`` followed by the JCS JSON of the
event ``id``, ``source``, ``type`` and the recipient's ``party`` and ``kid``. ``info`` enters the HPKE key
schedule, so a block (or one recipient entry) copied into another event, or relabelled for another
recipient, fails to open: the same guarantee AEAD associated data gives. (``cryptography``'s single-shot API
takes ``info`` but no separate AAD; RFC 9180 section 8.1 notes either binds context.) The DSSE signature
covers the sealed form, so a relay cannot swap ciphertexts without breaking the signature either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke

from gateway.contract.canonical import canonical_json
from gateway.contract.keys import PublicKey, SealingKey
from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason

__all__ = ["SEAL_ALG", "EventBinding", "Recipient", "open_sealed", "seal"]

SEAL_ALG: Final = "HPKE-Base-X25519-SHA256-ChaCha20Poly1305"
_INFO_PREFIX: Final = b"id.trafficking.xchg/seal/v1\x00"
_ENC_LENGTH: Final = 32  # X25519 encapsulated key
_PAD_TO: Final = 128
_SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


@dataclass(frozen=True, slots=True)
class EventBinding:
    """The event attributes a sealed block is bound to."""

    id: str
    source: str
    type: str


@dataclass(frozen=True, slots=True)
class Recipient:
    party: str
    kid: str
    public_key: PublicKey


def _info(binding: EventBinding, party: str, kid: str) -> bytes:
    context = {"id": binding.id, "kid": kid, "party": party, "source": binding.source, "type": binding.type}
    return _INFO_PREFIX + canonical_json(context)


def seal(fields: Mapping[str, Any], binding: EventBinding, recipients: Sequence[Recipient]) -> dict[str, Any]:
    """Encrypt ``fields`` for each recipient; returns the wire ``sealed`` block (``_common`` sealedBlock)."""
    if not recipients:
        raise GatewayError(Reason.SEAL_NO_RECIPIENTS, "sealed fields need at least one recipient")
    plaintext = canonical_json(dict(fields))
    plaintext += b" " * (-len(plaintext) % _PAD_TO)
    entries = []
    for recipient in sorted(recipients, key=lambda r: r.party):
        sealed = _SUITE.encrypt(
            plaintext, recipient.public_key.x25519(), info=_info(binding, recipient.party, recipient.kid)
        )
        entries.append(
            {
                "ct": base64.b64encode(sealed[_ENC_LENGTH:]).decode("ascii"),
                "enc": base64.b64encode(sealed[:_ENC_LENGTH]).decode("ascii"),
                "kid": recipient.kid,
                "party": recipient.party,
            }
        )
    return {"alg": SEAL_ALG, "recipients": entries}


def open_sealed(
    block: object, binding: EventBinding, party: str, keys: Mapping[str, SealingKey]
) -> dict[str, Any] | None:
    """Open the entry addressed to ``party`` with one of ``keys`` (by kid).

    Returns None when the block has no entry for ``party`` (the event is not addressed to us: not an error).
    Raises ``seal.malformed`` for a block that is not well-formed and ``seal.open-failed`` when an entry for
    us does not decrypt (moved from another event, relabelled, corrupted) or names a key we do not hold.
    """
    if not isinstance(block, dict) or block.get("alg") != SEAL_ALG:
        raise GatewayError(Reason.SEAL_MALFORMED, f"sealed block must use {SEAL_ALG}")
    entries = block.get("recipients")
    if not isinstance(entries, list):
        raise GatewayError(Reason.SEAL_MALFORMED, "sealed block has no recipients list")
    mine = [e for e in entries if isinstance(e, dict) and e.get("party") == party]
    if not mine:
        return None
    if len(mine) > 1:
        raise GatewayError(Reason.SEAL_MALFORMED, "sealed block addresses one party twice")
    entry = mine[0]
    kid = entry.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise GatewayError(
            Reason.SEAL_OPEN_FAILED, "sealed for a key of ours that this gateway does not hold"
        )
    try:
        enc = base64.b64decode(str(entry.get("enc")), validate=True)
        ct = base64.b64decode(str(entry.get("ct")), validate=True)
    except binascii.Error as exc:
        raise GatewayError(Reason.SEAL_MALFORMED, "sealed entry is not base64") from exc
    if len(enc) != _ENC_LENGTH:
        raise GatewayError(Reason.SEAL_MALFORMED, "sealed entry has a bad encapsulated key")
    try:
        plaintext = _SUITE.decrypt(enc + ct, key.private, info=_info(binding, party, str(kid)))
    except (InvalidTag, ValueError) as exc:
        raise GatewayError(
            Reason.SEAL_OPEN_FAILED,
            "sealed entry does not open for this event (moved, relabelled or corrupt)",
        ) from exc
    fields = parse_json(plaintext)
    if not isinstance(fields, dict):
        raise GatewayError(Reason.SEAL_MALFORMED, "sealed plaintext is not a JSON object")
    return fields
