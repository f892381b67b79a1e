"""The orjson fast path of canonical_json is byte-identical to the rfc8785 reference implementation."""

from __future__ import annotations

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.contract.canonical import _fast_path_applies, canonical_json, parse_canonical
from gateway.errors import GatewayError, Reason

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text()  # every code point hypothesis can produce, control characters and non-BMP included
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(_values)
def test_canonical_json_equals_the_reference(value: object) -> None:
    try:
        expected = bytes(rfc8785.dumps(value))
    except rfc8785.CanonicalizationError:  # lone surrogates: both must refuse
        with pytest.raises(GatewayError) as caught:
            canonical_json(value)
        assert caught.value.reason == Reason.PARSE_JSON
        return
    assert canonical_json(value) == expected


@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=8), st.text(), max_size=8))
def test_ascii_keyed_string_objects_take_the_fast_path(value: dict[str, str]) -> None:
    assert _fast_path_applies(value)
    assert canonical_json(value) == bytes(rfc8785.dumps(value))


def test_fast_path_declines_what_it_cannot_prove() -> None:
    assert not _fast_path_applies({"\u00e9": 1})  # non-ASCII key: UTF-16 order may differ
    assert not _fast_path_applies([1.5])  # floats: number formatting rules differ in places
    assert not _fast_path_applies(2**53)  # beyond I-JSON's exact integer range
    assert not _fast_path_applies((1, 2))  # not a JSON type


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":1,"a":1}', Reason.PARSE_DUPLICATE_KEY),
        (b'{"a":NaN}', Reason.PARSE_NON_FINITE),
        (b'{"b":1,"a":2}', Reason.CE_DATA_NOT_CANONICAL),
        (b'{"a": 1}', Reason.CE_DATA_NOT_CANONICAL),
        (b"\xff", Reason.PARSE_UTF8),
        (b"[" * 40 + b"]" * 40, Reason.PARSE_TOO_DEEP),
    ],
)
def test_parse_canonical_rejects_with_the_precise_reason(raw: bytes, reason: Reason) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_canonical(raw)
    assert caught.value.reason == reason


def test_parse_canonical_accepts_canonical_bytes() -> None:
    assert parse_canonical(b'{"a":[1,"x",null,true]}') == {"a": [1, "x", None, True]}
