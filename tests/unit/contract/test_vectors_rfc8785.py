"""RFC 8785 (JSON Canonicalization Scheme) examples against ``gateway.contract.canonical.canonical_json``.

Vectors: ``tests/data/vectors/rfc8785-jcs.json``, from the RFC's own source (sections 3.2.2-3.2.4 and
Appendix B); provenance in the file and in ``docs/VECTORS.md``. JCS treats every JSON number as an IEEE 754
double, so number texts are parsed with ``parse_int=float``; Appendix B values are built from their bit
patterns. Values JCS cannot represent (NaN, Infinity) must raise ``GatewayError``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from gateway.contract.canonical import canonical_json
from gateway.errors import GatewayError
from tests.paths import VECTORS

_DOC: dict[str, Any] = json.loads((VECTORS / "rfc8785-jcs.json").read_text(encoding="utf-8"))


def _double(hex_bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(hex_bits))[0]
    return value


def test_section_3_2_2_sample() -> None:
    sample = _DOC["sample"]
    value = json.loads(sample["input"])
    canonical = canonical_json(value)
    assert canonical == sample["canonical"].encode("utf-8")  # 3.2.3
    assert canonical.hex() == sample["canonical_utf8_hex"]  # 3.2.4: the exact UTF-8 bytes


def test_section_3_2_3_sorting_by_utf16_code_units() -> None:
    sorting = _DOC["property_sorting"]
    canonical = canonical_json(json.loads(sorting["input"]))
    pairs = json.loads(canonical, object_pairs_hook=lambda items: items)
    assert [value for _, value in pairs] == sorting["expected_value_order"]
    # Code-point order would put U+1F600 (the emoji) after U+FB33; UTF-16 puts its surrogate 0xD83D first.
    assert [name for name, _ in pairs][-2:] == ["\U0001f600", "\ufb33"]


def test_sorting_is_recursive_and_arrays_keep_their_order() -> None:
    value = {"b": [{"z": 1, "a": 2}, 3], "a": {"y": None, "x": True}}
    assert canonical_json(value) == b'{"a":{"x":true,"y":null},"b":[{"a":2,"z":1},3]}'


_FINITE = [s for s in _DOC["number_samples"] if s["json"] is not None]
_NOT_JSON = [s for s in _DOC["number_samples"] if s["json"] is None]


@pytest.mark.parametrize("sample", _FINITE, ids=[s["ieee754_hex"] for s in _FINITE])
def test_appendix_b_number_serialisation(sample: dict[str, str]) -> None:
    value = _double(sample["ieee754_hex"])
    assert canonical_json(value) == sample["json"].encode("ascii")
    assert canonical_json([value]) == b"[" + sample["json"].encode("ascii") + b"]"


@pytest.mark.parametrize("sample", _NOT_JSON, ids=[s["comment"] for s in _NOT_JSON])
def test_appendix_b_nan_and_infinity_are_errors(sample: dict[str, str]) -> None:
    value = _double(sample["ieee754_hex"])
    for candidate in (value, -value, {"n": value}):
        with pytest.raises(GatewayError):
            canonical_json(candidate)


_TEXTS = _DOC["number_text_samples"]["cases"]


@pytest.mark.parametrize("case", _TEXTS, ids=[c["text"] for c in _TEXTS])
def test_number_texts(case: dict[str, str]) -> None:
    value = json.loads(case["text"], parse_int=float)
    assert canonical_json(value) == case["json"].encode("ascii")


def test_strings_and_literals() -> None:
    assert canonical_json(["\u0008\t\n\u000c\r", "\u001f", '"\\', "/", "\u20ac", None, True, False]) == (
        b'["\\b\\t\\n\\f\\r","\\u001f","\\"\\\\","/","\xe2\x82\xac",null,true,false]'
    )


def test_lone_surrogate_is_an_error() -> None:
    with pytest.raises(GatewayError):
        canonical_json("\udead")
