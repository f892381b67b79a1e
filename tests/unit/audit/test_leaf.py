"""The leaf format: what the notary logs per Kafka record — deterministic, canonical, bounded, and free of
victim data (no data bytes, no key, no sealed block)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from gateway.audit.layout import MAX_ENTRY_SIZE
from gateway.audit.leaf import (
    LEAF_FORMAT,
    MAX_ATTRIBUTE_CHARS,
    MAX_DSSE_CHARS,
    ConsumedRecord,
    Leaf,
    leaf_for_record,
    record_sha256,
)
from gateway.contract.canonical import canonical_json
from gateway.contract.verify import EventVerifier
from gateway.errors import GatewayError, Reason
from tests.unit.audit._synthetic import KBRI, make_records
from tests.world import World, example

_WORLD = World.build()
_VERIFIER = EventVerifier(registry=_WORLD.registry, schemas=_WORLD.schemas)


def _referral_record(**changes: object) -> ConsumedRecord:
    event = _WORLD.event(
        "id.trafficking.case.referral",
        example("case.referral", "1.0")[0][1],
        by=KBRI,
        recipients=["kemensos"],
    )
    key, value, headers = event.to_kafka()
    record = ConsumedRecord(
        topic="xchg.kemlu.kbri-kuching.case.v1",
        partition=2,
        offset=41,
        timestamp=1_900_000_000_000,
        key=key,
        value=value,
        headers=tuple(headers),
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_signed_event_leaf_holds_digests_and_signature_not_data() -> None:
    record = _referral_record(timestamp=int(__import__("time").time() * 1000))
    leaf = leaf_for_record(record, _VERIFIER)
    entry = leaf.encode()
    assert leaf.verdict == "accepted"
    assert leaf.reason is None
    assert leaf.kid == f"{KBRI}-sig-test"
    assert leaf.position == ("xchg.kemlu.kbri-kuching.case.v1", 2, 41)
    assert record.value is not None
    assert leaf.data_sha256 == hashlib.sha256(record.value).hexdigest()
    assert leaf.record_sha256 == record_sha256(record)
    headers = dict(record.headers)
    assert leaf.id == headers["ce_id"].decode()
    assert leaf.source == KBRI
    assert leaf.type == "id.trafficking.case.referral"
    assert leaf.dssematerial == headers["ce_dssematerial"].decode()
    assert leaf.dead_letter is None
    # no victim data: not the data bytes, not the key (case id), not one string of the payload or sealed block
    assert record.value not in entry
    assert record.key is not None
    assert record.key not in entry
    data = json.loads(record.value)
    assert "sealed" in data
    kept = " ".join(v for v in (leaf.id, leaf.source, leaf.type, leaf.time, leaf.dataschema) if v)
    leaked = [s for s in _strings(data) if len(s) >= 6 and s.encode() in entry and s not in kept]
    assert leaked == []
    assert json.loads(entry)["format"] == LEAF_FORMAT


def test_leaf_is_deterministic_and_round_trips() -> None:
    record = _referral_record()
    first = leaf_for_record(record, _VERIFIER).encode()
    assert leaf_for_record(record, _VERIFIER).encode() == first
    assert canonical_json(json.loads(first)) == first
    assert Leaf.decode(first).encode() == first


def test_verdict_uses_the_record_timestamp_as_now() -> None:
    # the event is signed "now"; a record timestamped an hour earlier makes it an event from the future
    record = _referral_record()
    early = replace(record, timestamp=int(__import__("time").time() * 1000) - 3_600_000)
    leaf = leaf_for_record(early, _VERIFIER)
    assert (leaf.verdict, leaf.reason, leaf.kid) == ("rejected", "ce.time-in-future", None)


def test_rejected_records_tombstones_and_dead_letters() -> None:
    records = make_records(_WORLD, 60)
    leaves = [leaf_for_record(r, _VERIFIER) for r in records]
    junk = leaves[5]
    assert (junk.verdict, junk.reason) == ("rejected", "sig.digest-mismatch")  # headers of another event
    tombstone = leaves[7]
    assert tombstone.data_sha256 is None
    assert tombstone.verdict == "rejected"
    dlq = leaves[11]
    assert dlq.topic == "xchg.kemensos.dlq.v1"
    assert dlq.dead_letter is not None
    assert dlq.dead_letter["reason"] == "seal.open-failed"
    assert dlq.dead_letter["by"] == "kemensos"
    assert "free text" not in dlq.encode().decode()  # xchg-detail is never logged
    for leaf in leaves:
        assert Leaf.decode(leaf.encode()) == leaf


def test_header_derived_strings_are_bounded_and_unambiguous() -> None:
    base = _referral_record()
    headers = [(k, v) for k, v in base.headers if k not in ("ce_id", "ce_source", "ce_dssematerial")]
    headers += [
        ("ce_id", b"x" * (MAX_ATTRIBUTE_CHARS + 1)),  # too long
        ("ce_source", b"\xff\xfe"),  # not UTF-8
        ("ce_source", b"iom"),  # ... and repeated
        ("ce_dssematerial", "ünïcode".encode()),  # not printable ASCII
    ]
    leaf = leaf_for_record(replace(base, headers=tuple(headers)), _VERIFIER)
    assert (leaf.id, leaf.source, leaf.dssematerial) == (None, None, None)
    assert leaf.verdict == "rejected"


def test_worst_case_leaf_fits_an_entry() -> None:
    nasty = ("\x01" * MAX_ATTRIBUTE_CHARS).encode()  # each escapes to \u0001: six bytes
    headers = [(f"ce_{name}", nasty) for name in ("id", "source", "type", "time", "dataschema")]
    headers += [("ce_dssematerial", b"A" * MAX_DSSE_CHARS)]
    headers += [
        (name, nasty)
        for name in (
            "xchg-reason",
            "xchg-origin-topic",
            "xchg-origin-partition",
            "xchg-origin-offset",
            "xchg-dead-lettered-by",
            "xchg-dead-lettered-at",
        )
    ]
    record = ConsumedRecord(
        topic="xchg." + "t" * 240,
        partition=2**31,
        offset=2**53 - 1,
        timestamp=2**53 - 1,
        key=b"k" * 10_000,
        value=b"v" * 100_000,
        headers=tuple(headers),
    )
    entry = leaf_for_record(record, _VERIFIER).encode()
    assert len(entry) < MAX_ENTRY_SIZE
    assert Leaf.decode(entry).id == "\x01" * MAX_ATTRIBUTE_CHARS


def test_record_digest_binds_headers_key_and_value() -> None:
    record = _referral_record()
    digest = record_sha256(record)
    assert record_sha256(replace(record, headers=(*record.headers, ("trace", b"1")))) != digest
    assert record_sha256(replace(record, key=b"other")) != digest
    assert record_sha256(replace(record, value=None)) != digest
    # the documented encoding, spelled out
    document = {
        "headers": [[k, None if v is None else base64.b64encode(v).decode()] for k, v in record.headers],
        "key": base64.b64encode(record.key or b"").decode(),
        "value": base64.b64encode(record.value or b"").decode(),
    }
    assert digest == hashlib.sha256(canonical_json(document)).hexdigest()


GOLDEN_RECORD = ConsumedRecord(
    topic="xchg.iom.alert.v1",
    partition=0,
    offset=7,
    timestamp=1_600_000_000_000,
    timestamp_type=0,
    key=b"ALERT-1",
    value=b'{"a":1}',
    headers=(("ce_id", b"e-1"), ("ce_source", b"iom"), ("ce_type", b"t")),
)
GOLDEN_ENTRY = (
    b'{"data_sha256":"015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862","dataschema":null,'
    b'"dead_letter":null,"dssematerial":null,"format":"xchg-audit-leaf/v1","id":"e-1","kid":null,'
    b'"offset":7,"partition":0,"reason":"ce.missing-attribute",'
    b'"record_sha256":"51e2ab4ac37dd6faf684a369e4244a41f5dd7661bd2a6a6381ffbb6e5b8ad0c0","source":"iom","time":null,"timestamp":1600000000000,"timestamp_type":0,'
    b'"topic":"xchg.iom.alert.v1","type":"t","verdict":"rejected"}'
)


def test_golden_entry() -> None:
    """The exact bytes of one leaf (docs/AUDIT.md section 10 shows the same example)."""
    entry = leaf_for_record(GOLDEN_RECORD, _VERIFIER).encode()
    assert hashlib.sha256(b'{"a":1}').hexdigest().startswith("015abd7f")
    assert entry == GOLDEN_ENTRY
    record = (
        b'{"headers":[["ce_id","ZS0x"],["ce_source","aW9t"],["ce_type","dA=="]],'
        b'"key":"QUxFUlQtMQ==","value":"eyJhIjoxfQ=="}'
    )
    assert record_sha256(GOLDEN_RECORD) == hashlib.sha256(record).hexdigest()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), "members"),
        (lambda d: d.pop("kid"), "members"),
        (lambda d: d.update(format="xchg-audit-leaf/v2"), "format"),
        (lambda d: d.update(offset="7"), "type"),
        (lambda d: d.update(offset=-1), "type"),
        (lambda d: d.update(data_sha256="AB" * 32), "type"),
        (lambda d: d.update(verdict="accepted"), "agree"),
        (lambda d: d.update(dead_letter={"reason": "x"}), "type"),
    ],
)
def test_decode_rejects_what_the_notary_never_writes(mutate: object, message: str) -> None:
    document = json.loads(leaf_for_record(GOLDEN_RECORD, _VERIFIER).encode())
    mutate(document)  # type: ignore[operator]
    with pytest.raises(GatewayError) as excinfo:
        Leaf.decode(canonical_json(document))
    assert excinfo.value.reason == Reason.LEAF_MALFORMED
    assert message in excinfo.value.detail


def test_decode_rejects_non_canonical_bytes() -> None:
    entry = leaf_for_record(GOLDEN_RECORD, _VERIFIER).encode()
    for variant in (entry + b"\n", b" " + entry, json.dumps(json.loads(entry)).encode(), b"[]", b"\xff"):
        with pytest.raises(GatewayError) as excinfo:
            Leaf.decode(variant)
        assert excinfo.value.reason == Reason.LEAF_MALFORMED


def test_the_notary_opens_nothing() -> None:
    member = _WORLD.members["kemensos"]
    with pytest.raises(GatewayError):
        leaf_for_record(GOLDEN_RECORD, _WORLD.verifier("kemensos"))
    assert member.sealing is not None


def test_records_dump_lines_round_trip() -> None:
    for record in make_records(_WORLD, 30):
        assert ConsumedRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    with pytest.raises(GatewayError):
        ConsumedRecord.from_json({"topic": "t"})


def test_the_verdict_binds_the_event_to_the_topic_it_was_read_from() -> None:
    """An event injected into another party's topic is rejected in the log too (authz.topic-mismatch); a
    dead-lettered copy is judged against the topic its gateway read the original from."""
    assert leaf_for_record(_referral_record(), _VERIFIER).verdict == "accepted"
    foreign = leaf_for_record(_referral_record(topic="xchg.iom.case.v1"), _VERIFIER)
    assert (foreign.verdict, foreign.reason) == ("rejected", "authz.topic-mismatch")
    original = _referral_record()
    copy = replace(
        original,
        topic="xchg.kemensos.dlq.v1",
        headers=(*original.headers, ("xchg-reason", b"sink.failed"),
                 ("xchg-origin-topic", original.topic.encode())),
    )  # fmt: skip
    assert leaf_for_record(copy, _VERIFIER).verdict == "accepted"
    moved = replace(copy, headers=(*original.headers, ("xchg-origin-topic", b"xchg.iom.case.v1")))
    assert leaf_for_record(moved, _VERIFIER).reason == "authz.topic-mismatch"
