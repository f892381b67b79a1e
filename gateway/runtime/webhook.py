"""The webhook sink: POST each verified event to an agency endpoint, idempotently.

:class:`WebhookSink` POSTs to an agency endpoint with an ``Idempotency-Key`` header; ``409 Conflict`` means
the endpoint already has this key, i.e. an earlier attempt succeeded, and counts as delivered. The endpoint
is one configured URL or, where the agency's API names a record in the path, computed per event
(:data:`UrlFor`) and checked like a configured one. Retries are the subscriber's (its outage policy,
:mod:`gateway.bus.breaker`); this class only says whether a failure is retryable and passes on the
system's ``Retry-After`` (seconds or an HTTP date, RFC 9110 section 10.2.3).

Error details name status codes and exception types only: a response body may echo the payload (names of
victims) and the URL may carry a token, so neither is ever put into an error, a log line or a DLQ header.
"""

from __future__ import annotations

import dataclasses
import json
import ssl as _ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

import aiohttp
import structlog
from yarl import URL

from gateway.bus.delivery import SinkError, is_retryable_status
from gateway.contract.canonical import canonical_json
from gateway.contract.formulas import MAX_LISTED, neutralise
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from gateway.settings import Table, is_loopback, read_secret

__all__ = [
    "FORMULA_MODES",
    "ClientOptions",
    "FormulaMode",
    "UrlFor",
    "WebhookSink",
    "client_options",
    "event_summary",
    "formulas_option",
    "retry_after",
]

_log = structlog.get_logger(__name__)

