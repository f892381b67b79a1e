"""The party registry (trust store): who the parties are, their keys, what each may publish and read.

File format: TOML, documented in ``docs/REGISTRY.md`` with a sample at ``deploy/registry.example.toml``::

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

Invariants checked at load: party ids unique and well-formed; a ``kid`` names exactly one key; a public key
belongs to exactly one party (so a signature proves one party); times are timezone-aware and ordered.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.contract.keys import ALG_X25519, SIGNATURE_ALGORITHMS, PublicKey
from gateway.errors import GatewayError, Reason
from gateway.settings import load_toml

__all__ = ["FORMAT", "KeyEntry", "Party", "Registry"]

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
        owners: dict[bytes, str] = {}
        for party in parties:
            if party.id in by_id:
                raise GatewayError(Reason.REGISTRY_INVALID, f"party {party.id!r} is defined twice")
            by_id[party.id] = party
            for key in party.keys:
                if key.kid in keys:
                    raise GatewayError(Reason.REGISTRY_INVALID, f"kid {key.kid!r} is used twice")
                owner = owners.setdefault(key.public_key.raw, party.id)
                if owner != party.id:
                    raise GatewayError(
                        Reason.REGISTRY_INVALID,
                        f"key {key.kid!r} of {party.id!r} is also registered to {owner!r}; "
                        "a key signs for exactly one party",
                    )
                keys[key.kid] = key
        self._parties: Mapping[str, Party] = MappingProxyType(by_id)
        self._keys: Mapping[str, KeyEntry] = MappingProxyType(keys)

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Registry:
        return cls.from_mapping(load_toml(path, reason=Reason.REGISTRY_INVALID))

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> Registry:
        if document.get("format") != FORMAT:
            raise GatewayError(Reason.REGISTRY_INVALID, f"format must be {FORMAT!r}")
        parties = document.get("parties")
        if not isinstance(parties, list) or not parties:
            raise GatewayError(Reason.REGISTRY_INVALID, "parties: at least one [[parties]] table is required")
        return cls(_party(entry, index) for index, entry in enumerate(parties))

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


def _party(entry: object, index: int) -> Party:
    where = f"parties[{index}]"
    if not isinstance(entry, dict):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}: must be a table")
    party_id = _string(entry, "id", where)
    if not PARTY_ID.fullmatch(party_id):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.id: {party_id!r} is not a valid party id")
    where = f"party {party_id!r}"
    keys = entry.get("keys", [])
    if not isinstance(keys, list):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.keys: must be an array of tables")
    return Party(
        id=party_id,
        name=_string(entry, "name", where),
        name_en=str(entry.get("name_en", entry["name"])),
        roles=_strings(entry, "roles", where),
        publish=_strings(entry, "publish", where),
        read=_strings(entry, "read", where),
        keys=tuple(_key(k, party_id, f"{where}.keys[{i}]") for i, k in enumerate(keys)),
    )


def _key(entry: object, party_id: str, where: str) -> KeyEntry:
    if not isinstance(entry, dict):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}: must be a table")
    kid = _string(entry, "kid", where)
    if not _KID.fullmatch(kid):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.kid: {kid!r} is not a valid key id")
    use = entry.get("use")
    alg = _string(entry, "alg", where)
    if use == "sig" and alg not in SIGNATURE_ALGORITHMS:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}: {alg!r} is not a signature algorithm")
    if use == "seal" and alg != ALG_X25519:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}: sealing keys must be {ALG_X25519}")
    if use not in ("sig", "seal"):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.use: must be 'sig' or 'seal'")
    try:
        raw = base64.b64decode(_string(entry, "public_key", where), validate=True)
    except binascii.Error as exc:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.public_key: not base64") from exc
    try:
        public_key = PublicKey(alg, raw)
    except GatewayError as exc:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}: {exc.detail}") from exc
    valid_from = _instant(entry, "valid_from", where, required=True)
    assert valid_from is not None  # noqa: S101 - required=True never returns None
    valid_until = _instant(entry, "valid_until", where)
    if valid_until is not None and valid_until <= valid_from:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}: valid_until must be after valid_from")
    return KeyEntry(
        kid=kid,
        party=party_id,
        use=use,
        public_key=public_key,
        valid_from=valid_from,
        valid_until=valid_until,
        revoked_at=_instant(entry, "revoked_at", where),
    )


def _string(entry: Mapping[str, Any], name: str, where: str) -> str:
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.{name}: a non-empty string is required")
    return value


def _strings(entry: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = entry.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.{name}: must be an array of strings")
    return tuple(value)


def _instant(entry: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> datetime | None:
    value = entry.get(name)
    if value is None:
        if required:
            raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.{name}: required")
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.{name}: not an RFC 3339 time") from exc
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise GatewayError(Reason.REGISTRY_INVALID, f"{where}.{name}: must be a time with an offset (Z)")
    return value
