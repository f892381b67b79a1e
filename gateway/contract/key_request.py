"""Key requests: a party asks the registry maintainers to add its next keys (rotation), with proof.

``gateway keys rotate --party P`` creates the next key pair and a *key request*: the new public key
entries, signed with P's current signing key. The signature proves possession of the current key (only P's
gateway holds it) and continuity (the new keys come from whoever held the old one), so maintainers can add
the keys with one command (``gateway registry add-key --request FILE``) without an out-of-band check. A
request may instead be signed by a registry maintainer (who vouches for a party that lost its key).

Format: a DSSE v1.0.2 envelope, ``payloadType`` :data:`PAYLOAD_TYPE`, whose payload is the RFC 8785 JSON
``{"format": "xchg-key-request/1", "party": P, "requested_at": T, "keys": [entries]}``; each entry has the
shape of a registry key entry (``kid``, ``use``, ``alg``, ``public_key``, ``valid_from``, ``valid_until``).
A request that is malformed, or signed by neither P's current signing key nor a maintainer, is
``registry.key-request-invalid``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from gateway.contract.canonical import canonical_json, parse_canonical
from gateway.contract.dsse import DsseEnvelope, DsseSignature, pae
from gateway.contract.keys import SigningKey
from gateway.contract.registry import PARTY_ID, Registry, utc_text_of
from gateway.contract.registry_version import Maintainers
from gateway.errors import GatewayError, Reason

__all__ = ["FORMAT", "PAYLOAD_TYPE", "KeyRequest"]

FORMAT: Final = "xchg-key-request/1"
PAYLOAD_TYPE: Final = "application/vnd.id.trafficking.key-request+json"
_MAX_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest:
    """A parsed key request: who asks, when, for which key entries, and the signatures over it."""

    party: str
    requested_at: datetime
    keys: tuple[Mapping[str, Any], ...]
    payload: bytes
    signatures: tuple[DsseSignature, ...] = ()

    @classmethod
    def create(cls, party: str, keys: Sequence[Mapping[str, Any]], now: datetime) -> KeyRequest:
        """An unsigned request for ``keys`` (registry key entries as JSON values)."""
        document = {
            "format": FORMAT,
            "party": party,
            "requested_at": utc_text_of(now.replace(microsecond=0)),
            "keys": [dict(entry) for entry in keys],
        }
        return cls._from_payload(canonical_json(document), ())

    @classmethod
    def parse(cls, raw: bytes) -> KeyRequest:
        if len(raw) > _MAX_BYTES:
            raise GatewayError(
                Reason.REGISTRY_KEY_REQUEST_INVALID, f"a key request is at most {_MAX_BYTES} bytes"
            )
        try:
            envelope = DsseEnvelope.from_json(raw)
        except GatewayError as exc:
            raise GatewayError(
                Reason.REGISTRY_KEY_REQUEST_INVALID, f"not a signed key request: {exc.detail}"
            ) from exc
        if envelope.payload_type != PAYLOAD_TYPE:
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, f"payloadType is not {PAYLOAD_TYPE!r}")
        return cls._from_payload(envelope.payload, envelope.signatures)

    @classmethod
    def _from_payload(cls, payload: bytes, signatures: tuple[DsseSignature, ...]) -> KeyRequest:
        try:
            document = parse_canonical(payload, max_depth=4)
        except GatewayError as exc:
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, f"payload: {exc.reason}") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, f"payload format is not {FORMAT!r}")
        party, requested, keys = (document.get(name) for name in ("party", "requested_at", "keys"))
        if set(document) != {"format", "party", "requested_at", "keys"}:
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, "payload members differ from the format")
        if not isinstance(party, str) or not PARTY_ID.fullmatch(party):
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, "party: not a party id")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, "keys: a list of key entries is required")
        try:
            instant = datetime.fromisoformat(str(requested))
        except ValueError as exc:
            raise GatewayError(
                Reason.REGISTRY_KEY_REQUEST_INVALID, "requested_at: not an RFC 3339 time"
            ) from exc
        if instant.tzinfo is None:
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, "requested_at: needs an offset")
        return cls(
            party=party, requested_at=instant, keys=tuple(keys), payload=payload, signatures=signatures
        )

    def signed(self, kid: str, key: SigningKey) -> KeyRequest:
        signature = DsseSignature(kid, key.sign(pae(PAYLOAD_TYPE, self.payload)))
        return replace(self, signatures=(*(s for s in self.signatures if s.keyid != kid), signature))

    def to_bytes(self) -> bytes:
        return DsseEnvelope(PAYLOAD_TYPE, self.payload, self.signatures).to_json()

    def authorised_by(self, registry: Registry, maintainers: Maintainers, now: datetime) -> str:
        """The key id that authorises this request: a signing key of the party valid ``now`` (proof of
        possession and continuity) or a registry maintainer. Raises ``registry.key-request-invalid``."""
        message = pae(PAYLOAD_TYPE, self.payload)
        party = registry.party(self.party)
        if party is None:
            raise GatewayError(
                Reason.REGISTRY_KEY_REQUEST_INVALID, f"party {self.party!r} is not in the registry"
            )
        current = {k.kid: k for k in party.keys if k.use == "sig" and k.problem_at(now) is None}
        by_maintainer = {k.kid: k for k in maintainers.keys}
        for signature in self.signatures:
            key = current.get(signature.keyid)
            if key is not None and key.public_key.verify(signature.sig, message):
                return key.kid
            maintainer = by_maintainer.get(signature.keyid)
            if maintainer is not None and maintainer.public_key.verify(signature.sig, message):
                return maintainer.kid
        valid = ", ".join(sorted(current)) or "none"
        raise GatewayError(
            Reason.REGISTRY_KEY_REQUEST_INVALID,
            f"the request of {self.party!r} is signed neither by one of its current signing keys ({valid}) "
            "nor by a registry maintainer",
        )
