"""An in-memory sink for trials, the demo and tests (never configured in production)."""

from __future__ import annotations

from gateway.contract.verify import Accepted

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps delivered events in memory, deduplicated by ``(source, id)`` like a real agency system.

    ``events`` holds each distinct event once, in first-delivery order; ``deliveries`` counts every call of
    :meth:`deliver` and ``log`` records the ``(source, id)`` of each call (so a test can tell a redelivery
    from a new event).
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.events: list[Accepted] = []
        self.deliveries = 0
        self.log: list[tuple[str, str]] = []
        self.closed = False
        self._seen: set[tuple[str, str]] = set()

    async def deliver(self, accepted: Accepted) -> None:
        self.deliveries += 1
        key = (accepted.event.source, accepted.event.id)
        self.log.append(key)
        if key not in self._seen:
            self._seen.add(key)
            self.events.append(accepted)

    async def close(self) -> None:
        self.closed = True
