"""A signed registry version: the party registry as one canonical document, signed by its maintainers.

Why this shape (``docs/REGISTRY.md``): the registry is the trust root, so every gateway, the notary and every
auditor must hold the *same* bytes and be able to check who approved them, without trusting the channel
that brought them (a Kafka topic, a file copied to an air-gapped site). Following TUF's root role and
X-Road's signed global configuration, a version carries

* ``serial`` (strictly increasing), ``issued_at``, ``expires`` (after which the version is stale: a freeze
  attack shows) and ``previous``, the digest of the version it replaces (a hash chain);
* ``maintainers``: the keys allowed to sign registry versions and how many of them must (``threshold``);
* ``parties``: the content, as :func:`gateway.contract.registry.parse_parties` reads it.

Bytes: the document is RFC 8785 (JCS) canonical JSON, so any maintainer's tool, in any language,
reproduces the digest ``sha256:<hex of SHA-256(document bytes)>``. Signatures: a DSSE v1.0.2 envelope
(``payloadType`` :data:`PAYLOAD_TYPE`, ``payload`` the document bytes) with one signature per maintainer,
each over the DSSE PAE; several signatures over one payload are exactly what a threshold needs, and a
signature is added without touching the others (a version circulates for co-signature). The digest covers
the document, not the signatures, so a late co-signature does not change the chain.

Parsing is strict and every refusal has its reason (``docs/REASON_CODES.md``): not a registry envelope or
another ``format`` is ``registry.format-unknown``; a repeated key id, public key or JSON member
``registry.duplicate-key``; any malformed field ``registry.invalid`` naming it. Which version is *in force*
(anchor, chain, threshold, rollback) is :mod:`gateway.contract.registry_chain`'s decision.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from gateway.contract.canonical import canonical_json, parse_canonical
from gateway.contract.dsse import DsseEnvelope, DsseSignature, pae
from gateway.contract.keys import SIGNATURE_ALGORITHMS, PublicKey, SigningKey
from gateway.contract.registry import Registry, parse_parties, utc_text_of
from gateway.errors import GatewayError, Reason
from gateway.settings import Table

__all__ = [
    "DIGEST_PREFIX",
    "FORMAT",
    "MAX_VERSION_BYTES",
    "PAYLOAD_TYPE",
    "MaintainerKey",
    "Maintainers",
    "RegistryVersion",
    "digest_of",
]

FORMAT: Final = "xchg-registry/2"
PAYLOAD_TYPE: Final = "application/vnd.id.trafficking.registry+json"
DIGEST_PREFIX: Final = "sha256:"
#: A registry version larger than this is refused before parsing (a few hundred parties fit in 1 MiB).
MAX_VERSION_BYTES: Final = 4 * 1024 * 1024
MAX_MAINTAINERS: Final = 32
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_KID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_DOCUMENT_DEPTH: Final = 8
_TOP_LEVEL: Final = ("format", "serial", "issued_at", "expires", "previous", "maintainers", "parties")


def digest_of(payload: bytes) -> str:
    """``sha256:<hex>`` of a document's bytes: what ``previous`` names and an anchor pins."""
    return DIGEST_PREFIX + hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class MaintainerKey:
    """One registry maintainer's signing key (Kemensos, Kemlu, an independent party...)."""

    kid: str
    name: str
    public_key: PublicKey

    def to_json(self) -> dict[str, str]:
        return {
            "kid": self.kid,
            "name": self.name,
            "alg": self.public_key.alg,
            "public_key": base64.b64encode(self.public_key.raw).decode("ascii"),
        }


