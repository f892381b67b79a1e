"""The maintainers' edits of a registry document, as pure functions (``gateway registry ...`` runs them).

A change starts from a version: an *unsigned* draft is edited in place (several changes before anyone
signs), a version that carries any signature starts the next one (:func:`draft_from`: serial + 1,
``previous`` = its digest, fresh ``issued_at`` and ``expires``). Each function edits the document (a JSON
value) and the result is checked as a whole by :meth:`RegistryVersion.from_document`, so an edit can never
produce a version a gateway would refuse for its content. Nothing here signs or publishes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from gateway.contract.registry import PARTY_ID, Registry, kid_owner, utc_text_of
from gateway.contract.registry_version import FORMAT, Maintainers, RegistryVersion
from gateway.errors import GatewayError, Reason

__all__ = [
    "DEFAULT_VALIDITY",
    "add_keys",
    "add_party",
    "diff",
    "draft_from",
    "entry_file_owner",
    "initial_document",
    "revoke_key",
    "set_maintainers",
    "set_permissions",
]

#: How long a version stays fresh unless told otherwise (maintainers re-sign before it expires).
DEFAULT_VALIDITY: Final = timedelta(days=90)


def initial_document(
    registry: Registry, maintainers: Maintainers, *, now: datetime, validity: timedelta = DEFAULT_VALIDITY
) -> dict[str, Any]:
    """Serial 1: ``registry``'s parties (e.g. today's TOML file) under ``maintainers``."""
    issued = now.replace(microsecond=0)
    return {
        "format": FORMAT,
        "serial": 1,
        "issued_at": utc_text_of(issued),
        "expires": utc_text_of(issued + validity),
        "previous": None,
        "maintainers": maintainers.to_json(),
        "parties": registry.to_json(),
    }


def draft_from(base: RegistryVersion, *, now: datetime, validity: timedelta | None = None) -> dict[str, Any]:
    """The document to edit: ``base`` itself if it is an unsigned draft, else the next version after it
    (valid for ``validity``, by default as long as ``base`` was)."""
    document = base.document()
    if not base.signatures:
        if validity is not None:
            issued = datetime.fromisoformat(document["issued_at"])
            document["expires"] = utc_text_of(issued + validity)
        return document
    issued = now.replace(microsecond=0)
    document.update(
        serial=base.serial + 1,
        previous=base.digest,
        issued_at=utc_text_of(issued),
        expires=utc_text_of(issued + (validity or (base.expires - base.issued_at))),
    )
    return document


def _party(document: Mapping[str, Any], party_id: str) -> dict[str, Any]:
    for party in document["parties"]:
        if party.get("id") == party_id:
            return party  # type: ignore[no-any-return]  # a JSON object
    raise GatewayError(Reason.REGISTRY_INVALID, f"party {party_id!r} is not in the registry")


def add_party(document: dict[str, Any], party: Mapping[str, Any]) -> None:
    """Add a party (``id``, ``name``, ``name_en``, ``roles``, ``publish``, ``read``, optional ``keys``)."""
    party_id = party.get("id")
    if not isinstance(party_id, str) or not PARTY_ID.fullmatch(party_id):
        raise GatewayError(Reason.REGISTRY_INVALID, f"id: {party_id!r} is not a valid party id")
    if any(p.get("id") == party_id for p in document["parties"]):
        raise GatewayError(Reason.REGISTRY_INVALID, f"party {party_id!r} is already in the registry")
    entry = copy.deepcopy(dict(party))
    entry.setdefault("keys", [])
    document["parties"].append(entry)


def entry_file_owner(path: Path, parties: Sequence[str]) -> str | None:
    """The party a key entry *file name* names (``bp2mi.keys.toml`` -> ``bp2mi``): the longest party id
    followed by ``.`` or ``-`` at the start of the name; None when it names none."""
    best: str | None = None
    for party in parties:
        if path.name.startswith((party + ".", party + "-")) and (best is None or len(party) > len(best)):
            best = party
    return best


def add_keys(document: dict[str, Any], party_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
    """Add key entries to ``party_id``; refuses (``registry.key-request-invalid``) an entry whose key id
    names another party, or a key id already in the registry."""
    party = _party(document, party_id)
    ids = [p["id"] for p in document["parties"]]
    known = {key.get("kid") for p in document["parties"] for key in p.get("keys", [])}
    for entry in entries:
        kid = entry.get("kid")
        if not isinstance(kid, str):
            raise GatewayError(Reason.REGISTRY_KEY_REQUEST_INVALID, "a key entry has no kid")
        owner = kid_owner(kid, ids)
        if owner != party_id:
            named = f"names party {owner!r}" if owner else f"does not start with {party_id + '-'!r}"
            raise GatewayError(
                Reason.REGISTRY_KEY_REQUEST_INVALID,
                f"key {kid!r} cannot be added to party {party_id!r}: its id {named}",
            )
        if kid in known:
            raise GatewayError(Reason.REGISTRY_DUPLICATE_KEY, f"key {kid!r} is already in the registry")
        known.add(kid)
        party.setdefault("keys", []).append(copy.deepcopy(dict(entry)))


def revoke_key(document: dict[str, Any], kid: str, at: datetime, *, expire: bool = False) -> str:
    """Revoke party key ``kid`` from ``at`` on (``revoked_at``: events timed at or after it are
    ``key.revoked``), or with ``expire`` retire it (``valid_until``: a planned end after a rotation).
    Returns the owning party."""
    for party in document["parties"]:
        for key in party.get("keys", []):
            if key.get("kid") == kid:
                key["valid_until" if expire else "revoked_at"] = utc_text_of(at.replace(microsecond=0))
                return str(party["id"])
    raise GatewayError(Reason.REGISTRY_INVALID, f"key {kid!r} is not a party key in the registry")


def set_permissions(
    document: dict[str, Any],
    party_id: str,
    *,
    publish: Sequence[str] | None = None,
    read: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
) -> None:
    """Replace what ``party_id`` may publish (CloudEvents type patterns), read (topic patterns), its roles."""
    party = _party(document, party_id)
    for name, value in (("publish", publish), ("read", read), ("roles", roles)):
        if value is not None:
            party[name] = list(value)


def set_maintainers(document: dict[str, Any], maintainers: Maintainers) -> None:
    """Replace the maintainer keys and threshold (a lost or compromised maintainer key is removed, a new
    one added). The version still needs a threshold of the maintainers *in force* to be accepted."""
    document["maintainers"] = maintainers.to_json()


def diff(before: RegistryVersion, after: RegistryVersion) -> list[str]:
    """What changed from ``before`` to ``after``, one line each (ids, fields and times; no key material)."""
    lines: list[str] = []
    for name in ("serial", "issued_at", "expires", "previous"):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            lines.append(f"~ {name}: {_text(old)} -> {_text(new)}")
    if before.maintainers != after.maintainers:
        old_kids = {k.kid for k in before.maintainers.keys}
        new_kids = {k.kid for k in after.maintainers.keys}
        lines += [f"- maintainer {kid}" for kid in sorted(old_kids - new_kids)]
        lines += [f"+ maintainer {kid}" for kid in sorted(new_kids - old_kids)]
        if before.maintainers.threshold != after.maintainers.threshold:
            lines.append(
                f"~ maintainers.threshold: {before.maintainers.threshold} -> {after.maintainers.threshold}"
            )
    old_parties, new_parties = before.registry.parties, after.registry.parties
    for party_id in sorted(set(old_parties) | set(new_parties)):
        old_party, new_party = old_parties.get(party_id), new_parties.get(party_id)
        if old_party is None:
            lines.append(f"+ party {party_id}")
        elif new_party is None:
            lines.append(f"- party {party_id}")
        else:
            for name in ("name", "name_en", "roles", "publish", "read"):
                if getattr(old_party, name) != getattr(new_party, name):
                    lines.append(f"~ party {party_id} {name}: {_text(getattr(old_party, name))} -> "
                                 f"{_text(getattr(new_party, name))}")  # fmt: skip
        old_keys = {k.kid: k for k in (old_party.keys if old_party else ())}
        new_keys = {k.kid: k for k in (new_party.keys if new_party else ())}
        for kid in sorted(set(old_keys) | set(new_keys)):
            old_key, new_key = old_keys.get(kid), new_keys.get(kid)
            if old_key is None:
                lines.append(f"+ key {kid} ({party_id}, {new_key.use if new_key else ''})")
            elif new_key is None:
                lines.append(f"- key {kid} ({party_id})")
            else:
                for name in ("valid_from", "valid_until", "revoked_at", "public_key", "use"):
                    if getattr(old_key, name) != getattr(new_key, name):
                        shown = (
                            "replaced"
                            if name == "public_key"
                            else (f"{_text(getattr(old_key, name))} -> {_text(getattr(new_key, name))}")
                        )
                        lines.append(f"~ key {kid} {name}: {shown}")
    return lines


def _text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return utc_text_of(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
