"""The party registry (trust store): who the parties are, their keys, what each may publish and read.

This module is the *content* of the registry: parties, keys and permissions, validated into an immutable
:class:`Registry`. Since issue 12 the registry a gateway trusts is a signed, versioned document
(:mod:`gateway.contract.registry_version`: serial, expiry, previous digest, maintainers' signatures) whose
``parties`` member this module parses; :mod:`gateway.contract.registry_chain` decides which version is in
force. The unsigned TOML form below (``xchg-registry/1``) is still read for trials and as the input of
``gateway registry init`` (``docs/REGISTRY.md``, sample ``deploy/registry.example.toml``)::

    format = "xchg-registry/1"

    [[parties]]
    id = "kemensos"                       # also the CloudEvents `source` of its events
    name = "Kementerian Sosial Republik Indonesia"
    name_en = "Ministry of Social Affairs"
    roles = ["rptc-shelter", "return-post"]
    publish = ["id.trafficking.case.shelter-admission", "id.trafficking.alert.*"]   # fnmatch patterns
    read = ["xchg.kemlu.*.case.v1", "xchg.iom.alert.v1"]                            # fnmatch patterns

    [[parties.keys]]
    kid = "kemensos-sig-2026a"
    use = "sig"                           # "sig" (signing) or "seal" (HPKE recipient key)
    alg = "Ed25519"                       # sig: Ed25519 | ECDSA-P256-SHA256; seal: X25519
    public_key = "base64 of the raw public key"
    valid_from = 2026-01-01T00:00:00Z
    valid_until = 2027-01-01T00:00:00Z    # optional
    revoked_at = 2026-06-01T00:00:00Z     # optional: events timed at or after it are rejected

Invariants checked at load (every refusal names the party, the key id and the field):

* party ids are unique and well-formed;
* a key id starts with its party's id and a dash, and no other party's id is a longer such prefix (so
  ``iom-sig-...`` pasted under ``[[parties]] id = "bp2mi"`` is refused rather than trusted to sign as bp2mi,
  which TOML's array-of-tables semantics would otherwise do silently);
* a ``kid`` names exactly one key and a public key belongs to exactly one party (so a signature proves one
  party): ``registry.duplicate-key`` otherwise;
* times carry an offset and are ordered; algorithms match the key use.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.contract.keys import ALG_X25519, SIGNATURE_ALGORITHMS, PublicKey
from gateway.errors import GatewayError, Reason
from gateway.settings import Table

__all__ = [
    "FORMAT",
    "PARTY_ID",
    "KeyEntry",
    "Party",
    "Registry",
    "kid_owner",
    "parse_parties",
    "utc_text_of",
]

FORMAT: Final = "xchg-registry/1"
PARTY_ID: Final = re.compile(r"[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)*")
_KID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

KeyUse = Literal["sig", "seal"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyEntry:
    kid: str
    party: str
    use: KeyUse
    public_key: PublicKey
    valid_from: datetime
    valid_until: datetime | None = None
    revoked_at: datetime | None = None

    def problem_at(self, instant: datetime) -> Reason | None:
        """Why this key may not be used for an event at ``instant``, or None when it may."""
        if self.revoked_at is not None and instant >= self.revoked_at:
            return Reason.KEY_REVOKED
        if instant < self.valid_from:
            return Reason.KEY_NOT_YET_VALID
        if self.valid_until is not None and instant >= self.valid_until:
            return Reason.KEY_EXPIRED
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Party:
    id: str
    name: str
    name_en: str
    roles: tuple[str, ...]
    publish: tuple[str, ...]
    read: tuple[str, ...]
    keys: tuple[KeyEntry, ...]

    def may_publish(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.publish)

    def may_read(self, topic: str) -> bool:
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.read)


class Registry:
    """An immutable, validated registry. Look-ups are dictionary reads (hot path)."""

    __slots__ = ("_keys", "_parties")

    def __init__(self, parties: Iterable[Party]) -> None:
        by_id: dict[str, Party] = {}
        keys: dict[str, KeyEntry] = {}
        owners: dict[bytes, tuple[str, str]] = {}
        ordered = list(parties)
        for index, party in enumerate(ordered):
            if party.id in by_id:
                raise GatewayError(
                    Reason.REGISTRY_INVALID, f"parties[{index}].id: party {party.id!r} is defined twice"
                )
            by_id[party.id] = party
        for index, party in enumerate(ordered):
            for number, key in enumerate(party.keys):
                where = f"parties[{index}].keys[{number}]"
                named = kid_owner(key.kid, by_id)
                if named != party.id:
                    raise GatewayError(
                        Reason.REGISTRY_INVALID,
                        f"{where}.kid: key {key.kid!r} is listed under party {party.id!r} but "
                        + (
                            f"its id names party {named!r} (pasted under the wrong [[parties]] table?)"
                            if named is not None
                            else f"its id does not start with {party.id + '-'!r}"
                        ),
                    )
                if key.kid in keys:
                    raise GatewayError(
                        Reason.REGISTRY_DUPLICATE_KEY,
                        f"{where}.kid: key {key.kid!r} of party {party.id!r} is used twice",
                    )
                owner = owners.setdefault(key.public_key.raw, (party.id, key.kid))
                if owner[1] != key.kid:
                    raise GatewayError(
                        Reason.REGISTRY_DUPLICATE_KEY,
                        f"{where}.public_key: key {key.kid!r} of party {party.id!r} has the public key of "
                        f"{owner[1]!r} of party {owner[0]!r}; a key signs for exactly one party",
                    )
                keys[key.kid] = key
        self._parties: Mapping[str, Party] = MappingProxyType(by_id)
        self._keys: Mapping[str, KeyEntry] = MappingProxyType(keys)

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Registry:
        return cls.from_table(Table.load(path, what="registry", reason=Reason.REGISTRY_INVALID))

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> Registry:
        return cls.from_table(Table(document, reason=Reason.REGISTRY_INVALID))

    @classmethod
    def from_table(cls, document: Table) -> Registry:
        """The registry in ``document``; anything wrong with it is ``registry.invalid`` (exit 2 in the CLI),
        whatever the document holds."""
        try:
            return cls._from_table(document)
        except GatewayError:
            raise
        except Exception as exc:  # a shape no check foresaw: still the file's fault, never a traceback
            raise GatewayError(
                Reason.REGISTRY_INVALID, f"not a valid registry document ({type(exc).__name__})"
            ) from exc

    @classmethod
    def _from_table(cls, document: Table) -> Registry:
        if document.raw("format") != FORMAT:
            raise GatewayError(Reason.REGISTRY_INVALID, f"format must be {FORMAT!r}")
        registry = parse_parties(document)
        document.refuse_unknown()
        return registry

    # ---- writing ------------------------------------------------------------------------------------
    def to_json(self) -> list[dict[str, Any]]:
        """The ``parties`` member of a registry document (times as RFC 3339 UTC text), in a fixed order:
        what :func:`parse_parties` reads back into an equal registry."""
        return [_party_json(party) for party in self._parties.values()]

    # ---- queries ------------------------------------------------------------------------------------
    @property
    def parties(self) -> Mapping[str, Party]:
        return self._parties

    def party(self, party_id: str) -> Party | None:
        return self._parties.get(party_id)

    def key(self, kid: str) -> KeyEntry | None:
        return self._keys.get(kid)

    def readers(self, topic: str) -> list[str]:
        return sorted(p.id for p in self._parties.values() if p.may_read(topic))

    def current_key(self, party_id: str, use: KeyUse, at: datetime) -> KeyEntry | None:
        """The newest key of ``use`` valid at ``at`` (the one to seal to, or to sign with)."""
        party = self._parties.get(party_id)
        if party is None:
            return None
        usable = [k for k in party.keys if k.use == use and k.problem_at(at) is None]
        return max(usable, key=lambda k: k.valid_from, default=None)


def kid_owner(kid: str, parties: Iterable[str]) -> str | None:
    """The party a key id names: the longest party id ``P`` such that ``kid`` starts with ``P-`` (None when
    none does). Party ids nest (``kemlu``, ``kemlu.kbri-kuching``) and may hold dashes (``kemlu-x``), so the
    longest match decides: ``kemlu-x-sig-1`` names ``kemlu-x`` when that party exists."""
    best: str | None = None
    for party in parties:
        if kid.startswith(party + "-") and (best is None or len(party) > len(best)):
            best = party
    return best


def parse_parties(document: Table) -> Registry:
    """The ``parties`` array of ``document`` (TOML ``[[parties]]`` or a signed document's JSON array)."""
    parties = document.tables("parties")
    if not parties:
        raise GatewayError(Reason.REGISTRY_INVALID, "parties: at least one [[parties]] table is required")
    return Registry(_party(entry) for entry in parties)


def _party(entry: Table) -> Party:
    party_id = entry.string("id")
    if not PARTY_ID.fullmatch(party_id):
        raise entry.fail("id", f"{party_id!r} is not a valid party id")
    entry.where = f"{entry.where} (party {party_id!r})"
    name = entry.string("name")
    party = Party(
        id=party_id,
        name=name,
        name_en=entry.string("name_en", name),
        roles=entry.strings("roles", ()),
        publish=entry.strings("publish", ()),
        read=entry.strings("read", ()),
        keys=tuple(_key(k, party_id) for k in entry.tables("keys")),
    )
    entry.refuse_unknown()
    return party


def _key(entry: Table, party_id: str) -> KeyEntry:
    kid = entry.string("kid")
    if not _KID.fullmatch(kid):
        raise entry.fail("kid", f"{kid!r} is not a valid key id")
    use = entry.raw("use")
    alg = entry.string("alg")
    if use == "sig" and alg not in SIGNATURE_ALGORITHMS:
        raise entry.fail("", f"{alg!r} is not a signature algorithm")
    if use == "seal" and alg != ALG_X25519:
        raise entry.fail("", f"sealing keys must be {ALG_X25519}")
    if use not in ("sig", "seal"):
        raise entry.fail("use", "must be 'sig' or 'seal'")
    try:
        raw = base64.b64decode(entry.string("public_key"), validate=True)
    except binascii.Error as exc:
        raise entry.fail("public_key", "not base64") from exc
    try:
        public_key = PublicKey(alg, raw)
    except GatewayError as exc:
        raise entry.fail("", exc.detail) from exc
    valid_from = _instant(entry, "valid_from", required=True)
    assert valid_from is not None  # noqa: S101 - required=True never returns None
    valid_until = _instant(entry, "valid_until")
    if valid_until is not None and valid_until <= valid_from:
        raise entry.fail("", "valid_until must be after valid_from")
    key = KeyEntry(
        kid=kid,
        party=party_id,
        use=use,
        public_key=public_key,
        valid_from=valid_from,
        valid_until=valid_until,
        revoked_at=_instant(entry, "revoked_at"),
    )
    entry.refuse_unknown()
    return key


def _party_json(party: Party) -> dict[str, Any]:
    return {
        "id": party.id,
        "name": party.name,
        "name_en": party.name_en,
        "roles": list(party.roles),
        "publish": list(party.publish),
        "read": list(party.read),
        "keys": [_key_json(key) for key in party.keys],
    }


def _key_json(key: KeyEntry) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kid": key.kid,
        "use": key.use,
        "alg": key.public_key.alg,
        "public_key": base64.b64encode(key.public_key.raw).decode("ascii"),
        "valid_from": utc_text_of(key.valid_from),
    }
    if key.valid_until is not None:
        entry["valid_until"] = utc_text_of(key.valid_until)
    if key.revoked_at is not None:
        entry["revoked_at"] = utc_text_of(key.revoked_at)
    return entry


def utc_text_of(instant: datetime) -> str:
    """``instant`` as RFC 3339 UTC text with whole seconds (``2026-11-28T00:00:00Z``): the one spelling a
    registry document uses, so every maintainer's tool writes the same bytes."""
    if instant.microsecond:
        raise GatewayError(Reason.REGISTRY_INVALID, "registry times are whole seconds")
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(entry: Table, name: str, *, required: bool = False) -> datetime | None:
    value = entry.raw(name)
    if value is None:
        if required:
            raise entry.fail(name, "required")
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise entry.fail(name, "not an RFC 3339 time") from exc
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise entry.fail(name, "must be a time with an offset (Z)")
    return value
