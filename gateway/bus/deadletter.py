"""The dead-letter record: the rejected record as it was, plus reason headers — bounded so it always fits.

Why bounded: a record just under the broker's size limit is rejected by the reader (``size.exceeded`` above
``limits.max_bytes``), and its copy *plus* the reason headers is then over the producer's
``max_request_size`` or the dead-letter topic's ``max.message.bytes``: the produce fails the same way every
time, and a dead-letter write that is retried until it lands stops the reader for good. So
:func:`dead_letter_record` builds

* the **full copy** (original key, value and headers, then :data:`DLQ_HEADERS`) when its size, as the Kafka
  client computes it (``DefaultRecordBatchBuilder.estimate_size_in_bytes``: one record in its own batch),
  is within :attr:`DeadLetterLimits.max_record_bytes`;
* otherwise a **bounded record**: the key (cut to :data:`MAX_KEY_BYTES`), the original headers each cut to
  :data:`MAX_HEADER_VALUE_BYTES` while they fit, the reason headers, ``xchg-truncated: 1``, the original
  sizes and SHA-256 digests of the original key, value and header list (``xchg-original-*``), and the first
  bytes of the value, as many as fit. What was dropped can be matched to the original record by digest
  (the audit log holds the original's digest too, docs/AUDIT.md).

:class:`DeadLetterLimits` derives the bound from the two limits that apply to a produce: the producer's
``max_request_size`` (:attr:`gateway.bus.kafka.KafkaSettings.max_request_bytes`) and the topic's
``max.message.bytes`` (read from the cluster with :func:`gateway.bus.admin.max_message_bytes`; Kafka's
default of 1,048,588 bytes when the cluster does not say, as the embedded broker does not). Both bound a
record *batch*, and the estimate includes the batch header, so a record within the bound is accepted by
both. A produce refused for size all the same (a broker with a lower ``message.max.bytes``) halves the bound
and builds the bounded record again (:meth:`DeadLetterLimits.shrink`), down to :data:`MIN_RECORD_BYTES`.

:class:`DeadLetterWriter` is how the subscriber writes them: any other failure of the produce (the broker is
away) is retried with backoff until the broker acknowledges — a record is never skipped — with
:attr:`DeadLetterWriter.stalled` saying why meanwhile (``/readyz`` check ``dead-letters``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

import structlog
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from prometheus_client import Counter

from gateway.contract.instants import format_utc
from gateway.errors import Rejected

__all__ = [
    "DEFAULT_TOPIC_MAX_MESSAGE_BYTES",
    "DLQ_HEADERS",
    "MAX_HEADER_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "MIN_RECORD_BYTES",
    "DeadLetter",
    "DeadLetterLimits",
    "DeadLetterWriter",
    "dead_letter_record",
    "record_size",
]

_log = structlog.get_logger(__name__)

#: Headers added to a dead-lettered record, in this order, after the original headers.
DLQ_HEADERS: Final = (
    "xchg-reason",
    "xchg-detail",
    "xchg-origin-topic",
    "xchg-origin-partition",
    "xchg-origin-offset",
    "xchg-dead-lettered-by",
    "xchg-dead-lettered-at",
)
#: Headers added only to a bounded record (after :data:`DLQ_HEADERS`).
BOUNDED_HEADERS: Final = (
    "xchg-truncated",
    "xchg-original-size",
    "xchg-original-key-sha256",
    "xchg-original-value-sha256",
    "xchg-original-headers-sha256",
)
#: Kafka's default ``message.max.bytes`` (broker) and ``max.message.bytes`` (topic): 1 MiB + 12.
DEFAULT_TOPIC_MAX_MESSAGE_BYTES: Final = 1_048_588
#: aiokafka's default ``max_request_size``.
DEFAULT_MAX_REQUEST_BYTES: Final = 1_048_576
MAX_KEY_BYTES: Final = 256
MAX_HEADER_VALUE_BYTES: Final = 1024
#: The bound never shrinks below this: reason headers, digests and a few hundred bytes of value.
MIN_RECORD_BYTES: Final = 4096
_MAX_DETAIL_CHARS: Final = 500


class DeadLetter(NamedTuple):
    """What to produce to the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    bounded: bool


@dataclass(slots=True)
class DeadLetterLimits:
    """The largest dead-letter record (as the client estimates it) both the producer and the topic take."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    topic_max_message_bytes: int | None = None
    """The dead-letter topic's ``max.message.bytes``; None: not known (Kafka's default is assumed)."""
    _shrunk: int | None = None

    @property
    def max_record_bytes(self) -> int:
        topic = self.topic_max_message_bytes or DEFAULT_TOPIC_MAX_MESSAGE_BYTES
        bound = min(self.max_request_bytes, topic)
        if self._shrunk is not None:
            bound = min(bound, self._shrunk)
        return max(MIN_RECORD_BYTES, bound)

    def shrink(self) -> bool:
        """Halve the bound after a produce refused for size; False when it is already at the minimum."""
        current = self.max_record_bytes
        if current <= MIN_RECORD_BYTES:
            return False
        self._shrunk = max(MIN_RECORD_BYTES, current // 2)
        return True


def record_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> int:
    """The size the Kafka client checks against ``max_request_size``: one record in a batch of its own."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


