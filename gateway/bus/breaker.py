"""Riding out an agency system's outage: one circuit breaker and retry schedule per sink.

Agency case systems go down for minutes or hours (maintenance windows, a cut line between Jakarta and a
consulate). Dead-lettering after a few seconds of retries turns every outage into manual work, and retrying
in a loop hammers a system that is trying to come back. So the subscriber (:mod:`gateway.bus.subscriber`)
keeps one :class:`SinkHealth` per sink and asks it before every attempt:

* after a transient failure (:attr:`~gateway.bus.delivery.SinkError.retryable`: connection errors, timeouts,
  408, 425, 429, 5xx) the sink is not tried again before a delay: ``base_delay * 2**(n-1)`` for the n-th
  failure in a row, capped at ``max_delay``, with jitter, and never shorter than the sink's ``Retry-After``
  (capped at ``max_retry_after``) — :class:`~gateway.bus.delivery.RetryPolicy`;
* after ``breaker_threshold`` failures in a row the breaker is **open**: the subscriber sends the sink
  nothing at all until the delay has passed; then it is **half-open** and the next attempt is a trial;
  a success **closes** it and everything waiting for the sink flows again, a failure opens it for the next
  (longer) delay;
* an outage is measured from its first failure: once it has lasted the ``horizon`` (72 h by default), and
  more than one event has failed in it, the events needing that sink are dead-lettered (``sink.failed``)
  without waiting again, until a trial succeeds. A single event that has kept failing for the horizon is
  dead-lettered too — whether others got through or no other was tried (the events behind it in its
  partition wait) — and then the next event is tried at once: one event the system chokes on is not an
  outage, and the case goes on.

Meanwhile nothing else waits: the event that cannot be delivered stays the head of its partition (the
partition is paused at that offset and nothing after it is committed, so per-case order holds), and the
other partitions and other sinks keep flowing. A permanent failure (other 4xx, a payload the sink refuses)
is not an outage: it dead-letters the event at once (``sink.refused``) and counts as an answer, so it
closes the breaker.

:class:`SinkRouter` applies this to one event: its :class:`Route` s (which sinks take its type), tried in
order, each when its breaker allows; a :class:`Pending` event remembers which sinks still need it, so a
sink that already has it is not sent it again while another is down.

Time comes from an injected clock (``time.monotonic`` by default), so tests move time instead of sleeping,
and an outage's horizon is not fooled by changes of the wall clock. The schedule lives in memory: a restart
during an outage starts the horizon again, which can only delay a dead letter, never cause one.
"""

from __future__ import annotations

import fnmatch
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from prometheus_client import Counter

from gateway.bus.delivery import RetryPolicy, Sink, SinkError, as_sink_error
from gateway.bus.metrics import GatewayMetrics
from gateway.contract.verify import Accepted
from gateway.errors import Reason, Rejected

__all__ = ["SINK_STATES", "Pending", "Route", "SinkHealth", "SinkRouter", "SinkState"]

_log = structlog.get_logger(__name__)

SinkState = Literal["closed", "open", "half-open"]
SINK_STATES: Final[tuple[SinkState, ...]] = ("closed", "open", "half-open")


