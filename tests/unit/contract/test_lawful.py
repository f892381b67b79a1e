"""The lawful-basis rule of referrals: refused at publish with a reason code, and by every consumer."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.contract.sign import EventSigner, build_event
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason, Rejected
from tests.world import World, example

KBRI = "kemlu.kbri-kuching"


def _referral(**consent: Any) -> dict[str, Any]:
    payload = copy.deepcopy(example("case.referral", "1.0")[0][1])  # consent-based, scope covers referral
    payload["consent"].update(consent)
    return payload


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"con_Consent": False}, "refused or withdrawn"),
        ({"withdrawn": True}, "refused or withdrawn"),
        ({"scope": ["data-sharing"]}, "does not cover 'referral'"),
    ],
)
def test_a_referral_on_consent_without_consent_is_refused_at_publish(
    world: World, change: dict[str, Any], detail: str
) -> None:
    with pytest.raises(GatewayError) as caught:
        world.event("id.trafficking.case.referral", _referral(**change), by=KBRI, recipients=["kemensos"])
    assert caught.value.reason is Reason.PRIVACY_NO_LEGAL_BASIS
    assert detail in caught.value.detail


def test_another_ground_of_article_20_carries_a_referral_without_consent(world: World) -> None:
    payload = {**_referral(con_Consent=False), "legal_basis": "vital-interest"}
    event = world.event("id.trafficking.case.referral", payload, by=KBRI, recipients=["kemensos"])
    assert isinstance(world.verifier("kemensos").verify_structured(event.to_structured()), Accepted)


def test_a_childs_referral_on_consent_needs_a_guardian(world: World) -> None:
    payload = {**_referral(given_by="self"), "child": {"is_minor": True}}
    with pytest.raises(GatewayError, match="parent or guardian") as caught:
        world.event("id.trafficking.case.referral", payload, by=KBRI, recipients=["kemensos"])
    assert caught.value.reason is Reason.PRIVACY_NO_LEGAL_BASIS
    payload["consent"]["given_by"] = "guardian"
    world.event("id.trafficking.case.referral", payload, by=KBRI, recipients=["kemensos"])


def test_every_consumer_rejects_a_referral_signed_around_the_rule(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile or outdated producer that skips the check: every consumer rejects the record."""
    from gateway.contract import sign  # noqa: PLC0415

    monkeypatch.setattr(sign, "check_lawful_basis", lambda *_: None)
    signer: EventSigner = world.members[KBRI].signer
    event = build_event(
        signer=signer,
        registry=world.registry,
        schemas=world.schemas,
        event_type="id.trafficking.case.referral",
        data=_referral(con_Consent=False),
        recipients=["kemensos"],
    )
    for party in ("kemensos", "iom", None):  # a recipient, a reader that is not one, the auditor's view
        verdict = world.verifier(party).verify_structured(event.to_structured())
        assert isinstance(verdict, Rejected)
        assert verdict.reason is Reason.PRIVACY_NO_LEGAL_BASIS