@dataclass(frozen=True, slots=True)
class Maintainers:
    """Who may sign registry versions, and how many of them must (``threshold`` of ``keys``)."""

    threshold: int
    keys: tuple[MaintainerKey, ...]

    def signers(self, payload: bytes, signatures: Iterable[DsseSignature]) -> tuple[str, ...]:
        """The key ids of the *distinct* maintainer keys with a valid signature over ``payload`` (a
        signature repeated, or an unknown keyid, counts for nothing), sorted."""
        by_kid = {key.kid: key for key in self.keys}
        message = pae(PAYLOAD_TYPE, payload)
        valid = {
            signature.keyid
            for signature in signatures
            if signature.keyid in by_kid and by_kid[signature.keyid].public_key.verify(signature.sig, message)
        }
        return tuple(sorted(valid))

    def require(self, payload: bytes, signatures: Iterable[DsseSignature], whose: str) -> tuple[str, ...]:
        """:meth:`signers`, raising ``registry.threshold-not-met`` below the threshold; ``whose`` says which
        maintainers these are (``"serial 4"``, ``"the anchor"``) in the detail."""
        signed = self.signers(payload, signatures)
        if len(signed) < self.threshold:
            raise GatewayError(
                Reason.REGISTRY_THRESHOLD_NOT_MET,
                f"signed by {len(signed)} of the {len(self.keys)} maintainers of {whose} "
                f"({', '.join(signed) or 'none'}); {self.threshold} required",
            )
        return signed

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "keys": [key.to_json() for key in self.keys]}

    @classmethod
    def from_table(cls, table: Table) -> Maintainers:
        """``{"threshold": t, "keys": [{"kid", "name", "alg", "public_key"}...]}``; errors name the field."""
        entries = table.tables("keys", required=True)
        if not entries:
            raise table.fail("keys", "at least one maintainer key is required")
        if len(entries) > MAX_MAINTAINERS:
            raise table.fail("keys", f"at most {MAX_MAINTAINERS} maintainer keys")
        keys: list[MaintainerKey] = []
        seen: dict[bytes, str] = {}
        for entry in entries:
            kid = entry.string("kid")
            if not _KID.fullmatch(kid):
                raise entry.fail("kid", f"{kid!r} is not a valid key id")
            alg = entry.string("alg", choices=tuple(sorted(SIGNATURE_ALGORITHMS)))
            try:
                raw = base64.b64decode(entry.string("public_key"), validate=True)
                public_key = PublicKey(alg, raw)
            except binascii.Error as exc:
                raise entry.fail("public_key", "not base64") from exc
            except GatewayError as exc:
                raise entry.fail("public_key", exc.detail) from exc
            if any(key.kid == kid for key in keys):
                raise GatewayError(
                    Reason.REGISTRY_DUPLICATE_KEY,
                    f"{entry.name('kid')}: maintainer key {kid!r} is listed twice",
                )
            if raw in seen:
                raise GatewayError(
                    Reason.REGISTRY_DUPLICATE_KEY,
                    f"{entry.name('public_key')}: maintainer key {kid!r} has the public key of {seen[raw]!r}",
                )
            seen[raw] = kid
            keys.append(MaintainerKey(kid=kid, name=entry.string("name"), public_key=public_key))
            entry.refuse_unknown()
        threshold = table.integer("threshold", low=1, high=len(keys))
        table.refuse_unknown()
        return cls(threshold=threshold, keys=tuple(keys))


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryVersion:
    """One parsed, well-formed registry version. Whether it is *trusted* is not decided here."""

    serial: int
    issued_at: datetime
    expires: datetime
    previous: str | None
    maintainers: Maintainers
    registry: Registry
    payload: bytes
    """The document's RFC 8785 bytes (the DSSE payload; its digest is :attr:`digest`)."""
    digest: str
    signatures: tuple[DsseSignature, ...] = ()

    # ---- parsing -------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: bytes) -> RegistryVersion:
        """A registry version from its envelope bytes (a file, a Kafka record value)."""
        if len(raw) > MAX_VERSION_BYTES:
            raise GatewayError(
                Reason.REGISTRY_INVALID, f"a registry version is at most {MAX_VERSION_BYTES} bytes"
            )
        try:
            envelope = DsseEnvelope.from_json(bytes(raw), require_signature=False)
        except GatewayError as exc:
            raise GatewayError(
                Reason.REGISTRY_FORMAT_UNKNOWN, f"not a signed registry version (DSSE envelope): {exc.detail}"
            ) from exc
        if envelope.payload_type != PAYLOAD_TYPE:
            raise GatewayError(
                Reason.REGISTRY_FORMAT_UNKNOWN,
                f"envelope payloadType is not {PAYLOAD_TYPE!r}: not a registry version",
            )
        try:
            document = parse_canonical(envelope.payload, max_depth=_DOCUMENT_DEPTH)
        except GatewayError as exc:
            reason = (
                Reason.REGISTRY_DUPLICATE_KEY
                if exc.reason == Reason.PARSE_DUPLICATE_KEY
                else Reason.REGISTRY_INVALID
            )
            raise GatewayError(reason, f"document: {exc.reason}: {exc.detail}") from exc
        return cls._from_document(document, envelope.payload, envelope.signatures)

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RegistryVersion:
        """An unsigned version of ``document`` (a draft): its canonical bytes computed here."""
        payload = canonical_json(dict(document))
        return cls._from_document(parse_canonical(payload, max_depth=_DOCUMENT_DEPTH), payload, ())

    @classmethod
    def _from_document(
        cls, document: object, payload: bytes, signatures: tuple[DsseSignature, ...]
    ) -> RegistryVersion:
        if not isinstance(document, dict):
            raise GatewayError(Reason.REGISTRY_INVALID, "document: must be a JSON object")
        if document.get("format") != FORMAT:
            raise GatewayError(
                Reason.REGISTRY_FORMAT_UNKNOWN,
                f"format: {str(document.get('format'))[:40]!r} is not {FORMAT!r} (a newer gateway's?)",
            )
        table = Table(document, reason=Reason.REGISTRY_INVALID)
        try:
            table.only(*_TOP_LEVEL)
            serial = table.integer("serial", low=1, high=2**53 - 1)
            issued_at = _instant(table, "issued_at")
            expires = _instant(table, "expires")
            if expires <= issued_at:
                raise table.fail("expires", "must be after issued_at")
            previous = table.raw("previous")
            if serial == 1 and previous is not None:
                raise table.fail("previous", "must be null for serial 1")
            if serial > 1 and (not isinstance(previous, str) or not _DIGEST.fullmatch(previous)):
                raise table.fail("previous", "must be the sha256:<64 hex> digest of the version it replaces")
            maintainers = Maintainers.from_table(table.table("maintainers", required=True))
            registry = parse_parties(table)
        except GatewayError:
            raise
        except Exception as exc:  # a shape no check foresaw: still the document's fault
            raise GatewayError(
                Reason.REGISTRY_INVALID, f"not a valid registry document ({type(exc).__name__})"
            ) from exc
        _maintainers_are_not_party_keys(maintainers, registry)
        return cls(
            serial=serial,
            issued_at=issued_at,
            expires=expires,
            previous=previous,
            maintainers=maintainers,
            registry=registry,
            payload=payload,
            digest=digest_of(payload),
            signatures=signatures,
        )

    # ---- what it says --------------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        """The document as a JSON value (a fresh copy: edit it to make the next version)."""
        value: dict[str, Any] = parse_canonical(self.payload, max_depth=_DOCUMENT_DEPTH)
        return value

    def stale_at(self, now: datetime) -> bool:
        """Past its ``expires``: still used (the last good version), but reported as stale."""
        return now >= self.expires

    def signers(self, maintainers: Maintainers | None = None) -> tuple[str, ...]:
        """Distinct valid signers among ``maintainers`` (default: this version's own)."""
        return (maintainers or self.maintainers).signers(self.payload, self.signatures)

    def label(self) -> str:
        """``serial 4 (sha256:1a2b3c4d...)``: how logs, details and reports name a version."""
        return f"serial {self.serial} ({self.digest[:15]}...)"

    # ---- signing and bytes ---------------------------------------------------------------------------
    def signed(self, kid: str, key: SigningKey) -> RegistryVersion:
        """This version with ``kid``'s signature added (replacing an earlier one by the same keyid)."""
        if not _KID.fullmatch(kid):
            raise GatewayError(Reason.KEYFILE_INVALID, f"{kid!r} is not a valid key id")
        signature = DsseSignature(kid, key.sign(pae(PAYLOAD_TYPE, self.payload)))
        kept = tuple(s for s in self.signatures if s.keyid != kid)
        return replace(self, signatures=(*kept, signature))

    def to_bytes(self) -> bytes:
        """The envelope as RFC 8785 JSON, signatures ordered by keyid: a file's content, a record's value."""
        ordered = tuple(sorted(self.signatures, key=lambda s: (s.keyid, s.sig)))
        return DsseEnvelope(PAYLOAD_TYPE, self.payload, ordered).to_json()


def _instant(table: Table, name: str) -> datetime:
    value = table.string(name)
    try:
        instant = datetime.fromisoformat(value)
    except ValueError as exc:
        raise table.fail(name, "not an RFC 3339 time") from exc
    if instant.tzinfo is None:
        raise table.fail(name, "must be a time with an offset (Z)")
    if utc_text_of(instant.replace(microsecond=0)) != value.replace("+00:00", "Z"):
        raise table.fail(name, "must be written as YYYY-MM-DDTHH:MM:SSZ (UTC, whole seconds)")
    return instant.astimezone(UTC)


def _maintainers_are_not_party_keys(maintainers: Maintainers, registry: Registry) -> None:
    """A maintainer key is nobody's party key: a gateway (whose key signs events) cannot also approve."""
    party_keys = {key.public_key.raw: key.kid for party in registry.parties.values() for key in party.keys}
    for key in maintainers.keys:
        if key.public_key.raw in party_keys:
            raise GatewayError(
                Reason.REGISTRY_DUPLICATE_KEY,
                f"maintainers.keys: maintainer key {key.kid!r} is also party key "
                f"{party_keys[key.public_key.raw]!r}; maintainers sign with keys of their own",
            )