def dead_letter_record(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]],
    reason: str,
    detail: str,
    origin: tuple[str, int, int],
    by: str,
    at: str,
    max_bytes: int,
) -> DeadLetter:
    """The full copy of a rejected record with its reason headers, or the bounded record (module docstring).

    ``origin`` is (topic, partition, offset); ``at`` the RFC 3339 time of dead-lettering.
    """
    original = [(name, raw if raw is not None else b"") for name, raw in headers]
    topic, partition, offset = origin
    reasons = [
        (name, text.encode("utf-8", "replace"))
        for name, text in zip(
            DLQ_HEADERS,
            (reason, detail[:_MAX_DETAIL_CHARS], topic, str(partition), str(offset), by, at),
            strict=True,
        )
    ]
    full = [*original, *reasons]
    if record_size(key, value, full) <= max_bytes:
        return DeadLetter(key, value, full, bounded=False)

    raw_value = value or b""
    listed = b"".join(
        len(name).to_bytes(4, "big") + name.encode("utf-8", "replace") + len(raw).to_bytes(4, "big") + raw
        for name, raw in original
    )
    facts = [
        ("xchg-truncated", b"1"),
        ("xchg-original-size", str(record_size(key, value, original)).encode("ascii")),
        ("xchg-original-key-sha256", hashlib.sha256(key or b"").hexdigest().encode("ascii")),
        ("xchg-original-value-sha256", hashlib.sha256(raw_value).hexdigest().encode("ascii")),
        ("xchg-original-headers-sha256", hashlib.sha256(listed).hexdigest().encode("ascii")),
    ]
    short_key = key[:MAX_KEY_BYTES] if key is not None else None
    kept: list[tuple[str, bytes]] = []
    for name, raw in original:  # the CloudEvents headers (id, source, type...) say what it was: keep them
        candidate = (name[:MAX_HEADER_VALUE_BYTES], raw[:MAX_HEADER_VALUE_BYTES])
        if record_size(short_key, b"", [*kept, candidate, *reasons, *facts]) > max_bytes:
            break
        kept.append(candidate)
    bounded = [*kept, *reasons, *facts]
    room = max(0, max_bytes - record_size(short_key, b"", bounded) - 8)  # 8: the value's own length varint
    return DeadLetter(short_key, raw_value[:room], bounded, bounded=True)


class _Producer(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> Any: ...


class DeadLetterWriter:
    """Writes dead letters to one party's DLQ: bounded (:func:`dead_letter_record`), retried until acked."""

    def __init__(self, *, topic: str, party: str, counter: Counter, error_backoff: float = 1.0) -> None:
        self.topic = topic
        self.party = party
        self._counter = counter
        self._error_backoff = error_backoff
        self.limits = DeadLetterLimits()
        """The record bound; the runtime sets the producer's and the topic's limits."""
        self.stalled: str | None = None
        """Why the last produce keeps failing (None once it landed)."""

    async def write(
        self, record: Any, rejected: Rejected, producer: _Producer, *, where: Mapping[str, Any]
    ) -> None:
        """Produce ``record`` plus reason headers; a produce refused for size shrinks the bound and tries the
        bounded record at once, any other failure is retried with backoff until the broker acks."""
        delay = self._error_backoff
        at = format_utc(datetime.now(UTC))
        while True:
            letter = dead_letter_record(
                key=record.key, value=record.value, headers=record.headers or (), reason=str(rejected.reason),
                detail=rejected.detail, origin=(record.topic, record.partition, record.offset),
                by=self.party, at=at, max_bytes=self.limits.max_record_bytes,
            )  # fmt: skip
            try:
                await producer.send_and_wait(
                    self.topic, value=letter.value, key=letter.key, headers=letter.headers
                )
            except (MessageSizeTooLargeError, RecordListTooLargeError) as exc:
                if self.limits.shrink():
                    _log.warning("dead-letter record refused for size; bounding it further",
                                 error=type(exc).__name__, party=self.party,
                                 max_bytes=self.limits.max_record_bytes)  # fmt: skip
                    continue
                self._stall(exc, delay)
            except Exception as exc:  # noqa: BLE001 - the record must not be skipped: retry until it lands
                self._stall(exc, delay)
            else:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        if self.stalled is not None:
            _log.info("dead-letter produce recovered", party=self.party)
            self.stalled = None
        if letter.bounded:
            _log.warning("dead-lettered a bounded copy", **where, reason=str(rejected.reason),
                         max_bytes=self.limits.max_record_bytes)  # fmt: skip
        self._counter.labels(reason=str(rejected.reason)).inc()

    def _stall(self, exc: BaseException, delay: float) -> None:
        self.stalled = f"dead-letter produce failing ({type(exc).__name__})"
        _log.warning("dead-letter produce failed; retrying", error=type(exc).__name__, party=self.party,
                     retry_in=delay)  # fmt: skip
