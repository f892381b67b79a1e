"""Times at the edge: one parser for RFC 3339 instants and one range check against the receive time.

Why one place: a time is the one field every input carries (the CloudEvents ``time``, the Kemlu case API's
``updated_at`` and its durable cursor, registry key validity) and the one a standard library converts with
exceptions the callers did not expect. ``datetime.astimezone`` raises ``OverflowError`` for
``0001-01-01T00:00:00+01:00`` (year 0 in UTC) and ``9999-12-31T23:59:59-01:00`` (year 10000), and
``strftime("%Y")`` writes year 999 as ``999``, which the parser then refuses: one such value in one record
used to kill the consumer task. Here every failure is a :class:`~gateway.errors.GatewayError`:

* not RFC 3339 with an offset → the caller's syntax code (``ce.invalid-attribute`` for an event);
* a valid calendar instant that cannot be converted to UTC inside years 0001-9999 → ``time.out-of-range``;
* outside the :class:`TimeWindow` around the receive time → ``time.out-of-range`` (the event ``time``
  keeps its older, more precise ``ce.time-in-future`` for the upper edge, see :mod:`gateway.contract.verify`).

The window (documented in docs/REASON_CODES.md): an instant is accepted from ``now - max_age`` to
``now + max_skew``. The defaults, :data:`DEFAULT_WINDOW`, are 3,660 days back (ten years: older than any
record an exchange topic or case API can still hold, far younger than the years that break arithmetic) and
5 minutes ahead (clock skew between agencies). A cursor or watermark derived from inputs never moves beyond
:meth:`TimeWindow.latest` (now plus the skew), so one far-future value cannot stop a feed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from gateway.errors import GatewayError, Reason

__all__ = [
    "DEFAULT_WINDOW",
    "RFC3339",
    "TimeWindow",
    "format_utc",
    "parse_instant",
    "utc_text",
]

#: RFC 3339 ``date-time`` with a mandatory offset (``Z`` or ``±hh:mm``) and any number of fraction digits.
RFC3339: Final = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_MEMO_ENTRIES: Final = 1024
_MEMO_MAX_LENGTH: Final = 64


@dataclass(frozen=True, slots=True)
class _Parsed:
    instant: datetime  # aware, UTC, microseconds truncated
    fraction: str  # the fraction as written (".123456789" or ""), kept for the canonical text


def _parse(value: str, syntax: Reason) -> _Parsed:
    match = RFC3339.match(value)
    if match is None:
        raise GatewayError(syntax, "time is not an RFC 3339 timestamp with an offset")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if year == "0000":  # valid RFC 3339, but before the first year a datetime holds
        raise GatewayError(Reason.TIME_OUT_OF_RANGE, "time cannot be represented in UTC")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        local = datetime.fromisoformat(f"{year}-{month}-{day}T{hour}:{minute}:{second}{offset}")
    except ValueError as exc:  # month 13, day 31 of April, hour 24, offset +25:00, ...
        raise GatewayError(syntax, "time is not a valid calendar instant") from exc
    try:
        instant = local.astimezone(UTC)
    except (OverflowError, ValueError) as exc:  # the offset carries it past year 1 or year 9999
        raise GatewayError(Reason.TIME_OUT_OF_RANGE, "time cannot be represented in UTC") from exc
    micros = int((fraction or ".0")[1:7].ljust(6, "0"))
    return _Parsed(instant.replace(microsecond=micros), fraction or "")


@functools.lru_cache(maxsize=_MEMO_ENTRIES)
def _parse_memo(value: str, syntax: Reason) -> _Parsed:
    return _parse(value, syntax)


def _parsed(value: str, syntax: Reason) -> _Parsed:
    """Pure, and called several times per event, so short values are memoised (failures are not)."""
    if len(value) <= _MEMO_MAX_LENGTH:
        return _parse_memo(value, syntax)
    return _parse(value, syntax)


def parse_instant(value: str, *, syntax: Reason = Reason.CE_INVALID_ATTRIBUTE) -> datetime:
    """An RFC 3339 timestamp *with* an offset as an aware UTC datetime (fraction truncated to microseconds).

    Raises ``GatewayError(syntax)`` for text that is not such a timestamp or not a calendar instant, and
    ``GatewayError(time.out-of-range)`` for an instant that has no UTC form in years 0001-9999.
    """
    return _parsed(value, syntax).instant


def utc_text(value: str, *, syntax: Reason = Reason.CE_INVALID_ATTRIBUTE) -> str:
    """The same instant as ``YYYY-MM-DDThh:mm:ss[.fraction]Z``; the fraction is kept exactly as written.

    Year, month... are written with fixed widths (``strftime("%Y")`` writes year 999 as ``999``, which is not
    RFC 3339). Errors as :func:`parse_instant`.
    """
    parsed = _parsed(value, syntax)
    return format_utc(parsed.instant)[:-1] + parsed.fraction + "Z"


def format_utc(instant: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` of an aware datetime, whole seconds, four-digit year."""
    utc = instant.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeWindow:
    """The instants accepted around a receive time ``now``: ``[now - max_age, now + max_skew]``."""

    max_age: timedelta = timedelta(days=3660)
    max_skew: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0) or self.max_skew < timedelta(0):
            raise GatewayError(Reason.CONFIG_INVALID, "time window: max_age > 0 and max_skew >= 0 required")

    def earliest(self, now: datetime) -> datetime:
        return _shift(now, -self.max_age)

    def latest(self, now: datetime) -> datetime:
        """The newest instant accepted at ``now``: no cursor or watermark may move beyond it."""
        return _shift(now, self.max_skew)

    def problem(self, instant: datetime, now: datetime) -> str | None:
        """Why ``instant`` is outside the window at ``now`` (value-free words), or None when inside."""
        if instant < self.earliest(now):
            return f"more than {self.max_age.days} days before the receive time"
        if instant > self.latest(now):
            return f"more than {int(self.max_skew.total_seconds())} s after the receive time"
        return None

    def check(self, instant: datetime, now: datetime, what: str = "time") -> datetime:
        """``instant`` if inside the window at ``now``, else ``GatewayError(time.out-of-range)``."""
        problem = self.problem(instant, now)
        if problem is not None:
            raise GatewayError(Reason.TIME_OUT_OF_RANGE, f"{what} is {problem}")
        return instant


def _shift(instant: datetime, delta: timedelta) -> datetime:
    """``instant + delta`` clamped to the representable range (a window edge never raises)."""
    try:
        return instant + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if delta > timedelta(0) else datetime.min.replace(tzinfo=UTC)


DEFAULT_WINDOW: Final = TimeWindow()
