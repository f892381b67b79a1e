"""Hostile and broken single inputs to the message contract end in a reason code, never an exception.

The examples come from the black-box campaign of issue 18 (THREAT_MODEL.md, "Poison inputs"): a ``time``
with no UTC form (``ce_time`` edited in a Kafka header, no key needed), a signed time before year 1000, a
null record key, a control character in the event id, an event read from another party's topic, a payload
party field naming another party than the signer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.contract.canonical import canonical_json
from gateway.contract.envelope import Envelope
from gateway.contract.instants import TimeWindow, format_utc, parse_instant, utc_text
from gateway.contract.policy import topic_for
from gateway.contract.sign import sign_envelope
from gateway.contract.verify import Accepted, Rejected
from gateway.errors import GatewayError, Reason
from tests.world import World, example, recent

KCH = "kemlu.kbri-kuching"
ALERT = "id.trafficking.alert.network"
SUPPLY = "id.trafficking.alert.supply"
TOPIC = topic_for(KCH, "alert", 1)
UNREPRESENTABLE = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0000-06-01T00:00:00Z")


def _alert(world: World, **kwargs: Any) -> Envelope:
    (_, payload), *_ = example("alert.network", "1.0")
    return world.event(ALERT, payload, by=KCH, now=recent(1), **kwargs)


def _kafka_verdict(
    world: World, event: Envelope, *, edit: dict[str, bytes] | None = None, key: bytes | None = b"<same>"
) -> Accepted | Rejected:
    record = event.to_kafka()
    headers = [(name, (edit or {}).get(name, value)) for name, value in record.headers]
    return world.verifier("kemensos").verify_kafka(
        record.value, headers, record.key if key == b"<same>" else key, topic=TOPIC
    )


# ---- times ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", UNREPRESENTABLE)
def test_a_time_without_utc_form_is_time_out_of_range(value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_instant(value)
    assert caught.value.reason is Reason.TIME_OUT_OF_RANGE


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2026-01-01T07:00:00+07:00", "2026-01-01T00:00:00Z"),
        ("0999-05-01T00:00:00Z", "0999-05-01T00:00:00Z"),  # strftime("%Y") writes "999"
        ("0001-01-01T00:00:00-01:00", "0001-01-01T01:00:00Z"),
        ("2026-01-01T00:00:00.123456789+00:00", "2026-01-01T00:00:00.123456789Z"),
    ],
)
def test_utc_text_has_four_digit_years_and_keeps_the_fraction(value: str, utc: str) -> None:
    assert utc_text(value) == utc


def test_window_edges_and_the_latest_cursor() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    window = TimeWindow(max_age=timedelta(days=10), max_skew=timedelta(minutes=5))
    assert window.problem(now + timedelta(minutes=5), now) is None
    assert window.problem(now - timedelta(days=10), now) is None
    assert window.problem(now + timedelta(minutes=5, seconds=1), now) is not None
    assert window.problem(now - timedelta(days=10, seconds=1), now) is not None
    assert window.latest(now) == now + timedelta(minutes=5)
    with pytest.raises(GatewayError) as caught:
        window.check(datetime(1, 1, 1, tzinfo=UTC), now)
    assert caught.value.reason is Reason.TIME_OUT_OF_RANGE
    # the edges never overflow, whatever "now" a replay passes in
    assert TimeWindow().latest(datetime.max.replace(tzinfo=UTC)) == datetime.max.replace(tzinfo=UTC)
    assert format_utc(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0999-01-02T03:04:05Z"


@pytest.mark.parametrize("value", UNREPRESENTABLE)
def test_edited_ce_time_header_is_rejected_not_raised(world: World, value: str) -> None:
    verdict = _kafka_verdict(world, _alert(world), edit={"ce_time": value.encode()})
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.TIME_OUT_OF_RANGE


def test_signed_time_before_year_1000_is_out_of_range(world: World) -> None:
    event = _alert(world)
    attributes = {k: v for k, v in event.attributes().items() if k not in ("dssematerial", "signedextattrs")}
    attributes["time"] = "0999-12-31T23:00:00Z"
    signed = sign_envelope(Envelope.from_attributes(attributes, event.data), world.members[KCH].signer)
    verdict = _kafka_verdict(world, signed)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.TIME_OUT_OF_RANGE


def test_old_events_are_out_of_range_recent_ones_accepted(world: World) -> None:
    event = _alert(world)
    verifier = world.verifier("kemensos")
    record = event.to_kafka()
    later = datetime.now(UTC) + timedelta(days=3661)
    verdict = verifier.verify_kafka(record.value, record.headers, record.key, now=later, topic=TOPIC)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.TIME_OUT_OF_RANGE
    assert isinstance(verifier.verify_kafka(record.value, record.headers, record.key, topic=TOPIC), Accepted)


# ---- binding and hygiene ------------------------------------------------------------------------------


def test_a_null_record_key_is_rejected(world: World) -> None:
    verdict = _kafka_verdict(world, _alert(world), key=None)
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.CE_INVALID_ATTRIBUTE
    assert "no key" in verdict.detail


@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f", "\u0085", "\u009f"])
def test_control_characters_in_the_id_are_refused_by_signer_and_verifier(world: World, char: str) -> None:
    with pytest.raises(GatewayError) as caught:
        _alert(world, event_id=f"evt{char}1")
    assert caught.value.reason is Reason.CE_INVALID_ATTRIBUTE
    verdict = _kafka_verdict(world, _alert(world), edit={"ce_id": f"evt{char}1".encode()})
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.CE_INVALID_ATTRIBUTE
    assert "control character" in verdict.detail


def test_an_event_read_from_another_partys_topic_is_rejected(world: World) -> None:
    record = _alert(world).to_kafka()
    verifier = world.verifier("kemensos")
    for topic in (topic_for("iom", "alert", 1), topic_for(KCH, "case", 1), topic_for(KCH, "alert", 2)):
        verdict = verifier.verify_kafka(record.value, record.headers, record.key, topic=topic)
        assert isinstance(verdict, Rejected)
        assert verdict.reason is Reason.AUTHZ_TOPIC_MISMATCH


def _supply() -> dict[str, Any]:
    [payload] = [p for path, p in example("alert.supply", "1.0") if "iom-2500" in path.name]
    return payload


def test_party_fields_must_name_the_signer(world: World) -> None:
    payload = _supply()
    assert payload["from_party"] == "iom"
    assert world.schemas.latest(SUPPLY).party_fields == ("from_party",)
    with pytest.raises(GatewayError) as caught:  # the signer refuses to speak for another party
        world.event(SUPPLY, payload, by="kemensos")
    assert caught.value.reason is Reason.AUTHZ_PARTY_MISMATCH
    assert "from_party" in caught.value.detail
    assert "iom" not in caught.value.detail

    honest = world.event(SUPPLY, payload, by="iom")  # a hostile producer signs it anyway:
    attributes = {k: v for k, v in honest.attributes().items() if k not in ("dssematerial", "signedextattrs")}
    attributes["source"] = "kemensos"
    forged = sign_envelope(
        Envelope.from_attributes(attributes, canonical_json(payload)), world.members["kemensos"].signer
    )
    verdict = world.verifier("kemlu.kbri-kuching").verify_structured(forged.to_structured())
    assert isinstance(verdict, Rejected)
    assert verdict.reason is Reason.AUTHZ_PARTY_MISMATCH
    accepted = world.verifier("kemlu.kbri-kuching").verify_structured(honest.to_structured())
    assert isinstance(accepted, Accepted)


def test_every_party_field_in_the_schemas_is_declared_or_deliberately_free(world: World) -> None:
    """The x-party review of issue 18: which ``*_party`` properties name the signer, per schema."""
    bound = {schema.name: schema.party_fields for schema in world.schemas.schemas() if schema.party_fields}
    assert bound == {"alert.shelter-capacity": ("operator_party",), "alert.supply": ("from_party",)}
