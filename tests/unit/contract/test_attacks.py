"""Each named attack on the message contract is rejected with its own reason code (THREAT_MODEL.md)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.contract.canonical import canonical_json
from gateway.contract.envelope import Envelope
from gateway.contract.keys import SigningKey
from gateway.contract.sign import EventSigner, sign_envelope
from gateway.contract.verify import Accepted, Rejected
from gateway.errors import GatewayError, Reason
from tests.world import World, example

REFERRAL = "id.trafficking.case.referral"
NETWORK_ALERT = "id.trafficking.alert.network"
KBRI = "kemlu.kbri-kuching"


def _referral() -> dict[str, Any]:
    return example("case.referral", "1.0")[0][1]


def _rejected(world: World, event: Envelope | bytes, party: str = "kemensos") -> Rejected:
    raw = event if isinstance(event, bytes) else event.to_structured()
    verdict = world.verifier(party).verify_structured(raw)
    assert isinstance(verdict, Rejected), f"accepted: {verdict}"
    return verdict


def _resign(
    world: World, event: Envelope, data: dict[str, Any], signer: EventSigner | None = None
) -> Envelope:
    """Re-sign ``event`` with different wire data, as a producer holding a valid key could."""
    attributes = {k: v for k, v in event.attributes().items() if k not in ("dssematerial", "signedextattrs")}
    unsigned = Envelope.from_attributes(attributes, canonical_json(data))
    return sign_envelope(unsigned, signer or world.members[event.source].signer)


def _referral_event(world: World, **kwargs: Any) -> Envelope:
    kwargs.setdefault("recipients", ["kemensos", "iom"])
    return world.event(REFERRAL, _referral(), by=KBRI, **kwargs)


def test_baseline_referral_is_accepted(world: World) -> None:
    verdict = world.verifier("kemensos").verify_structured(_referral_event(world).to_structured())
    assert isinstance(verdict, Accepted)
    assert verdict.unsealed is not None


def test_wrong_key(world: World) -> None:
    """The registered kid, but the signature was made by some other key."""
    impostor = EventSigner(party=KBRI, kid=world.members[KBRI].signer.kid, key=SigningKey.generate())
    assert _rejected(world, _referral_event(world, signer=impostor)).reason == Reason.SIG_INVALID


def test_unknown_kid(world: World) -> None:
    ghost = EventSigner(party=KBRI, kid="kbri-kuching-sig-ghost", key=SigningKey.generate())
    assert _rejected(world, _referral_event(world, signer=ghost)).reason == Reason.KEY_UNKNOWN


def test_key_unknown_names_the_key_id(world: World) -> None:
    """An operator sees which key is missing (a gateway whose registry lags, a key never registered)."""
    ghost = EventSigner(party=KBRI, kid=f"{KBRI}-sig-ghost", key=SigningKey.generate())
    rejected = _rejected(world, _referral_event(world, signer=ghost))
    assert (rejected.reason, f"'{KBRI}-sig-ghost'" in rejected.detail) == (Reason.KEY_UNKNOWN, True)


@pytest.mark.parametrize(
    ("times", "reason"),
    [
        ({"revoked_at": -1}, Reason.KEY_REVOKED),
        ({"valid_until": -1}, Reason.KEY_EXPIRED),
        ({"valid_from": +1}, Reason.KEY_NOT_YET_VALID),
    ],
)
def test_the_signer_refuses_a_key_that_is_not_valid_at_the_event_time(
    world: World, times: dict[str, int], reason: Reason
) -> None:
    """``gateway sign`` and every publisher refuse instead of sending what every verifier rejects."""
    now = datetime.now(UTC)
    changed = _with_key_times(world, KBRI, **{k: now + timedelta(days=d) for k, d in times.items()})
    with pytest.raises(GatewayError) as caught:
        changed.event(REFERRAL, _referral(), by=KBRI, recipients=["kemensos"])
    assert caught.value.reason == reason
    assert world.members[KBRI].signer.kid in caught.value.detail
    earlier = now - timedelta(days=3) if reason != Reason.KEY_NOT_YET_VALID else now + timedelta(days=2)
    if reason == Reason.KEY_REVOKED:  # an event timed before the revocation is still signed
        assert changed.event(REFERRAL, _referral(), by=KBRI, recipients=["kemensos"], now=earlier)


def _with_key_times(world: World, party: str, **times: datetime) -> World:
    def edit(document: dict[str, Any]) -> None:
        world.party_doc(document, party)["keys"][0].update(times)

    return world.with_document(edit)


def test_revoked_key_rejects_events_after_revocation_only(world: World) -> None:
    revoked_at = datetime.now(UTC) - timedelta(days=1)
    revoked = _with_key_times(world, KBRI, revoked_at=revoked_at)
    after = _referral_event(world)
    assert _rejected(revoked, after).reason == Reason.KEY_REVOKED
    before = _referral_event(world, now=revoked_at - timedelta(days=2))
    assert isinstance(revoked.verifier("kemensos").verify_structured(before.to_structured()), Accepted)


def test_expired_key(world: World) -> None:
    expired = _with_key_times(world, KBRI, valid_until=datetime.now(UTC) - timedelta(hours=1))
    assert _rejected(expired, _referral_event(world)).reason == Reason.KEY_EXPIRED


def test_key_not_yet_valid(world: World) -> None:
    future = _with_key_times(world, KBRI, valid_from=datetime.now(UTC) + timedelta(days=1))
    assert _rejected(future, _referral_event(world)).reason == Reason.KEY_NOT_YET_VALID


def test_spoofed_source(world: World) -> None:
    """A valid kemensos signature on an event claiming to come from iom."""
    kemensos = world.members["kemensos"].signer
    spoof = EventSigner(party="iom", kid=kemensos.kid, key=kemensos.key)
    event = world.event(REFERRAL, _referral(), by="iom", signer=spoof, recipients=["kemensos"])
    assert event.source == "iom"
    assert _rejected(world, event).reason == Reason.KEY_WRONG_PARTY


def test_type_not_permitted_for_source(world: World) -> None:
    """kemensos may not publish network alerts; a kemensos gateway that signs one anyway is refused."""
    alert = example("alert.network", "1.0")[0][1]
    with pytest.raises(GatewayError) as caught:
        world.event(NETWORK_ALERT, alert, by="kemensos")
    assert caught.value.reason == Reason.AUTHZ_TYPE_NOT_PERMITTED

    def allow(document: dict[str, Any]) -> None:
        world.party_doc(document, "kemensos")["publish"].append(NETWORK_ALERT)

    lenient = world.with_document(allow)
    event = lenient.event(NETWORK_ALERT, alert, by="kemensos")
    assert _rejected(world, event, party="iom").reason == Reason.AUTHZ_TYPE_NOT_PERMITTED


def test_missing_signature(world: World) -> None:
    document = json.loads(_referral_event(world).to_structured())
    del document["dssematerial"]
    assert _rejected(world, json.dumps(document).encode()).reason == Reason.SIG_MISSING


def test_duplicate_json_keys(world: World) -> None:
    raw = _referral_event(world).to_structured()
    forged = b'{"source":"iom",' + raw[1:]  # a second "source": parsers disagree on which one wins
    assert _rejected(world, forged).reason == Reason.PARSE_DUPLICATE_KEY


def test_oversize(world: World) -> None:
    raw = _referral_event(world).to_structured()
    padded = raw[:-1] + b',"padding":"' + b"x" * (256 * 1024) + b'"}'
    assert _rejected(world, padded).reason == Reason.SIZE_EXCEEDED


def test_deep_nesting(world: World) -> None:
    raw = _referral_event(world).to_structured()
    nested = raw[:-1] + b',"nest":' + b"[" * 1000 + b"]" * 1000 + b"}"
    assert _rejected(world, nested).reason == Reason.PARSE_TOO_DEEP


def test_sealed_block_moved_from_another_event(world: World) -> None:
    """The producer (or anyone holding its key) pastes another event's sealed block: it no longer opens."""
    donor = _referral_event(world)
    target = _referral_event(world)
    data = target.data_value()
    data["sealed"] = donor.data_value()["sealed"]
    moved = _resign(world, target, data)
    assert _rejected(world, moved).reason == Reason.SEAL_OPEN_FAILED


