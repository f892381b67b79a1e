"""The audit's faster leaf helpers decide exactly as the straightforward versions they replaced.

* ``_dssematerial`` checks "printable ASCII" with ``bytes.translate`` instead of a per-byte generator;
* ``_unb64`` calls ``binascii.a2b_base64(strict_mode=True)``, which is what
  ``base64.b64decode(validate=True)`` does on Python 3.11+;
* ``Leaf.decode`` compares the entry with the canonical form of the checked document instead of
  re-encoding a ``Leaf`` (the same members and values), skipping the fast-path walk those checks imply.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json

import pytest

from gateway.audit.leaf import MAX_DSSE_CHARS, Leaf, _by_name, _dssematerial, _unb64, leaf_for_record
from gateway.contract.canonical import canonical_json
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError
from tests.unit.audit._synthetic import make_records
from tests.world import World

_WORLD = World.build()
_ENTRIES = [
    leaf_for_record(record, EventVerifier(registry=_WORLD.registry, schemas=_WORLD.schemas)).encode()
    for record in make_records(_WORLD, 60)  # signed, junk, a tombstone, a dead-lettered copy
]


def _old_dssematerial(value: bytes | None) -> str | None:
    if value is None:
        return None
    if not 0 < len(value) <= MAX_DSSE_CHARS or any(byte < 0x21 or byte > 0x7E for byte in value):
        return None
    return value.decode("ascii")


def test_dssematerial_printable_check() -> None:
    values: list[bytes | None] = [None, b"", b"A" * MAX_DSSE_CHARS, b"A" * (MAX_DSSE_CHARS + 1)]
    values += [b"ab" + bytes([byte]) + b"cd" for byte in range(256)]
    for value in values:
        headers = _by_name([("ce_dssematerial", value), ("ce_id", b"x")])
        assert _dssematerial(headers) == _old_dssematerial(value), value
    assert _dssematerial(_by_name([("ce_dssematerial", b"a"), ("ce_dssematerial", b"a")])) is None


def _outcome(decode: object, text: str) -> tuple[str, object]:
    try:
        return ("ok", decode(text))  # type: ignore[operator]
    except ValueError as exc:  # binascii.Error is a ValueError
        return ("error", type(exc))


def test_strict_base64_is_b64decode_validate() -> None:
    alphabet = "AQw+/=-_ \né"
    for length in range(6):
        for letters in itertools.product(alphabet, repeat=length):
            text = "".join(letters)
            expected = _outcome(lambda t: base64.b64decode(t, validate=True), text)
            assert _outcome(_unb64, text) == expected, text
    assert _unb64(None) is None
    assert _outcome(_unb64, "QQ") == ("error", binascii.Error)


def _variants(entry: bytes) -> list[bytes]:
    """Spellings of the same JSON value (and some not): only the canonical one is a leaf."""
    document = json.loads(entry)
    swapped = dict(reversed(list(document.items())))
    text = entry.decode()
    return [
        entry,
        json.dumps(document, separators=(",", ":")).encode(),  # the parsed order: sorted already
        json.dumps(swapped, separators=(",", ":")).encode(),
        json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(),
        json.dumps(document, sort_keys=True, separators=(", ", ":")).encode(),
        text.replace('"partition":', '"partition": ').encode(),
        text.replace('"format":"xchg', '"format":"\\u0078chg').encode(),
        text.replace(f'"offset":{document["offset"]}', f'"offset":{document["offset"]}.0').encode(),
        text.replace(f'"offset":{document["offset"]}', f'"offset":{document["offset"]}e0').encode(),
        entry + b" ",
    ]


def _old_decode_accepts(variant: bytes) -> bool:
    """The former rule: the members check out and re-encoding the Leaf gives the same bytes."""
    try:
        leaf = Leaf.decode(canonical_json(json.loads(variant)))
    except (GatewayError, ValueError):
        return False
    return leaf.encode() == variant


@pytest.mark.parametrize("entry", _ENTRIES[:12])
def test_decode_accepts_exactly_the_canonical_spelling(entry: bytes) -> None:
    for variant in _variants(entry):
        try:
            Leaf.decode(variant)
            accepted = True
        except GatewayError:
            accepted = False
        assert accepted == _old_decode_accepts(variant), variant
        assert accepted == (variant == entry)


def test_every_leaf_kind_round_trips() -> None:
    for entry in _ENTRIES:
        assert Leaf.decode(entry).encode() == entry