class SinkHealth:
    """The breaker and retry schedule of one sink (see the module docstring). Not thread-safe: the
    subscriber's loop is its only user."""

    __slots__ = (
        "_clock",
        "_first_event",
        "_rng",
        "failures",
        "last_error",
        "last_status",
        "name",
        "next_attempt",
        "outage_since",
        "policy",
        "several",
    )

    def __init__(
        self,
        name: str,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._rng = rng
        self.failures = 0
        """Transient failures in a row (0 after a success or a permanent answer)."""
        self.outage_since: float | None = None
        """Clock time of the first failure of the current run of failures."""
        self.next_attempt = 0.0
        """Clock time before which the sink is not tried."""
        self.last_error: str | None = None
        """The last failure's detail (status code or exception type; never a body or a URL)."""
        self.last_status: int | None = None
        self.several = False
        """More than one event failed in the current run of failures: the system is down, not choking on
        one event."""
        self._first_event: object = None

    def now(self) -> float:
        return self._clock()

    def state(self, now: float | None = None) -> SinkState:
        """``closed`` below the threshold, else ``open`` until :attr:`next_attempt`, then ``half-open``."""
        if self.failures < self.policy.breaker_threshold:
            return "closed"
        return "open" if (self.now() if now is None else now) < self.next_attempt else "half-open"

    def may_attempt(self, now: float) -> bool:
        """True when a delivery may be tried now (the retry delay or the open breaker's cool-down is over)."""
        return self.failures == 0 or now >= self.next_attempt

    def wait(self, now: float) -> float:
        """Seconds until an attempt is allowed (0 when it is now)."""
        return 0.0 if self.may_attempt(now) else self.next_attempt - now

    def outage(self, now: float) -> float:
        """Seconds since the first failure of the current outage (0 when there is none)."""
        return 0.0 if self.outage_since is None else max(0.0, now - self.outage_since)

    def beyond_horizon(self, now: float) -> bool:
        """An outage of several events that has lasted the horizon."""
        return (
            self.several and self.outage_since is not None and now - self.outage_since >= self.policy.horizon
        )

    def succeeded(self) -> None:
        """The sink answered (delivered, or refused for good): the outage, if any, is over."""
        self.failures = 0
        self.outage_since = None
        self.next_attempt = 0.0
        self.several = False
        self._first_event = None

    def failed(self, error: SinkError, now: float, event: object = None) -> float:
        """A transient failure of ``event`` (any key) at ``now``; returns the delay before the next try."""
        self.failures += 1
        if self.outage_since is None:
            self.outage_since = now
            self._first_event = event
        elif event != self._first_event:
            self.several = True
        delay = self.policy.delay(self.failures, rng=self._rng)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.policy.max_retry_after))
        self.next_attempt = now + delay
        self.last_error = error.detail
        self.last_status = error.status
        return delay


@dataclass(frozen=True, slots=True)
class Route:
    """Deliver accepted events whose type matches one of ``types`` (fnmatch) to ``sink``."""

    sink: Sink
    types: tuple[str, ...] = ("*",)

    def matches(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.types)


@dataclass(slots=True, eq=False)
class Pending:
    """An accepted event not yet delivered to all its sinks (waiting: the head of its partition)."""

    record: Any
    accepted: Accepted
    routes: list[Route]
    """The sinks that still need it, in route order."""
    tp: Any = None
    """The ``TopicPartition`` it heads (None for a re-driven record)."""
    since: float | None = None
    """Clock time of its first transient failure (the start of its own horizon)."""