def test_sealed_entry_relabelled_for_another_party(world: World) -> None:
    """An entry encrypted to iom is relabelled as kemensos's: kemensos cannot open it."""
    event = _referral_event(world, recipients=["iom"])
    data = event.data_value()
    entry = data["sealed"]["recipients"][0]
    entry["party"], entry["kid"] = "kemensos", world.members["kemensos"].seal_kid
    assert _rejected(world, _resign(world, event, data)).reason == Reason.SEAL_OPEN_FAILED


def test_sealed_for_party_not_entitled_to_topic(world: World) -> None:
    """Personal data sealed for a registered party that may not read the topic is refused by every reader."""

    def restrict(document: dict[str, Any]) -> None:
        world.party_doc(document, "iom")["read"] = ["xchg.kemensos.alert.v1"]

    restricted = world.with_document(restrict)
    event = _referral_event(world, recipients=["kemensos", "iom"])
    assert _rejected(restricted, event).reason == Reason.SEAL_RECIPIENT_NOT_PERMITTED


def test_sealed_for_unknown_party(world: World) -> None:
    event = _referral_event(world)
    data = event.data_value()
    data["sealed"]["recipients"][0]["party"] = "unknown-agency"
    assert _rejected(world, _resign(world, event, data)).reason == Reason.SEAL_UNKNOWN_RECIPIENT