_CONFLICT: Final = 409


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How an HTTP client authenticates to an agency system: extra headers (a bearer token) and TLS."""

    headers: Mapping[str, str] = field(default_factory=dict)
    ssl: _ssl.SSLContext | None = None


def client_options(options: Table) -> ClientOptions:
    """The HTTP client options every agency sink and API source shares, read from its option table:

    * ``token_file``: a bearer token (``Authorization: Bearer ...``), kept in a file because configuration
      files are copied around; read with :func:`gateway.settings.read_secret`;
    * ``ca_file``: the agency's private CA (the system store is not trusted instead of it);
    * ``cert_file`` + ``key_file``: a client certificate for mutual TLS.
    """
    headers: dict[str, str] = {}
    token_file = options.path("token_file", None)
    if token_file is not None:
        headers["Authorization"] = f"Bearer {read_secret(token_file, options.name('token_file'))}"
    ca_file = options.path("ca_file", None)
    cert_file = options.path("cert_file", None)
    key_file = options.path("key_file", None)
    if (cert_file is None) != (key_file is None):
        missing = "key_file" if key_file is None else "cert_file"
        raise options.fail(missing, "a client certificate needs both cert_file and key_file")
    context = None
    if ca_file is not None or cert_file is not None:
        try:
            context = _ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
        except (OSError, _ssl.SSLError) as exc:
            raise options.fail("ca_file", f"cannot load CA certificates from {str(ca_file)!r}") from exc
        context.minimum_version = _ssl.TLSVersion.TLSv1_2
        if cert_file is not None:
            try:
                context.load_cert_chain(str(cert_file), str(key_file))
            except (OSError, _ssl.SSLError) as exc:
                raise options.fail("cert_file", "cannot load the client certificate and key_file") from exc
    return ClientOptions(headers=headers, ssl=context)


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delay-seconds or an HTTP date (RFC 9110 section 10.2.3);
    None when absent or unreadable (the backoff applies). A date in the past is 0."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


UrlFor = Callable[[Accepted], str | URL]
"""``url_for(accepted)``: the endpoint of one event, for APIs whose path names a record (a case). Build it
from the configured base and the event's attributes (ids, never payload values: URLs end up in proxy and
server logs); a ``GatewayError`` it raises is dead-lettered like one from a ``body`` transform."""


def event_summary(accepted: Accepted) -> dict[str, str]:
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


FormulaMode = Literal["flag", "neutralise"]
FORMULA_MODES: Final[tuple[FormulaMode, ...]] = ("flag", "neutralise")


def formulas_option(options: Table) -> FormulaMode:
    """The ``formulas`` option of a webhook-based sink (``flag`` or ``neutralise``)."""
    mode = options.string("formulas", "flag", choices=FORMULA_MODES)
    return "neutralise" if mode == "neutralise" else "flag"


def _neutralised(accepted: Accepted) -> Accepted:
    """``accepted`` with each formula cell of its clear and unsealed data prefixed (not the sealed block)."""
    data = {k: (v if k == "sealed" else neutralise(v)) for k, v in accepted.data.items()}
    unsealed = neutralise(accepted.unsealed) if accepted.unsealed is not None else None
    return dataclasses.replace(accepted, data=data, unsealed=unsealed)


def _cells_header(cells: list[str]) -> str:
    text = json.dumps(sorted(cells))  # ASCII (escaped), as a header value must be
    return text if len(text) <= MAX_LISTED else "*"


class WebhookSink:
    """POST each event as JSON to an agency endpoint.

    Body (RFC 8785 canonical JSON): ``{"event": {id, source, type, subject, time, dataschema,
    dataclassification}, "payload": <Accepted.payload()>}``. Headers: ``Content-Type: application/json``,
    ``Idempotency-Key: <source>/<id>``, ``X-Xchg-Event-Id``, ``X-Xchg-Source``, ``X-Xchg-Type``, plus
    ``headers`` (e.g. ``Authorization``); our headers win on a clash so the idempotency key cannot be
    overridden by configuration.

    Outcomes: 2xx delivered; 409 already delivered (the endpoint saw the idempotency key); 408, 425, 429,
    5xx, timeouts and connection errors ``SinkError(retryable=True)`` (with the response's ``Retry-After``,
    when it has one, as ``retry_after``); redirects (not followed: personal
    data must not be re-sent to a URL nobody configured) and other 4xx ``SinkError(retryable=False)``.

    ``session`` lets the runtime share one connection pool; a session created here is created lazily (it
    needs a running event loop) and closed by :meth:`close`. ``ssl`` is the client TLS context (e.g. with
    the agency's private CA or a client certificate); ``None`` means aiohttp's default verification.

    ``body`` replaces the body document for agencies whose system takes its own shape (an adapter's
    transform, e.g. ``adapters.kemensos``); headers and outcomes stay exactly as above. A ``GatewayError``
    it raises propagates (the subscriber dead-letters it as ``sink.refused``, never retried), so its detail
    must not contain payload values.

    ``formulas`` (:mod:`gateway.contract.formulas`): with ``"flag"`` (the default) values pass unchanged and
    an event with spreadsheet-formula values gets ``X-Xchg-Formula-Cells: ["/json/pointer", ...]`` (``"*"``
    when long); with ``"neutralise"`` each such value is also prefixed with ``'`` before ``body`` sees it
    (OWASP), for agency systems that write what they receive into spreadsheets.

    ``url`` is the endpoint, or a :data:`UrlFor` computing it per event (e.g. ``adapters.kemlu``: the case
    API's update endpoint names the case); it is called on every attempt, before ``body``. A configured URL
    and every computed one pass the same check: an absolute http(s) URL, else
    ``GatewayError(config.invalid)`` (raised here for a configured URL, by :meth:`deliver` for a computed
    one, which the subscriber dead-letters without a request); plain http to a host that is not
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
        formulas: FormulaMode = "flag",
    ) -> None:
        if formulas not in FORMULA_MODES:
            raise GatewayError(Reason.CONFIG_INVALID, f"sink {name}: formulas must be flag or neutralise")
        self.formulas = formulas
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
        cells = accepted.formula_cells
        if cells and self.formulas == "neutralise":  # for agency systems that write spreadsheets
            accepted = _neutralised(accepted)
        url = self._url if isinstance(self._url, URL) else self._checked(self._url(accepted))
        document = (
            self._body(accepted)
            if self._body is not None
            else {"event": event_summary(accepted), "payload": accepted.payload()}
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
        if cells:
            headers["X-Xchg-Formula-Cells"] = _cells_header(cells)
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
                wait = retry_after(response.headers.get("Retry-After")) if status >= 400 else None
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
            f"sink {self.name}: HTTP {status}",
            retryable=is_retryable_status(status),
            status=status,
            retry_after=wait,
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
