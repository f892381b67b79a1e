"""Dead-letter records always fit: the full copy when it can, else a bounded record (digests, first bytes)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.bus.deadletter import (
    DEFAULT_TOPIC_MAX_MESSAGE_BYTES,
    DLQ_HEADERS,
    MIN_RECORD_BYTES,
    DeadLetterLimits,
    dead_letter_record,
    record_size,
)

ORIGIN = ("xchg.kemlu.kbri-kuching.case.v1", 3, 41)
HEADERS = [("ce_id", b"evt-1"), ("ce_source", b"kemlu.kbri-kuching"), ("ce_type", b"id.trafficking.x")]


def _letter(value: bytes, max_bytes: int, headers: list[tuple[str, bytes]] = HEADERS):  # type: ignore[no-untyped-def]
    return dead_letter_record(
        key=b"KBRI-KCH-2020-000123", value=value, headers=headers, reason="size.exceeded",
        detail="1048000 bytes exceeds the limit of 262144", origin=ORIGIN, by="kemensos",
        at="2026-12-07T12:00:00Z", max_bytes=max_bytes,
    )  # fmt: skip


def _header(headers: list[tuple[str, bytes]], name: str) -> bytes:
    [value] = [v for k, v in headers if k == name]
    return value


def test_a_record_that_fits_is_copied_whole_with_the_reason_headers() -> None:
    letter = _letter(b'{"a":1}', 1_048_576)
    assert not letter.bounded
    assert letter.value == b'{"a":1}'
    assert letter.headers[: len(HEADERS)] == HEADERS
    assert [name for name, _ in letter.headers[len(HEADERS) :]] == list(DLQ_HEADERS)


def test_a_record_near_the_broker_limit_becomes_a_bounded_record_that_fits() -> None:
    """The campaign's record: just under 1 MiB, fine for the broker, too large once headers are added."""
    value = b"x" * (1_048_576 - 400)
    bound = DeadLetterLimits().max_record_bytes
    assert record_size(b"KBRI-KCH-2020-000123", value, HEADERS) <= bound  # the original fitted
    letter = _letter(value, bound)
    assert letter.bounded
    assert record_size(letter.key, letter.value, letter.headers) <= bound
    assert letter.value
    assert value.startswith(letter.value)
    assert _header(letter.headers, "xchg-reason") == b"size.exceeded"
    assert _header(letter.headers, "xchg-truncated") == b"1"
    assert _header(letter.headers, "xchg-original-value-sha256") == hashlib.sha256(value).hexdigest().encode()
    assert _header(letter.headers, "ce_id") == b"evt-1"  # what it was stays readable


@settings(max_examples=60, deadline=None)
@given(
    value=st.binary(max_size=20_000),
    headers=st.lists(st.tuples(st.text(max_size=300), st.binary(max_size=3_000)), max_size=12),
    max_bytes=st.integers(min_value=MIN_RECORD_BYTES, max_value=16_384),
)
def test_a_dead_letter_never_exceeds_its_bound(
    value: bytes, headers: list[tuple[str, bytes]], max_bytes: int
) -> None:
    letter = _letter(value, max_bytes, headers)
    assert record_size(letter.key, letter.value, letter.headers) <= max_bytes
    assert _header(letter.headers, "xchg-origin-offset") == b"41"


def test_limits_follow_the_producer_and_the_topic_and_shrink_on_refusal() -> None:
    limits = DeadLetterLimits()
    assert limits.max_record_bytes == min(1_048_576, DEFAULT_TOPIC_MAX_MESSAGE_BYTES)
    limits.topic_max_message_bytes = 200_000
    assert limits.max_record_bytes == 200_000
    limits.max_request_bytes = 100_000
    assert limits.max_record_bytes == 100_000
    assert limits.shrink()
    assert limits.max_record_bytes == 50_000
    while limits.shrink():
        pass
    assert limits.max_record_bytes == MIN_RECORD_BYTES


@pytest.mark.parametrize("max_bytes", [MIN_RECORD_BYTES, 65_536])
def test_many_large_headers_are_dropped_before_the_reason(max_bytes: int) -> None:
    headers = [(f"h{i}", b"v" * 2000) for i in range(200)]
    letter = _letter(b"{}", max_bytes, headers)
    assert letter.bounded
    assert _header(letter.headers, "xchg-reason") == b"size.exceeded"
    assert record_size(letter.key, letter.value, letter.headers) <= max_bytes