def test_event_from_the_future(world: World) -> None:
    event = _referral_event(world, now=datetime.now(UTC) + timedelta(hours=2))
    assert _rejected(world, event).reason == Reason.CE_TIME_IN_FUTURE


def test_classification_downgrade_is_detected(world: World) -> None:
    """Relabelling a restricted event as public breaks the signature (the extension is signed)."""
    document = json.loads(_referral_event(world).to_structured())
    document["dataclassification"] = "public"
    assert _rejected(world, json.dumps(document).encode()).reason == Reason.SIG_DIGEST_MISMATCH


def test_unsigned_extension_is_dropped_from_verified_event(world: World) -> None:
    document = json.loads(_referral_event(world).to_structured())
    document["routeto"] = "attacker"
    verdict = world.verifier("kemensos").verify_structured(json.dumps(document).encode())
    assert isinstance(verdict, Accepted)
    assert "routeto" not in verdict.event.extensions


def test_dssematerial_with_foreign_payload_type(world: World) -> None:
    event = _referral_event(world)
    envelope = json.loads(base64.b64decode(event.dssematerial or ""))
    envelope["payloadType"] = "application/vnd.in-toto+json"
    document = json.loads(event.to_structured())
    document["dssematerial"] = base64.b64encode(json.dumps(envelope).encode()).decode()
    assert _rejected(world, json.dumps(document).encode()).reason == Reason.SIG_PAYLOAD_TYPE


def test_kafka_value_not_canonical(world: World) -> None:
    record = _referral_event(world).to_kafka()
    reformatted = json.dumps(json.loads(record.value), indent=1).encode()
    verdict = world.verifier("kemensos").verify_kafka(reformatted, record.headers, record.key)
    assert isinstance(verdict, Rejected)
    assert verdict.reason == Reason.CE_DATA_NOT_CANONICAL


def test_kafka_key_must_match_partitionkey(world: World) -> None:
    record = _referral_event(world).to_kafka()
    verdict = world.verifier("kemensos").verify_kafka(record.value, record.headers, b"OTHER-CASE")
    assert isinstance(verdict, Rejected)
    assert verdict.reason == Reason.CE_INVALID_ATTRIBUTE
