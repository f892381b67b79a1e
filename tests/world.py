"""A synthetic deployment for tests: the sample registry's parties with freshly generated keys.

Policies come from ``deploy/registry.example.toml`` (one source of truth); keys are generated per test
session, so no private key is ever committed. Nothing here names a real person.
"""

from __future__ import annotations

import base64
import copy
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.contract.dsse import (
    PAYLOAD_TYPE,
    DsseEnvelope,
    DsseSignature,
    check_signed_extensions,
    pae,
    verification_material,
)
from gateway.contract.envelope import Envelope
from gateway.contract.keys import PublicKey, SealingKey, SigningKey
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore, default_schema_root
from gateway.contract.sign import EventSigner, build_event
from gateway.contract.verify import EventVerifier

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REGISTRY = ROOT / "deploy" / "registry.example.toml"
KEYS_VALID_FROM = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Member:
    party: str
    signer: EventSigner
    sealing: SealingKey
    seal_kid: str


def key_entry(kid: str, use: str, public: PublicKey, **times: datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "kid": kid,
        "use": use,
        "alg": public.alg,
        "public_key": base64.b64encode(public.raw).decode("ascii"),
        "valid_from": times.pop("valid_from", KEYS_VALID_FROM),
    }
    entry.update(times)
    return entry


class World:
    """Registry + schema store + one signing and one sealing key per party."""

    def __init__(self, document: Mapping[str, Any], members: Mapping[str, Member], schemas: SchemaStore):
        self.document = document
        self.members = dict(members)
        self.registry = Registry.from_mapping(document)
        self.schemas = schemas

    @classmethod
    def build(cls, schemas: SchemaStore | None = None, *, alg: str = "Ed25519") -> World:
        with SAMPLE_REGISTRY.open("rb") as handle:
            document = tomllib.load(handle)
        members = {}
        for party in document["parties"]:
            signing = SigningKey.generate(alg)
            sealing = SealingKey.generate()
            sig_kid, seal_kid = f"{party['id']}-sig-test", f"{party['id']}-seal-test"
            party["keys"] = [
                key_entry(sig_kid, "sig", signing.public_key),
                key_entry(seal_kid, "seal", sealing.public_key),
            ]
            members[party["id"]] = Member(
                party["id"], EventSigner(party=party["id"], kid=sig_kid, key=signing), sealing, seal_kid
            )
        return cls(document, members, schemas or SchemaStore.load(default_schema_root()))

    def with_document(self, edit: Any) -> World:
        """A copy whose registry document was changed by ``edit(document)`` (same keys)."""
        document = copy.deepcopy(dict(self.document))
        edit(document)
        return World(document, self.members, self.schemas)

    def party_doc(self, document: Mapping[str, Any], party: str) -> dict[str, Any]:
        return next(p for p in document["parties"] if p["id"] == party)

    def verifier(self, party: str | None = None) -> EventVerifier:
        keys = {self.members[party].seal_kid: self.members[party].sealing} if party else {}
        return EventVerifier(registry=self.registry, schemas=self.schemas, party=party, sealing_keys=keys)

    def event(
        self,
        event_type: str,
        data: Mapping[str, Any],
        *,
        by: str,
        recipients: Sequence[str] = (),
        signer: EventSigner | None = None,
        **kwargs: Any,
    ) -> Envelope:
        """An event of ``by``; with ``signer``, re-signed by it afterwards (:func:`resign`), as a hostile
        producer that skips ``build_event``'s own key check would."""
        event = build_event(
            signer=self.members[by].signer,
            registry=self.registry,
            schemas=self.schemas,
            event_type=event_type,
            data=data,
            recipients=recipients,
            **kwargs,
        )
        return event if signer is None else resign(event, signer)


def resign(event: Envelope, signer: EventSigner) -> Envelope:
    """``event`` with its DSSE signature replaced by one from ``signer`` (any key id, any key, same signed
    extensions): what a producer holding a stolen, revoked or unregistered key sends."""
    signed = check_signed_extensions(event.signedextattrs)
    material = verification_material(event.attributes(), event.data, signed)
    signature = DsseSignature(signer.kid, signer.key.sign(pae(PAYLOAD_TYPE, material)))
    return event.with_signature(
        event.signedextattrs or "", DsseEnvelope(PAYLOAD_TYPE, material, (signature,)).to_b64()
    )


def example(name: str, version: str, which: str = "valid") -> list[tuple[Path, dict[str, Any]]]:
    """The example payloads of one schema version (``which`` = "valid" or "invalid")."""

    folder = default_schema_root() / name / "examples" / version
    return [(p, json.loads(p.read_text("utf-8"))) for p in sorted(folder.glob(f"{which}-*.json"))]


def recent(minutes: int = 0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)
