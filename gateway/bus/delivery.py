"""Delivery to sinks: the interface every sink implements and the retry policy the subscriber applies.

A :class:`Sink` receives an :class:`~gateway.contract.verify.Accepted` (already verified, unsealed as far as
we may see it) and either delivers it or raises :class:`SinkError`. Delivery is at-least-once: the subscriber
commits its Kafka offset only after ``deliver`` returned, so after a crash the same event is delivered
again. Every sink must therefore be **idempotent per event** — keyed on ``(source, id)``, which is unique
per event and stable across redelivery.

``SinkError.retryable`` separates "try again later" (the agency system is down, overloaded, timed out:
connection errors, timeouts, 408, 425, 429, 5xx) from "this will never work" (it refuses the request: any
other 4xx, a payload the adapter cannot map). ``SinkError.retry_after`` carries the system's own
``Retry-After`` when it sent one. The subscriber rides out the former without blocking anything else, per
:class:`RetryPolicy` (capped exponential backoff with jitter, ``Retry-After`` honoured, a circuit breaker per
sink, a horizon of 72 hours by default: :mod:`gateway.bus.breaker`), and dead-letters the latter at once
(``sink.refused``). :func:`deliver_with_retry` is the simple in-line form (a few attempts, sleeping between
them) for callers that have nothing else to do meanwhile.

Sinks: :class:`gateway.runtime.webhook.WebhookSink` (HTTP, with the agency adapters built on it) and, for
trials and tests, :class:`gateway.sandbox.memory.MemorySink`.

Error details name status codes and exception types only: a response body may echo the payload (names of
victims) and the URL may carry a token, so neither is ever put into an error, a log line or a DLQ header.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason

__all__ = [
    "FailureCallback",
    "RetryPolicy",
    "Sink",
    "SinkError",
    "as_sink_error",
    "deliver_with_retry",
    "is_retryable_status",
]

_log = structlog.get_logger(__name__)

#: Statuses that mean "not now" rather than "never": request timeout, too early, rate limited.
_RETRYABLE_4XX: Final = frozenset({408, 425, 429})


class SinkError(GatewayError):
    """Delivery failed. ``retryable`` says whether trying the same event again later may succeed.

    ``status`` is the HTTP status when there was one (for metrics and logs); ``detail`` never contains a
    response body or payload value.
    """

    def __init__(
        self, detail: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(Reason.SINK_FAILED if retryable else Reason.SINK_REFUSED, detail)
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after
        """Seconds the system asked us to wait (its ``Retry-After``), when it said so."""


class Sink(Protocol):
    """Hands verified events to an agency system. ``deliver`` must be idempotent per ``(source, id)``."""

    name: str

    async def deliver(self, accepted: Accepted) -> None:
        """Deliver one event or raise :class:`SinkError`."""
        ...

    async def close(self) -> None:
        """Release connections; called once when the runtime stops."""
        ...


def is_retryable_status(status: int) -> bool:
    """True for statuses worth retrying: 408, 425, 429 and every 5xx."""
    return status in _RETRYABLE_4XX or 500 <= status <= 599


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: the delay after failed attempt n (1-based) is ``base_delay * 2**(n-1)``, capped
    at ``max_delay``, then scaled by a uniform random factor in ``[1 - jitter, 1 + jitter]`` so gateways that
    failed together do not retry in lockstep. ``attempts`` counts every try, the first included (for
    :func:`deliver_with_retry`; the subscriber retries until ``horizon`` instead).

    The subscriber's outage policy (:mod:`gateway.bus.breaker`) uses the same delays, never shorter than the
    sink's ``Retry-After`` (capped at ``max_retry_after``); after ``breaker_threshold`` failures in a row the
    sink's breaker is *open*: nothing is sent to it until the delay has passed, then one trial
    (*half-open*). An event is dead-lettered (``sink.failed``) only once it, or the outage of its sink, has
    lasted ``horizon`` seconds.
    """

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 60.0
    jitter: float = 0.1
    horizon: float = 72 * 3600.0
    breaker_threshold: int = 5
    max_retry_after: float = 3600.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise GatewayError(Reason.CONFIG_INVALID, "retry attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise GatewayError(Reason.CONFIG_INVALID, "retry delays must not be negative")
        if not 0 <= self.jitter <= 1:
            raise GatewayError(Reason.CONFIG_INVALID, "retry jitter must be between 0 and 1")
        if self.horizon <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, "retry horizon must be positive")
        if self.breaker_threshold < 1:
            raise GatewayError(Reason.CONFIG_INVALID, "retry breaker_threshold must be at least 1")

    def delay(self, attempt: int, *, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        exponent = min(attempt - 1, 62)  # 2**62 already exceeds any sane max_delay; avoids float overflow
        capped = min(self.base_delay * 2.0**exponent, self.max_delay)
        return max(0.0, capped * (1.0 + self.jitter * (2.0 * rng() - 1.0)))


def as_sink_error(sink: Sink, exc: BaseException) -> SinkError:
    """``exc`` raised by ``sink.deliver`` as a :class:`SinkError` (itself when it is one).

    Anything else is the sink refusing the event for good (non-retryable): a ``GatewayError`` is named by its
    reason code and detail (which carry no personal data), any other exception (an adapter bug) by its type
    only, so the event is dead-lettered instead of the subscriber crashing.
    """
    if isinstance(exc, SinkError):
        return exc
    if isinstance(exc, GatewayError):
        error = SinkError(f"sink {sink.name}: {exc.reason}: {exc.detail}", retryable=False)
    else:
        error = SinkError(f"sink {sink.name}: unexpected {type(exc).__name__}", retryable=False)
    error.__cause__ = exc
    return error


FailureCallback = Callable[[SinkError, int], None]
"""``on_failure(error, attempt)``: called after every failed attempt (1-based), the last one included."""


async def deliver_with_retry(
    sink: Sink,
    accepted: Accepted,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_failure: FailureCallback | None = None,
) -> None:
    """Deliver ``accepted`` to ``sink``, retrying retryable :class:`SinkError` per ``policy``.

    Re-raises the last ``SinkError`` when attempts are exhausted, and a non-retryable one at once; the
    caller dead-letters the event. A sink that raises anything else (an adapter bug, a ``GatewayError``
    with another reason) is converted at this boundary into a non-retryable ``SinkError`` naming only the
    exception type (or the reason code and detail of a ``GatewayError``, which carry no personal data), so
    the event is dead-lettered instead of the subscriber crashing. Cancellation is never swallowed.
    """
    event = accepted.event
    attempt = 0
    while True:
        attempt += 1
        try:
            await sink.deliver(accepted)
        except SinkError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001  # boundary: any sink failure becomes a dead-letterable error
            error = as_sink_error(sink, exc)
        else:
            if attempt > 1:
                _log.info("sink.delivered_after_retry", sink=sink.name, event_id=event.id, attempts=attempt)
            return

        if on_failure is not None:
            on_failure(error, attempt)
        if not error.retryable or attempt >= policy.attempts:
            _log.warning(
                "sink.delivery_failed",
                sink=sink.name,
                event_id=event.id,
                source=event.source,
                attempts=attempt,
                retryable=error.retryable,
                status=error.status,
            )
            raise error
        delay = policy.delay(attempt)
        _log.info(
            "sink.retrying",
            sink=sink.name,
            event_id=event.id,
            source=event.source,
            attempt=attempt,
            delay_s=round(delay, 3),
            status=error.status,
        )
        await sleep(delay)
