"""HTTP intake for agency systems: ``POST /v1/events`` (and ``/v1/events:batch``) on a listener of its own.

A :class:`~gateway.runtime.sources.Source` like every other (``[[sources]] kind = "http"``): each request
body is parsed strictly and handed to the runtime's publish function, so an event that enters here is
validated, sealed, signed and committed to the outbox exactly as one from a drop folder, with the same
reason codes. The answer comes once the outbox has the event on disk (``202``, ``{"id", "type",
"accepted": "outbox"}``): from then on the gateway owns it. An ``id`` in the request makes a retry
idempotent (the outbox keeps one event per id).

Why a separate listener: the operations server is for the local Prometheus agent and probes and binds to
loopback; this one is for agency systems on the agency's network, so it authenticates:

* ``token_file``: a bearer token (``Authorization: Bearer ...``), compared in constant time;
* ``tls_cert_file`` + ``tls_key_file`` serve HTTPS; with ``client_ca_file`` as well, a client certificate
  signed by that CA is required (mutual TLS);
* neither: only a loopback ``host`` is allowed; any other address refuses to start (``config.invalid``).

Bad input gets a 4xx answer with ``{"reason", "detail"}`` and nothing is written: an oversize body (413,
``size.exceeded``, read no further than the limit), a wrong content type (415), JSON that is not strict
(400, ``parse.*``), a body of the wrong shape (400, ``schema.invalid``), an unknown type or a payload the
contract refuses (422, ``schema.*``, ``authz.*``, ``seal.*``, ``privacy.*``), a missing or wrong token (401),
an unknown path or method (404, 405). "Not now" (``outbox.full``, ``outbox.unavailable``,
``gateway.stopping``) is 503 with ``Retry-After``. Nothing ever answers with a stack trace: an unexpected
exception is ``500 gateway.internal-error`` naming its type only. Request logs (``http_intake.request``)
hold the method, route, status, reason code and event id: never a body, a header value or a query string.

The OpenAPI 3.1 document of this listener (and of the operations endpoints) is ``openapi.json`` next to this
module, served at ``GET /v1/openapi.json`` and checked in; ``docs/INTAKE_HTTP.md`` shows it in use.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web

from gateway.contract.strictjson import parse_json
from gateway.errors import GatewayError, Reason
from gateway.runtime.sources import PublishFn
from gateway.settings import Table, is_loopback, read_secret

__all__ = ["OPENAPI_FILE", "HttpIntake", "HttpIntakeSettings", "http_intake_source"]

_log = structlog.get_logger(__name__)

OPENAPI_FILE: Final = Path(__file__).with_name("openapi.json")

_EVENT_MEMBERS: Final = frozenset({"type", "data", "recipients", "dataschema", "id"})
_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_NOT_NOW: Final = frozenset({Reason.OUTBOX_FULL, Reason.OUTBOX_UNAVAILABLE, Reason.STOPPING})
_BAD_REQUEST: Final = ("size.", "parse.")
_JSON_TYPES: Final = ("application/json",)
_NO_STORE: Final = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpIntakeSettings:
    """The listener's options (``[[sources]] kind = "http"``), checked by :func:`http_intake_source`."""

    name: str = "http"
    host: str = "127.0.0.1"
    port: int = 8090
    token: str | None = None
    tls: ssl.SSLContext | None = None
    mutual_tls: bool = False
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 500

    def __post_init__(self) -> None:
        if self.token is None and not self.mutual_tls and not is_loopback(self.host):
            raise GatewayError(
                Reason.CONFIG_INVALID,
                f"source {self.name}: host {self.host!r} is not loopback, so a token_file or client_ca_file "
                "(mutual TLS) is required",
            )


