"""Generic sinks: where verified events from other agencies are handed to this agency's case system.

A :class:`Sink` receives an :class:`~gateway.contract.verify.Accepted` (already verified, unsealed as far as
we may see it) and either delivers it or raises :class:`SinkError`. Delivery is at-least-once: the subscriber
commits its Kafka offset only after ``deliver`` returned, so after a crash the same event is delivered
again. Every sink must therefore be **idempotent per event** — keyed on ``(source, id)``, which is unique
per event and stable across redelivery.

``SinkError.retryable`` separates "try again later" (the agency system is down, overloaded, timed out) from
"this will never work" (it refuses the request): :func:`deliver_with_retry` retries only the former, with
exponential backoff and jitter, and re-raises the last error for the subscriber to dead-letter.

* :class:`WebhookSink` POSTs to an agency endpoint with an ``Idempotency-Key`` header; ``409 Conflict`` means
  the endpoint already has this key, i.e. an earlier attempt succeeded, and counts as delivered. The
  endpoint is one configured URL or, where the agency's API names a record in the path, computed per event
  (:data:`UrlFor`) and checked like a configured one.
* :class:`MemorySink` keeps events in memory for tests and the demo.

Error details name status codes and exception types only: a response body may echo the payload (names of
victims) and the URL may carry a token, so neither is ever put into an error, a log line or a DLQ header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import ssl as _ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
import structlog
from yarl import URL

from gateway.contract.canonical import canonical_json
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason

__all__ = [
    "FailureCallback",
    "MemorySink",
    "RetryPolicy",
    "Sink",
    "SinkError",
    "UrlFor",
    "WebhookSink",
    "deliver_with_retry",
    "is_loopback",
    "is_retryable_status",
]

_log = structlog.get_logger(__name__)

#: Statuses that mean "not now" rather than "never": request timeout, too early, rate limited.
_RETRYABLE_4XX: Final = frozenset({408, 425, 429})
_CONFLICT: Final = 409


class SinkError(GatewayError):
    """Delivery failed. ``retryable`` says whether trying the same event again later may succeed.

    ``status`` is the HTTP status when there was one (for metrics and logs); ``detail`` never contains a
    response body or payload value.
    """

    def __init__(self, detail: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(Reason.SINK_FAILED, detail)
        self.retryable = retryable
        self.status = status


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


UrlFor = Callable[[Accepted], str | URL]
"""``url_for(accepted)``: the endpoint of one event, for APIs whose path names a record (a case). Build it
from the configured base and the event's attributes (ids, never payload values: URLs end up in proxy and
server logs); a ``GatewayError`` it raises is dead-lettered like one from a ``body`` transform."""


def _event_summary(accepted: Accepted) -> dict[str, str]:
    """The event attributes an agency system needs to file the payload (no signature material)."""
    event = accepted.event
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time,
        "dataschema": event.dataschema,
        "dataclassification": event.dataclassification,
    }


class WebhookSink:
    """POST each event as JSON to an agency endpoint.

    Body (RFC 8785 canonical JSON): ``{"event": {id, source, type, subject, time, dataschema,
    dataclassification}, "payload": <Accepted.payload()>}``. Headers: ``Content-Type: application/json``,
    ``Idempotency-Key: <source>/<id>``, ``X-Xchg-Event-Id``, ``X-Xchg-Source``, ``X-Xchg-Type``, plus
    ``headers`` (e.g. ``Authorization``); our headers win on a clash so the idempotency key cannot be
    overridden by configuration.

    Outcomes: 2xx delivered; 409 already delivered (the endpoint saw the idempotency key); 408, 425, 429,
    5xx, timeouts and connection errors ``SinkError(retryable=True)``; redirects (not followed: personal
    data must not be re-sent to a URL nobody configured) and other 4xx ``SinkError(retryable=False)``.

    ``session`` lets the runtime share one connection pool; a session created here is created lazily (it
    needs a running event loop) and closed by :meth:`close`. ``ssl`` is the client TLS context (e.g. with
    the agency's private CA or a client certificate); ``None`` means aiohttp's default verification.

    ``body`` replaces the body document for agencies whose system takes its own shape (an adapter's
    transform, e.g. ``adapters.kemensos``); headers and outcomes stay exactly as above. A ``GatewayError``
    it raises propagates (:func:`deliver_with_retry` dead-letters it without retrying), so its detail must
    not contain payload values.

    ``url`` is the endpoint, or a :data:`UrlFor` computing it per event (e.g. ``adapters.kemlu``: the case
    API's update endpoint names the case); it is called on every attempt, before ``body``. A configured URL
    and every computed one pass the same check: an absolute http(s) URL, else
    ``GatewayError(config.invalid)`` (raised here for a configured URL, by :meth:`deliver` for a computed
    one, which :func:`deliver_with_retry` dead-letters without a request); plain http to a host that is not
    loopback is allowed but warned about (``webhook.plaintext_http``, once per origin). URLs are never put
    into an error or a log line.
    """

    def __init__(
        self,
        url: str | UrlFor,
        *,
        name: str = "webhook",
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        ssl: _ssl.SSLContext | None = None,
        body: Callable[[Accepted], Mapping[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self._plaintext_warned: set[URL] = set()
        self._url: URL | UrlFor = url if callable(url) else self._checked(url)
        if timeout <= 0:
            raise GatewayError(Reason.CONFIG_INVALID, f"sink {name}: timeout must be positive")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = dict(headers or {})
        self._session = session
        self._owns_session = session is None
        self._ssl: _ssl.SSLContext | bool = ssl if ssl is not None else True
        self._body = body

    async def deliver(self, accepted: Accepted) -> None:
        event = accepted.event
        url = self._url if isinstance(self._url, URL) else self._checked(self._url(accepted))
        document = (
            self._body(accepted)
            if self._body is not None
            else {"event": _event_summary(accepted), "payload": accepted.payload()}
        )
        body = canonical_json(dict(document))
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": f"{event.source}/{event.id}",
            "X-Xchg-Event-Id": event.id,
            "X-Xchg-Source": event.source,
            "X-Xchg-Type": event.type,
        }
        session = self._get_session()
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=self._timeout,
                ssl=self._ssl,
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError as exc:
            raise SinkError(f"sink {self.name}: timed out", retryable=True) from exc
        except aiohttp.ClientError as exc:  # connection refused/reset, TLS failure, server disconnected, ...
            raise SinkError(
                f"sink {self.name}: request failed ({type(exc).__name__})", retryable=True
            ) from exc

        if 200 <= status <= 299:
            _log.debug(
                "webhook.delivered", sink=self.name, event_id=event.id, source=event.source, status=status
            )
            return
        if status == _CONFLICT:
            _log.info("webhook.already_delivered", sink=self.name, event_id=event.id, source=event.source)
            return
        raise SinkError(
            f"sink {self.name}: HTTP {status}", retryable=is_retryable_status(status), status=status
        )

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        elif self._session.closed:  # shared session closed before the subscriber stopped: retry later
            raise SinkError(f"sink {self.name}: shared HTTP session is closed", retryable=True)
        return self._session

    def _checked(self, url: str | URL) -> URL:
        """The same rules for the configured URL and every computed one; neither the URL nor the reason it
        failed (which could quote it) goes into the error or the log."""
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (TypeError, ValueError):  # not a URL at all, e.g. an unclosed IPv6 bracket
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise GatewayError(
                Reason.CONFIG_INVALID, f"sink {self.name}: url must be an absolute http(s) URL"
            )
        if parsed.scheme == "http" and not is_loopback(parsed.host):
            origin = parsed.origin()
            if origin not in self._plaintext_warned:  # once per origin, not once per event
                self._plaintext_warned.add(origin)
                _log.warning("webhook.plaintext_http", sink=self.name)  # payloads are unsealed personal data
        return parsed


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (not a name that merely resolves to one): plain http to it
    does not leave the machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: the delay after failed attempt n (1-based) is ``base_delay * 2**(n-1)``, capped
    at ``max_delay``, then scaled by a uniform random factor in ``[1 - jitter, 1 + jitter]`` so gateways that
    failed together do not retry in lockstep. ``attempts`` counts every try, the first included.
    """

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise GatewayError(Reason.CONFIG_INVALID, "retry attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise GatewayError(Reason.CONFIG_INVALID, "retry delays must not be negative")
        if not 0 <= self.jitter <= 1:
            raise GatewayError(Reason.CONFIG_INVALID, "retry jitter must be between 0 and 1")

    def delay(self, attempt: int, *, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        exponent = min(attempt - 1, 62)  # 2**62 already exceeds any sane max_delay; avoids float overflow
        capped = min(self.base_delay * 2.0**exponent, self.max_delay)
        return max(0.0, capped * (1.0 + self.jitter * (2.0 * rng() - 1.0)))


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
        except GatewayError as exc:
            error = SinkError(f"sink {sink.name}: {exc.reason}: {exc.detail}", retryable=False)
            error.__cause__ = exc
        except Exception as exc:  # noqa: BLE001  # boundary: any sink failure becomes a dead-letterable error
            error = SinkError(f"sink {sink.name}: unexpected {type(exc).__name__}", retryable=False)
            error.__cause__ = exc
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
