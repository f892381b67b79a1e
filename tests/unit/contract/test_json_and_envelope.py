"""Strict parsing and the CloudEvents codecs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.contract.canonical import canonical_json
from gateway.contract.envelope import Envelope, Limits
from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason
from tests.world import World, example


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":1,"a":2}', Reason.PARSE_DUPLICATE_KEY),
        (b'{"a":NaN}', Reason.PARSE_NON_FINITE),
        (b'{"a":-Infinity}', Reason.PARSE_NON_FINITE),
        (b'{"a":1e400}', Reason.PARSE_NON_FINITE),
        (b'{"a":"\xff"}', Reason.PARSE_UTF8),
        (b'{"a":', Reason.PARSE_JSON),
        (b"\xef\xbb\xbf{}", Reason.PARSE_JSON),
        (b"[" * 40 + b"]" * 40, Reason.PARSE_TOO_DEEP),
        (b"[" * 100_000, Reason.PARSE_TOO_DEEP),
        (b'{"n":9007199254740992}', Reason.PARSE_JSON),
    ],
)
def test_strict_parse_rejections(raw: bytes, reason: Reason) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_json(raw)
    assert caught.value.reason == reason


def test_duplicate_key_detail_does_not_echo_the_key() -> None:
    with pytest.raises(GatewayError) as caught:
        parse_json(b'{"Siti Contoh":1,"Siti Contoh":2}')
    assert "Siti" not in caught.value.detail


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=20)
    | st.floats(min_value=-(2.0**53) + 1, max_value=2.0**53 - 1),  # I-JSON's exact range
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json_values)
def test_canonical_json_is_stable_under_reparse(value: object) -> None:
    once = canonical_json(value)
    assert canonical_json(parse_json(once)) == once
    assert canonical_json(json.loads(json.dumps(value, indent=3))) == once


def test_structured_and_kafka_codecs_round_trip_losslessly(world: World) -> None:
    event = world.event(
        "id.trafficking.case.referral",
        example("case.referral", "1.0")[0][1],
        by="kemlu.kbri-kuching",
        recipients=["kemensos"],
    )
    assert Envelope.from_structured(event.to_structured()) == event
    record = event.to_kafka()
    assert record.key == event.partitionkey.encode()
    assert record.value == event.data
    assert Envelope.from_kafka(record.value, record.headers, record.key) == event
    # transport headers that are not CloudEvents attributes are ignored, not folded into the event
    assert (
        Envelope.from_kafka(record.value, [*record.headers, ("traceparent", b"00-ab")], record.key) == event
    )


def _attributes(**overrides: str) -> dict[str, str]:
    attributes = {
        "id": "evt-1",
        "source": "iom",
        "specversion": "1.0",
        "type": "id.trafficking.alert.supply",
        "datacontenttype": "application/json",
        "dataschema": "urn:id.trafficking:schema:alert.supply:1.0",
        "subject": "ALERT-1",
        "time": "2026-11-28T00:00:00Z",
        "partitionkey": "ALERT-1",
        "dataclassification": "internal",
    }
    attributes.update(overrides)
    return {k: v for k, v in attributes.items() if v != "<absent>"}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"id": "<absent>"}, Reason.CE_MISSING_ATTRIBUTE),
        ({"time": "<absent>"}, Reason.CE_MISSING_ATTRIBUTE),
        ({"specversion": "0.3"}, Reason.CE_UNSUPPORTED_SPECVERSION),
        ({"time": "yesterday"}, Reason.CE_INVALID_ATTRIBUTE),
        ({"time": "2026-02-30T00:00:00Z"}, Reason.CE_INVALID_ATTRIBUTE),
        ({"datacontenttype": "text/plain"}, Reason.CE_INVALID_ATTRIBUTE),
        ({"dataclassification": "secret"}, Reason.CE_INVALID_ATTRIBUTE),
        ({"partitionkey": "OTHER"}, Reason.CE_INVALID_ATTRIBUTE),
        ({"source": ""}, Reason.CE_INVALID_ATTRIBUTE),
        ({"Bad-Name": "x"}, Reason.CE_INVALID_ATTRIBUTE),
    ],
)
def test_envelope_profile_rejections(overrides: dict[str, str], reason: Reason) -> None:
    with pytest.raises(GatewayError) as caught:
        Envelope.from_attributes(_attributes(**overrides), b"{}")
    assert caught.value.reason == reason


def test_structured_rejects_data_base64_and_non_objects() -> None:
    document = {**_attributes(), "data_base64": "e30="}
    with pytest.raises(GatewayError) as caught:
        Envelope.from_structured(json.dumps(document).encode())
    assert caught.value.reason == Reason.CE_INVALID_ATTRIBUTE
    with pytest.raises(GatewayError):
        Envelope.from_structured(b"[1,2]")


def test_kafka_duplicate_header_is_rejected() -> None:
    headers = [("ce_" + k, v.encode()) for k, v in _attributes().items()] + [("ce_source", b"kemensos")]
    with pytest.raises(GatewayError) as caught:
        Envelope.from_kafka(b"{}", headers, b"ALERT-1")
    assert caught.value.reason == Reason.CE_INVALID_ATTRIBUTE


def test_size_limit_applies_before_parsing() -> None:
    with pytest.raises(GatewayError) as caught:
        Envelope.from_structured(b"{" + b" " * 2000 + b"}", limits=Limits(max_bytes=1000))
    assert caught.value.reason == Reason.SIZE_EXCEEDED