class _Refused(Exception):
    """A request refused: ``status`` and a reason code (the answer's body)."""

    def __init__(self, status: int, reason: Reason, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class _Request:
    event_type: str
    data: dict[str, Any]
    recipients: tuple[str, ...]
    dataschema: str | None
    event_id: str | None


def _parse_event(document: object, where: str = "body") -> _Request:
    """The strict shape of one event request (the drop folder's line shape, plus an optional ``id``)."""
    if not isinstance(document, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, f"{where} is not a JSON object")
    unknown = set(document) - _EVENT_MEMBERS
    if unknown:  # names are not echoed: a key could be anything a client sent
        raise GatewayError(
            Reason.SCHEMA_INVALID,
            f"{where} has {len(unknown)} unknown member(s); allowed: {', '.join(sorted(_EVENT_MEMBERS))}",
        )
    event_type = document.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise GatewayError(Reason.SCHEMA_INVALID, f"{where} has no 'type' string")
    data = document.get("data")
    if not isinstance(data, dict):
        raise GatewayError(Reason.SCHEMA_INVALID, f"{where} has no 'data' object")
    recipients = document.get("recipients", [])
    if not isinstance(recipients, list) or not all(isinstance(r, str) and r for r in recipients):
        raise GatewayError(Reason.SCHEMA_INVALID, f"{where}: 'recipients' is not a list of party ids")
    dataschema = document.get("dataschema")
    if dataschema is not None and (not isinstance(dataschema, str) or not dataschema):
        raise GatewayError(Reason.SCHEMA_INVALID, f"{where}: 'dataschema' is not a string")
    event_id = document.get("id")
    if event_id is not None and (not isinstance(event_id, str) or not _ID_PATTERN.fullmatch(event_id)):
        raise GatewayError(
            Reason.SCHEMA_INVALID, f"{where}: 'id' must be 1-128 characters of A-Z a-z 0-9 . _ : -"
        )
    return _Request(event_type, data, tuple(recipients), dataschema, event_id)


def _status_of(reason: Reason) -> int:
    if reason in _NOT_NOW:
        return 503
    if reason is Reason.SIZE_EXCEEDED:
        return 413
    if reason is Reason.INTERNAL_ERROR:
        return 500
    if str(reason).startswith(_BAD_REQUEST):
        return 400
    return 422  # the contract refused the event: schema.*, authz.*, seal.*, privacy.*


def _error(
    status: int, reason: Reason | str, detail: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"reason": str(reason), "detail": detail}, status=status, headers={**_NO_STORE, **(headers or {})}
    )


