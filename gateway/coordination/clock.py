"""Injectable time: every deadline, tick and statistics period of the coordination layer reads a Clock.

Why: SOP deadlines are hours and days long; tests and the demo must make a referral overdue without waiting
a day, and without ``sleep``. :class:`SystemClock` is the real time; :class:`ManualClock` is moved by hand
(``advance(hours=25)``); :class:`OffsetClock` is the real time plus an offset that can jump (the demo).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "OffsetClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, the demo)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime.now(UTC)).astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> datetime:
        self._now += timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        return self._now

    def set(self, instant: datetime) -> None:
        self._now = instant.astimezone(UTC)


class OffsetClock:
    """The system clock plus an offset that only grows (the demo: time runs, and can jump a day ahead)."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> datetime:
        self._offset += timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        return self.now()
