"""Signed registry versions and the chain rules (gateway/contract/registry_version.py, registry_chain.py).

Each refusal the issue lists — below threshold, broken chain, older serial, unknown format, duplicate key,
malformed field — is produced from a real signed version and asserted by its reason code; THREAT_MODEL.md
rows T1-T8 point here.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.contract.canonical import canonical_json
from gateway.contract.keys import SigningKey
from gateway.contract.registry_chain import Anchor, RegistryChain
from gateway.contract.registry_changes import add_keys, draft_from, initial_document, revoke_key
from gateway.contract.registry_version import PAYLOAD_TYPE, RegistryVersion
from gateway.errors import GatewayError, Reason
from gateway.sandbox.maintainers import SandboxMaintainer, maintainer_set, new_maintainers, signed_version
from tests.world import World, key_entry

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def world() -> World:
    return World.build()


@pytest.fixture(scope="module")
def maintainers() -> list[SandboxMaintainer]:
    return new_maintainers()


@pytest.fixture
def v1(world: World, maintainers: list[SandboxMaintainer]) -> RegistryVersion:
    document = initial_document(world.registry, maintainer_set(maintainers, 2), now=NOW)
    return signed_version(document, maintainers[:2])


def _next(base: RegistryVersion, signers: list[SandboxMaintainer], edit: Any = None) -> RegistryVersion:
    document = draft_from(base, now=NOW + timedelta(hours=base.serial))
    if edit is not None:
        edit(document)
    return signed_version(document, signers)


def _chain(v1: RegistryVersion) -> RegistryChain:
    chain = RegistryChain(Anchor.of(v1))
    assert chain.update(v1.to_bytes()).status == "applied"
    return chain


def test_a_version_round_trips_through_its_canonical_bytes(v1: RegistryVersion) -> None:
    again = RegistryVersion.parse(v1.to_bytes())
    assert (again.digest, again.serial, again.signers()) == (v1.digest, 1, v1.signers())
    assert again.payload == canonical_json(json.loads(again.payload))
    assert again.registry.parties.keys() == v1.registry.parties.keys()


def test_the_next_version_is_applied_with_two_of_three(
    v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    chain = _chain(v1)
    v2 = _next(v1, [maintainers[1], maintainers[2]])
    outcome = chain.update(v2.to_bytes())
    assert (outcome.status, outcome.reason) == ("applied", None)
    assert outcome.signers == tuple(sorted(m.kid for m in maintainers[1:]))
    assert chain.current is not None
    assert chain.current.serial == 2
    assert chain.update(v2.to_bytes()).status == "in-force"  # a re-publication changes nothing


def test_one_of_three_is_below_threshold(v1: RegistryVersion, maintainers: list[SandboxMaintainer]) -> None:
    chain = _chain(v1)
    rogue = _next(v1, [maintainers[0]])
    outcome = chain.update(rogue.to_bytes())
    assert (outcome.status, outcome.reason) == ("refused", Reason.REGISTRY_THRESHOLD_NOT_MET)
    assert "1 of the 3 maintainers" in outcome.detail
    assert chain.current is not None
    assert chain.current.digest == v1.digest


def test_one_signature_copied_twice_counts_once(
    v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    chain = _chain(v1)
    single = _next(v1, [maintainers[0]])
    padded = RegistryVersion.parse(_envelope(single.payload, [*single.signatures, *single.signatures]))
    assert chain.offer(padded).reason == Reason.REGISTRY_THRESHOLD_NOT_MET


def test_a_party_key_is_no_maintainer_signature(
    world: World, v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    """A compromised gateway signing a registry version with its party key (under a maintainer's keyid or
    its own) does not count toward the threshold."""
    chain = _chain(v1)
    member = world.members["kemensos"]
    forged = _next(v1, [maintainers[0]]).signed(member.signer.kid, member.signer.key)
    forged = forged.signed(maintainers[1].kid, member.signer.key)  # a maintainer's keyid, the wrong key
    assert chain.offer(forged).reason == Reason.REGISTRY_THRESHOLD_NOT_MET


def test_new_maintainers_must_also_reach_their_own_threshold(
    v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    """TUF's root rule: N+1 is signed by a threshold of N's maintainers *and* of its own."""
    chain = _chain(v1)
    newcomers = new_maintainers(("bappenas", "komnas-ham"))
    replaced = _next(
        v1, maintainers[:2], lambda d: d.update(maintainers=maintainer_set(newcomers, 2).to_json())
    )
    assert chain.offer(replaced).reason == Reason.REGISTRY_THRESHOLD_NOT_MET
    accepted = replaced.signed(newcomers[0].kid, newcomers[0].key).signed(newcomers[1].kid, newcomers[1].key)
    assert chain.offer(accepted).status == "applied"


def test_an_older_or_equal_serial_is_a_rollback(
    v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    chain = _chain(v1)
    v2 = _next(v1, maintainers[:2])
    assert chain.offer(v2).status == "applied"
    assert chain.update(v1.to_bytes()).reason == Reason.REGISTRY_ROLLBACK  # replay of version 1
    other_v2 = _next(v1, maintainers[:2], lambda d: d["parties"][0].update(name="Another name"))
    assert chain.offer(other_v2).reason == Reason.REGISTRY_ROLLBACK  # a second serial 2


def test_a_broken_chain_is_refused(v1: RegistryVersion, maintainers: list[SandboxMaintainer]) -> None:
    chain = _chain(v1)
    wrong_previous = _next(v1, maintainers[:2], lambda d: d.update(previous="sha256:" + "0" * 64))
    assert chain.offer(wrong_previous).reason == Reason.REGISTRY_CHAIN_BROKEN
    skipped = _next(v1, maintainers[:2], lambda d: d.update(serial=3))
    assert chain.offer(skipped).reason == Reason.REGISTRY_CHAIN_BROKEN


def test_the_anchor_decides_the_first_version(
    v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    other = signed_version(draft_from(v1, now=NOW), maintainers[:2])
    assert RegistryChain(Anchor.of(v1, maintainers=False)).offer(other).reason == (
        Reason.REGISTRY_ANCHOR_MISMATCH
    )
    strangers = new_maintainers(("a", "b"))
    anchor = Anchor(maintainers=maintainer_set(strangers, 2))
    assert RegistryChain(anchor).offer(v1).reason == Reason.REGISTRY_THRESHOLD_NOT_MET
    by_keys = RegistryChain(Anchor.of(v1, digest=False))
    assert by_keys.offer(other).status == "applied"  # maintainer keys anchor any version they signed


def test_an_anchor_file_round_trips(tmp_path: Any, v1: RegistryVersion) -> None:
    path = tmp_path / "anchor.toml"
    path.write_text(Anchor.of(v1).to_toml())
    assert Anchor.load(path) == Anchor.of(v1)


def test_unknown_formats_are_refused(v1: RegistryVersion, maintainers: list[SandboxMaintainer]) -> None:
    chain = RegistryChain(Anchor.of(v1))
    assert chain.update(b"format = 'xchg-registry/1'").reason == Reason.REGISTRY_FORMAT_UNKNOWN
    wrong_type = _envelope(v1.payload, v1.signatures, payload_type="application/json")
    assert chain.update(wrong_type).reason == Reason.REGISTRY_FORMAT_UNKNOWN
    future = dict(v1.document(), format="xchg-registry/3")
    assert chain.update(_envelope(canonical_json(future), ())).reason == Reason.REGISTRY_FORMAT_UNKNOWN


def test_duplicate_keys_are_refused(world: World, v1: RegistryVersion) -> None:
    document = v1.document()
    key = document["parties"][0]["keys"][0]
    document["parties"][0]["keys"].append(dict(key))
    with pytest.raises(GatewayError) as caught:
        RegistryVersion.from_document(document)
    assert caught.value.reason == Reason.REGISTRY_DUPLICATE_KEY
    assert key["kid"] in caught.value.detail
    payload = b'{"serial":1,' + canonical_json(v1.document())[1:]
    assert RegistryChain(Anchor.of(v1)).update(_envelope(payload, ())).reason == (
        Reason.REGISTRY_DUPLICATE_KEY
    )


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(serial=0), "serial"),
        (lambda d: d.update(expires=d["issued_at"]), "expires"),
        (lambda d: d.update(issued_at="2026-03-01T08:00:00+08:00"), "issued_at"),
        (lambda d: d["maintainers"].update(threshold=4), "maintainers.threshold"),
        (lambda d: d["parties"][1]["keys"][0].update(valid_from="yesterday"), "valid_from"),
        (lambda d: d.update(colour="blue"), "colour"),
    ],
)
def test_malformed_fields_are_named(v1: RegistryVersion, edit: Any, field: str) -> None:
    document = v1.document()
    edit(document)
    with pytest.raises(GatewayError) as caught:
        RegistryVersion.from_document(document)
    assert caught.value.reason == Reason.REGISTRY_INVALID
    assert field in caught.value.detail


def test_a_key_pasted_under_the_wrong_party_is_refused_naming_party_and_key(
    world: World, v1: RegistryVersion
) -> None:
    """The issue's trial: IOM's printed key entries appended to the file land under the last party."""
    document = v1.document()
    document["parties"].append({"id": "bp2mi", "name": "BP2MI", "publish": [], "read": [], "keys": []})
    iom_key = key_entry("iom-sig-20261128-1a2b3c4d", "sig", SigningKey.generate().public_key)
    iom_key["valid_from"] = "2026-01-01T00:00:00Z"
    document["parties"][-1]["keys"].append(iom_key)
    with pytest.raises(GatewayError) as caught:
        RegistryVersion.from_document(document)
    last = document["parties"][-1]["id"]
    assert caught.value.reason == Reason.REGISTRY_INVALID
    assert f"'iom-sig-20261128-1a2b3c4d' is listed under party {last!r}" in caught.value.detail
    assert "names party 'iom'" in caught.value.detail
    document["parties"][-1]["keys"].clear()
    with pytest.raises(GatewayError) as refused:
        add_keys(document, last, [iom_key])
    assert refused.value.reason == Reason.REGISTRY_KEY_REQUEST_INVALID


def test_revocation_and_expiry_edits(v1: RegistryVersion, maintainers: list[SandboxMaintainer]) -> None:
    kid = next(iter(v1.registry.parties["iom"].keys)).kid
    at = NOW + timedelta(days=2)
    v2 = _next(v1, maintainers[:2], lambda d: revoke_key(d, kid, at))
    entry = v2.registry.key(kid)
    assert entry is not None
    assert entry.revoked_at == at
    assert entry.problem_at(at) == Reason.KEY_REVOKED
    assert entry.problem_at(at - timedelta(seconds=1)) is None


def test_staleness_is_a_property_not_a_refusal(
    v1: RegistryVersion, maintainers: list[SandboxMaintainer]
) -> None:
    chain = _chain(v1)
    v2 = _next(v1, maintainers[:2])
    assert v2.stale_at(v2.expires)
    assert not v2.stale_at(v2.expires - timedelta(seconds=1))
    assert chain.offer(v2).status == "applied"  # an expired intermediate version still chains


def _envelope(payload: bytes, signatures: Any, *, payload_type: str = PAYLOAD_TYPE) -> bytes:
    return canonical_json(
        {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in signatures],
        }
    )