class SinkRouter:
    """Routes, breakers and delivery of one gateway's sinks (module docstring)."""

    def __init__(
        self,
        routes: Sequence[Route],
        *,
        retry: RetryPolicy | None,
        sink_retry: Mapping[str, RetryPolicy] | None,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._routes = tuple(routes)
        self._metrics = metrics
        self._clock = clock
        self.health: dict[str, SinkHealth] = {}
        """The breaker of every routed sink, by name."""
        default = retry or RetryPolicy()
        for route in self._routes:
            name = route.sink.name
            if name not in self.health:
                self.health[name] = SinkHealth(name, (sink_retry or {}).get(name, default), clock=clock)
        # routes and metric children per type / sink, looked up once (fnmatch and labels() cost microseconds
        # per event); the sets of types and sinks are small and fixed
        self._by_type: dict[str, tuple[Route, ...]] = {}
        self._counters: dict[str, tuple[Counter, Counter]] = {}

    def routes_for(self, event_type: str) -> tuple[Route, ...]:
        routes = self._by_type.get(event_type)
        if routes is None:
            routes = self._by_type[event_type] = tuple(r for r in self._routes if r.matches(event_type))
        return routes

    def health_of(self, pending: Pending) -> SinkHealth:
        """The breaker of the sink ``pending`` waits for next."""
        return self.health[pending.routes[0].sink.name] if pending.routes else _ALWAYS

    async def deliver(self, pending: Pending) -> Literal["delivered", "waiting"] | Rejected:
        """Try ``pending``'s remaining sinks in order, each when its breaker allows: ``delivered`` once every
        one has it, ``waiting`` while one is down (within the horizon), else the rejection to dead-letter
        (``sink.refused`` for a permanent failure, ``sink.failed`` beyond the horizon)."""
        while pending.routes:
            route = pending.routes[0]
            name = route.sink.name
            health = self.health[name]
            now = self._clock()
            if not health.may_attempt(now):
                return self._expired(pending, health, now) or "waiting"
            delivered, failures = self._sink_counters(name)
            try:
                await route.sink.deliver(pending.accepted)
            except Exception as exc:  # noqa: BLE001 - converted at the boundary (as_sink_error)
                error = as_sink_error(route.sink, exc)
                failures.inc()
                if not error.retryable:
                    health.succeeded()  # the system answered: it is up, it refuses this event
                    _log.warning("sink refused the event", sink=name, **_ids(pending),
                                 detail=error.detail, status=error.status)  # fmt: skip
                    return Rejected(Reason.SINK_REFUSED, error.detail)
                delay = health.failed(error, now, _key(pending))
                _log_failure(health, pending, error, now, delay)
                return self._expired(pending, health, now) or "waiting"
            if health.failures:
                _log.info("sink available again", sink=name, after_failures=health.failures,
                          outage_s=round(health.outage(now), 1))  # fmt: skip
            health.succeeded()
            delivered.inc()
            pending.routes.pop(0)
        return "delivered"

    def _expired(self, pending: Pending, health: SinkHealth, now: float) -> Rejected | None:
        """``sink.failed`` once the event, or its sink's outage, has waited the horizon; else None."""
        if pending.since is None:
            pending.since = now
        horizon = health.policy.horizon
        own = now - pending.since >= horizon
        if not own and not health.beyond_horizon(now):
            return None
        if own and not health.several:
            health.next_attempt = now  # only this event failed so far: try the next one at once
        return Rejected(
            Reason.SINK_FAILED,
            f"sink {health.name}: not delivered within the retry horizon of {horizon:g}s "
            f"({health.failures} failure(s) in a row, last: {health.last_error or 'unavailable'})",
        )

    def _sink_counters(self, name: str) -> tuple[Counter, Counter]:
        counters = self._counters.get(name)
        if counters is None:
            counters = self._counters[name] = (
                self._metrics.delivered.labels(sink=name),
                self._metrics.sink_failures.labels(sink=name),
            )
        return counters

    def states(self, waiting: Iterable[Pending]) -> list[tuple[str, str, int, float, int]]:
        """Per sink: name, breaker state, failures in a row, outage seconds, events of ``waiting`` on it."""
        now = self._clock()
        count: dict[str, int] = {}
        for pending in waiting:
            if pending.routes:
                count[pending.routes[0].sink.name] = count.get(pending.routes[0].sink.name, 0) + 1
        return [
            (name, health.state(now), health.failures, health.outage(now), count.get(name, 0))
            for name, health in self.health.items()
        ]


#: The breaker of an event without sinks left (it never waits).
_ALWAYS: Final = SinkHealth("-", RetryPolicy())


def _log_failure(health: SinkHealth, pending: Pending, error: SinkError, now: float, delay: float) -> None:
    """The first failure of an outage and the breaker opening are logged; every later trial at debug level
    (a day-long outage must not write a line per minute: the metrics show it)."""
    fields = {"sink": health.name, **_ids(pending), "status": error.status, "detail": error.detail,
              "failures": health.failures, "retry_in": round(delay, 3)}  # fmt: skip
    if health.failures == 1:
        _log.warning("sink unavailable; its events wait", **fields)
    elif health.failures == health.policy.breaker_threshold:
        _log.warning("sink circuit breaker open; one trial per cool-down", **fields)
    else:
        _log.debug("sink still unavailable", **fields, state=health.state(now))


def _key(pending: Pending) -> tuple[str, str]:
    event = pending.accepted.event
    return event.source, event.id


def _ids(pending: Pending) -> dict[str, Any]:
    event = pending.accepted.event
    return {"event_id": event.id, "source": event.source}