class HttpIntake:
    """The HTTP intake source: serves until the gateway's intake stops, publishing each accepted request."""

    def __init__(self, settings: HttpIntakeSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.port: int | None = None
        """The port actually bound (``port = 0`` picks a free one), once :meth:`run` listens."""
        self.listening = asyncio.Event()

    def app(self, publish: PublishFn) -> web.Application:
        """The application (also used by tests and the OpenAPI fuzzing on their own server)."""
        settings = self.settings
        app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[self._guard])
        handlers = _Handlers(settings, publish)
        app.router.add_post("/v1/events", handlers.publish_one, name="events")
        app.router.add_post("/v1/events:batch", handlers.publish_batch, name="batch")
        app.router.add_get("/v1/openapi.json", handlers.openapi, name="openapi")
        return app

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Authentication first, then one JSON error shape for everything, and one log line per request."""
        started = time.monotonic()
        route = request.match_info.route.name or "unmatched"
        reason = ""
        try:
            self._authenticate(request)
            response = await handler(request)
        except _Refused as refused:
            reason = str(refused.reason)
            response = _error(refused.status, refused.reason, refused.detail, refused.headers)
        except web.HTTPNotFound:
            reason = str(Reason.HTTP_NOT_FOUND)
            response = _error(404, Reason.HTTP_NOT_FOUND, "no such endpoint (see /v1/openapi.json)")
        except web.HTTPMethodNotAllowed as exc:
            reason = str(Reason.HTTP_METHOD_NOT_ALLOWED)
            allowed = ", ".join(sorted(exc.allowed_methods))
            response = _error(405, Reason.HTTP_METHOD_NOT_ALLOWED, f"allowed: {allowed}", {"Allow": allowed})
        except web.HTTPRequestEntityTooLarge:
            reason = str(Reason.SIZE_EXCEEDED)
            response = _error(413, Reason.SIZE_EXCEEDED, f"body exceeds {self.settings.max_body_bytes} bytes")
        except web.HTTPException as exc:  # anything else aiohttp raises about the request itself
            reason = "http"
            response = _error(exc.status if 400 <= exc.status < 500 else 400, Reason.SCHEMA_INVALID,
                              "malformed request")  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bug met by this request: its type only, never a trace
            reason = str(Reason.INTERNAL_ERROR)
            _log.error("http_intake.internal_error", source=self.name, route=route, error=type(exc).__name__)
            response = _error(500, Reason.INTERNAL_ERROR, f"the gateway raised {type(exc).__name__}")
        _log.info(
            "http_intake.request", source=self.name, method=request.method, route=route,
            status=response.status, reason=reason or None, event_id=response.headers.get("X-Xchg-Event-Id"),
            ms=round((time.monotonic() - started) * 1000, 1),
        )  # fmt: skip
        return response

    def _authenticate(self, request: web.Request) -> None:
        token = self.settings.token
        if token is None:
            return  # loopback only, or mutual TLS (the TLS handshake already required a client certificate)
        presented = request.headers.get("Authorization", "")
        scheme, _, value = presented.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise _Refused(
                401, Reason.AUTH_UNAUTHORIZED, "a valid bearer token is required",
                {"WWW-Authenticate": 'Bearer realm="xchg-gateway"'},
            )  # fmt: skip

    async def run(self, publish: PublishFn, stop: asyncio.Event) -> None:
        settings = self.settings
        runner = web.AppRunner(self.app(publish), handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=settings.tls)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self.listening.set()
            _log.info("http_intake.listening", source=self.name, host=settings.host, port=self.port,
                      tls=settings.tls is not None, mutual_tls=settings.mutual_tls,
                      token=settings.token is not None)  # fmt: skip
            await stop.wait()
        finally:
            self.listening.clear()
            await runner.cleanup()


class _Handlers:
    def __init__(self, settings: HttpIntakeSettings, publish: PublishFn) -> None:
        self.settings, self._publish = settings, publish

    async def _body(self, request: web.Request) -> object:
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
            raise _Refused(415, Reason.HTTP_UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Refused(413, Reason.SIZE_EXCEEDED, f"body exceeds {limit} bytes")
        raw = await request.content.read(limit + 1)  # never more than the limit into memory
        if len(raw) > limit:
            raise _Refused(413, Reason.SIZE_EXCEEDED, f"body exceeds {limit} bytes")
        try:
            return parse_json(raw)
        except GatewayError as exc:
            raise _Refused(400, exc.reason, exc.detail) from None

    async def _one(self, request: _Request) -> dict[str, str]:
        event = await self._publish(
            request.event_type, request.data, recipients=request.recipients,
            dataschema=request.dataschema, event_id=request.event_id,
        )  # fmt: skip
        return {"id": event.id, "type": event.type, "accepted": "outbox"}

    async def publish_one(self, request: web.Request) -> web.Response:
        document = await self._body(request)
        try:
            parsed = _parse_event(document)
        except GatewayError as exc:  # the request's shape: 400, like strict JSON
            raise _Refused(400, exc.reason, exc.detail) from None
        try:
            accepted = await self._one(parsed)
        except GatewayError as exc:
            status = _status_of(exc.reason)
            raise _Refused(
                status, exc.reason, exc.detail, {"Retry-After": "5"} if status == 503 else None
            ) from None
        return web.json_response(
            accepted, status=202, headers={**_NO_STORE, "X-Xchg-Event-Id": accepted["id"]}
        )

    async def publish_batch(self, request: web.Request) -> web.Response:
        """Each event on its own: the answer lists, in order, each one's id or the reason the contract refused
        it; 200 when the batch was read (even if some events were refused). A batch of the wrong shape, or
        holding one request of the wrong shape, is refused whole (400) and nothing is written."""
        document = await self._body(request)
        if (
            not isinstance(document, dict)
            or set(document) != {"events"}
            or not isinstance(document["events"], list)
        ):
            raise _Refused(400, Reason.SCHEMA_INVALID, 'body must be {"events": [...]}')
        events: Sequence[object] = document["events"]
        if not 1 <= len(events) <= self.settings.max_batch:
            raise _Refused(
                413 if events else 400, Reason.SIZE_EXCEEDED if events else Reason.SCHEMA_INVALID,
                f"a batch holds 1 to {self.settings.max_batch} events",
            )  # fmt: skip
        try:  # every event's shape first: a batch with one malformed request is refused whole
            parsed = [_parse_event(item, f"events[{index}]") for index, item in enumerate(events)]
        except GatewayError as exc:
            raise _Refused(400, exc.reason, exc.detail) from None
        results: list[dict[str, Any]] = []
        for index, item in enumerate(parsed):
            try:
                results.append({"index": index, **await self._one(item)})
            except GatewayError as exc:
                if exc.reason in _NOT_NOW:  # the gateway cannot take more now: the rest is not tried
                    raise _Refused(503, exc.reason, f"{exc.detail} (events from index {index} not accepted)",
                                   {"Retry-After": "5"}) from None  # fmt: skip
                results.append({"index": index, "reason": str(exc.reason), "detail": exc.detail})
        accepted = sum("id" in r for r in results)
        body = {"accepted": accepted, "refused": len(results) - accepted, "results": results}
        return web.json_response(body, status=200, headers=_NO_STORE)

    async def openapi(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(OPENAPI_FILE.read_bytes)
        return web.Response(body=body, content_type="application/json", headers=_NO_STORE)


def http_intake_source(options: Table, *, party: str) -> HttpIntake:
    """Build the source from its option table (every option checked, an unknown one refused by the caller)."""
    del party
    options.only(
        "name", "host", "port", "token_file", "tls_cert_file", "tls_key_file", "client_ca_file",
        "max_body_bytes", "max_batch",
    )  # fmt: skip
    token_file = options.path("token_file", None)
    token = read_secret(token_file, options.name("token_file")) if token_file is not None else None
    cert, key, client_ca = (
        options.path(k, None) for k in ("tls_cert_file", "tls_key_file", "client_ca_file")
    )
    if (cert is None) != (key is None):
        raise options.fail(
            "tls_key_file" if key is None else "tls_cert_file",
            "HTTPS needs both tls_cert_file and tls_key_file",
        )
    if client_ca is not None and cert is None:
        raise options.fail("client_ca_file", "mutual TLS needs tls_cert_file and tls_key_file too")
    context = None
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise options.fail("tls_cert_file", "cannot load the certificate and tls_key_file") from exc
        if client_ca is not None:
            try:
                context.load_verify_locations(cafile=str(client_ca))
            except (OSError, ssl.SSLError) as exc:
                raise options.fail("client_ca_file", "cannot load the client CA certificates") from exc
            context.verify_mode = ssl.CERT_REQUIRED
    host = options.string("host", "127.0.0.1")
    if token is None and client_ca is None and not is_loopback(host):
        raise options.fail(
            "host", "not a loopback address: a token_file or client_ca_file (mutual TLS) is required"
        )
    settings = HttpIntakeSettings(
        name=options.string("name", "http"),
        host=host,
        port=options.integer("port", 8090, low=0, high=65535),
        token=token,
        tls=context,
        mutual_tls=client_ca is not None,
        max_body_bytes=options.integer("max_body_bytes", 1024 * 1024, low=1024, high=64 * 1024 * 1024),
        max_batch=options.integer("max_batch", 500, low=1, high=10_000),
    )
    return HttpIntake(settings)
