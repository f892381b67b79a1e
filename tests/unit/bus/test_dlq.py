"""A dead-letter topic as entries (gateway/bus/dlq.py) and the selection `gateway dlq` applies (issue 13).

No broker: :class:`DeadLetter` is built as :func:`read_dead_letters` builds it from a record. Checked: the
summary `gateway dlq list` prints never carries the value; the original record a re-drive verifies again is
the original key, value and headers, without the reason headers, read from its origin position; a bounded
copy cannot be re-driven from the DLQ; selections by position, reason, time, origin and source; the purge
prefix stops at the first younger dead letter of each partition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.bus.dlq import DeadLetter, Selection
from gateway.cli.delivery import _prefix_before, parse_when
from gateway.errors import GatewayError

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
VALUE = b'{"identity": {"full_name": "Siti Example"}}'  # synthetic: what a rejected record may hold


def letter(
    offset: int,
    *,
    reason: str = "sink.failed",
    at: datetime = T0,
    origin: str = "xchg.kemlu.kbri-kuching.case.v1",
    partition: int = 0,
    bounded: bool = False,
) -> DeadLetter:
    headers: list[tuple[str, bytes | None]] = [
        ("ce_id", f"ev-{offset}".encode()),
        ("ce_source", b"kemlu.kbri-kuching"),
        ("ce_type", b"id.trafficking.case.referral"),
        ("xchg-reason", reason.encode()),
        ("xchg-detail", b"sink kemensos-case-system: HTTP 503"),
        ("xchg-origin-topic", origin.encode()),
        ("xchg-origin-partition", b"2"),
        ("xchg-origin-offset", str(100 + offset).encode()),
        ("xchg-dead-lettered-by", b"kemensos"),
        ("xchg-dead-lettered-at", at.strftime("%Y-%m-%dT%H:%M:%SZ").encode()),
    ]
    if bounded:
        headers.append(("xchg-truncated", b"1"))
    return DeadLetter(
        topic="xchg.kemensos.dlq.v1", partition=partition, offset=offset, timestamp=0,
        key=b"KBRI-KCH-2020-000123", value=VALUE, headers=tuple(headers),
    )  # fmt: skip


def test_the_listing_never_carries_the_value_and_the_original_is_what_was_read() -> None:
    entry = letter(7)
    summary = entry.summary(T0 + timedelta(hours=3))
    assert summary["position"] == "0:7"
    assert summary["reason"] == "sink.failed"
    assert summary["origin"] == "xchg.kemlu.kbri-kuching.case.v1:2:107"
    assert summary["age_seconds"] == 3 * 3600
    assert "Siti" not in repr(summary)
    assert "Siti" not in repr(entry)  # nor in its repr (logs, tracebacks)
    original = entry.original()
    assert (original.topic, original.partition, original.offset) == (
        "xchg.kemlu.kbri-kuching.case.v1",
        2,
        107,
    )
    assert original.value == VALUE
    assert original.key == b"KBRI-KCH-2020-000123"
    assert [name for name, _ in original.headers] == ["ce_id", "ce_source", "ce_type"]


def test_a_bounded_copy_is_not_redriven_from_the_dead_letter_topic() -> None:
    with pytest.raises(GatewayError, match="bounded copy"):
        letter(1, bounded=True).original()


def test_selections() -> None:
    letters = [
        letter(0, reason="sink.failed", at=T0),
        letter(1, reason="sig.invalid", at=T0 + timedelta(hours=1)),
        letter(2, reason="sink.failed", at=T0 + timedelta(hours=2), origin="xchg.iom.case.v1"),
    ]

    def picked(selection: Selection) -> list[int]:
        return [entry.offset for entry in letters if selection(entry)]

    assert picked(Selection()) == [0, 1, 2]
    assert Selection().everything
    assert picked(Selection(reasons=frozenset({"sink.failed"}))) == [0, 2]
    assert picked(Selection(positions=frozenset({(0, 1)}))) == [1]
    assert picked(Selection(since=T0 + timedelta(minutes=30))) == [1, 2]
    assert picked(Selection(until=T0 + timedelta(hours=2))) == [0, 1]
    assert picked(Selection(origin="xchg.kemlu.*.case.v1")) == [0, 1]
    assert picked(Selection(source="iom")) == []


def test_purge_cuts_each_partition_before_its_first_younger_dead_letter() -> None:
    before = T0 + timedelta(hours=2)
    letters = [
        letter(0, at=T0), letter(1, at=T0 + timedelta(hours=3)), letter(2, at=T0),  # partition 0
        letter(0, at=T0, partition=1), letter(1, at=T0 + timedelta(hours=1), partition=1),  # partition 1
    ]  # fmt: skip
    kept = [(entry.partition, entry.offset) for entry in _prefix_before(letters, before)]
    assert kept == [(0, 0), (1, 0), (1, 1)]  # 0:2 is old but after a younger one: DeleteRecords cuts a prefix


def test_times_are_instants_or_ages() -> None:
    now = T0
    assert parse_when("2h", now) == T0 - timedelta(hours=2)
    assert parse_when("30d", now) == T0 - timedelta(days=30)
    assert parse_when("2026-12-01T06:00:00Z") == T0 - timedelta(hours=2)
    with pytest.raises(GatewayError):
        parse_when("yesterday")
