"""The operations HTTP surface: ``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics``.

Why liveness and readiness differ: ``/healthz`` answers 200 whenever the event loop can serve a request and
no supervised task keeps failing (:mod:`gateway.runtime.supervisor`: 503 naming the task and the exception
type), so an orchestrator restarts the process only when it is truly stuck or cannot recover by itself; a
Kafka outage must not make every agency's gateway restart in a loop (broker errors never count there).
``/readyz`` runs the :class:`ReadinessCheck` probes (signing key usable, registry entry valid and not about
to expire, schemas loaded, broker reachable, outbox and lag below their limits, every supervised task
running) and answers 503 when any fails, which takes the gateway out of service and pages an operator
without killing it.

Every probe runs concurrently and is bounded by ``check_timeout``: a hung dependency is reported as a failed
check ("timed out after 2s") and the response still comes back in time. A probe returns a short detail when
it passes and raises :class:`CheckFailed` (detail = its message) when it does not. Details are shown to
whoever can reach the endpoint, so they carry ids, counts and reason codes only, never secrets or personal
data: a :class:`~gateway.errors.GatewayError` is reported by its reason and detail (which never contain
personal data by convention) and any other exception by its type name alone, since library messages can
quote data.

With :class:`StatusOptions`, the same application serves the operators' status page (``status``, ``/``
redirects there, and its two static files; :mod:`gateway.runtime.status`) and samples the metrics and the
readiness checks every ``history.interval`` seconds for its rates and charts; every run of the checks (that
sampler's or a ``/readyz`` probe's) sets ``xchg_readiness_check{check}`` for alerting.

The server binds to loopback by default (:func:`start_ops_server`): it is for the local Prometheus agent and
orchestrator probes, not for the network. See ``docs/OPERATIONS_HTTP.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from aiohttp import web

from gateway.bus.connectivity import check_connection
from gateway.bus.kafka import KafkaSettings
from gateway.bus.metrics import METRICS_CONTENT_TYPE, GatewayMetrics
from gateway.contract.keys import PublicKey, SigningKey
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.sign import EventSigner
from gateway.coordination.statistics import Statistics
from gateway.errors import GatewayError, Reason
from gateway.runtime.catalogue import negotiate
from gateway.runtime.status import (
    History,
    StatusFacts,
    StatusPage,
    StatusView,
    collect_checkpoint,
    read_metrics,
)

__all__ = [
    "CheckFailed",
    "CheckResult",
    "ReadinessCheck",
    "StatusOptions",
    "build_ops_app",
    "kafka_check",
    "registry_check",
    "run_checks",
    "schemas_check",
    "signing_key_check",
    "start_ops_server",
    "stop_ops_server",
    "threshold_check",
]

_log = structlog.get_logger(__name__)

#: Domain separation for the readiness self-test signature: it can never be mistaken for a DSSE PAE
#: ("DSSEv1 ...") message, so the signature it produces is useless as an event signature.
_SELF_TEST_CONTEXT: Final = b"xchg-gateway readiness self-test v1\x00"

_NO_CACHE: Final = {"Cache-Control": "no-store"}

#: The status page's headers: nothing but its own origin may run, style, frame or be fetched.
_PAGE_HEADERS: Final = {
    **_NO_CACHE,
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_STATIC: Final = Path(__file__).with_name("static")
_STATIC_TYPES: Final = {"status.js": "text/javascript", "status.css": "text/css"}


class CheckFailed(Exception):
    """Raised by a probe to fail its check; the message is the detail shown on ``/readyz``."""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """A named probe: returns a short detail when OK; raises :class:`CheckFailed` (or anything) when not."""

    name: str
    probe: Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


# ---- running checks ---------------------------------------------------------------------------------------

#: Probes that ignored cancellation after their timeout; held so they are not garbage-collected mid-flight.
_lingering: set[asyncio.Task[CheckResult]] = set()


async def run_checks(checks: Sequence[ReadinessCheck], check_timeout: float) -> list[CheckResult]:
    """Run every probe concurrently, each bounded by ``check_timeout`` seconds; results in ``checks`` order.

    Returns within about ``check_timeout`` even if a probe swallows cancellation (it is left to finish alone).
    """
    tasks = [asyncio.create_task(_run_one(check), name=f"readyz:{check.name}") for check in checks]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, timeout=check_timeout)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
                _lingering.add(task)
                task.add_done_callback(_lingering.discard)
    results = []
    for check, task in zip(checks, tasks, strict=True):
        if task.done() and not task.cancelled():
            results.append(task.result())
        else:
            results.append(CheckResult(check.name, ok=False, detail=f"timed out after {check_timeout:g}s"))
    return results


async def _run_one(check: ReadinessCheck) -> CheckResult:
    try:
        detail = await check.probe()
    except CheckFailed as exc:
        return CheckResult(check.name, ok=False, detail=str(exc) or "failed")
    except GatewayError as exc:
        return CheckResult(check.name, ok=False, detail=f"{exc.reason}: {exc.detail}")
    except Exception as exc:  # noqa: BLE001 - any probe failure is a failed check; the type name only
        return CheckResult(check.name, ok=False, detail=type(exc).__name__)
    return CheckResult(check.name, ok=True, detail=str(detail))


# ---- the application -------------------------------------------------------------------------------------

_METRICS: Final[web.AppKey[GatewayMetrics]] = web.AppKey("metrics")
_CHECKS: Final[web.AppKey[Sequence[ReadinessCheck]]] = web.AppKey("checks")
_TIMEOUT: Final[web.AppKey[float]] = web.AppKey("check_timeout")
_LAST_READY: Final[web.AppKey[list[bool]]] = web.AppKey("last_ready")
_LIVENESS: Final[web.AppKey[Callable[[], Sequence[Mapping[str, object]]]]] = web.AppKey("liveness")
_STATUS: Final[web.AppKey[StatusOptions]] = web.AppKey("status")
_LAST_CHECKS: Final[web.AppKey[list[tuple[float, list[CheckResult]]]]] = web.AppKey("last_checks")


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusOptions:
    """What the status page needs beyond the metrics and checks (:mod:`gateway.runtime.status`)."""

    facts: Callable[[], StatusFacts] = StatusFacts
    history: History = field(default_factory=History)
    checkpoint: Callable[[], Awaitable[bytes]] | None = None
    """Fetches the notary's latest checkpoint note (``ops.notary_url``); None: not configured."""
    refresh_seconds: int = 15
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    page: StatusPage = field(default_factory=StatusPage)
    sample: bool = True
    """Run the sampler task (tests record snapshots themselves)."""
    statistics: Callable[[], Statistics | None] = lambda: None
    """The coordination component's last completed period (charted in the SOP section); None: none yet."""


def _alive() -> Sequence[Mapping[str, object]]:
    return ()


def build_ops_app(
    *,
    metrics: GatewayMetrics,
    checks: Sequence[ReadinessCheck],
    check_timeout: float = 2.0,
    liveness: Callable[[], Sequence[Mapping[str, object]]] = _alive,
    status: StatusOptions | None = None,
) -> web.Application:
    """The ``/healthz``, ``/readyz`` and ``/metrics`` application of one gateway (plus the status page with
    ``status``).

    ``liveness()`` lists what keeps the process from being alive (the supervisor's failing tasks, value-free
    JSON objects); ``/healthz`` answers 503 with them while the list is not empty."""
    if check_timeout <= 0:
        raise ValueError("check_timeout must be positive")
    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"readiness check names must be unique: {names}")
    app = web.Application()
    app[_METRICS] = metrics
    app[_CHECKS] = list(checks)
    app[_TIMEOUT] = float(check_timeout)
    app[_LAST_READY] = []
    app[_LIVENESS] = liveness
    app[_LAST_CHECKS] = []
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if status is not None:
        app[_STATUS] = status
        app.router.add_get("/", _root)
        app.router.add_get("/status", _status)
        app.router.add_get("/static/{name}", _static)
        if status.sample:
            app.cleanup_ctx.append(_sampler)
    return app


async def _checked(app: web.Application) -> list[CheckResult]:
    """Run the checks; remember the results and set ``xchg_readiness_check`` for each."""
    results = await run_checks(app[_CHECKS], app[_TIMEOUT])
    gauge = app[_METRICS].readiness
    for result in results:
        gauge.labels(check=result.name).set(1 if result.ok else 0)
    app[_LAST_CHECKS][:] = [(time.monotonic(), results)]
    return results


async def _sampler(app: web.Application) -> AsyncIterator[None]:
    """Every ``history.interval``: run the checks and record a snapshot of the metrics for the charts."""
    options = app[_STATUS]

    async def sample() -> None:
        while True:
            with contextlib.suppress(Exception):  # a failing probe is a failed check, never a dead sampler
                await _checked(app)
            options.history.record(read_metrics(app[_METRICS].registry))
            await asyncio.sleep(options.history.interval)

    task = asyncio.create_task(sample(), name="status-sampler")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _root(request: web.Request) -> web.Response:
    # relative: behind a reverse proxy under /some/prefix/ this stays under the prefix
    return web.Response(status=302, headers={"Location": "status", **_NO_CACHE})


async def _status(request: web.Request) -> web.Response:
    app = request.app
    options = app[_STATUS]
    lang = negotiate(request.query.get("lang"), request.headers.get("Accept-Language"))
    last = app[_LAST_CHECKS]
    fresh = last and time.monotonic() - last[0][0] <= 2 * options.history.interval
    results = last[0][1] if fresh else await _checked(app)
    metrics = app[_METRICS]
    snapshot = read_metrics(metrics.registry)
    checkpoint = await collect_checkpoint(options.checkpoint) if options.checkpoint is not None else False
    version = next(
        (dict(labels).get("version", "") for (name, labels) in snapshot if name == "xchg_gateway_info"), ""
    )
    view = StatusView(
        party=metrics.party, version=version, now=options.now(), snapshot=snapshot,
        history=options.history, facts=options.facts(),
        checks=[(r.name, r.ok, r.detail) for r in results], failing_tasks=list(app[_LIVENESS]()),
        checkpoint=checkpoint, refresh_seconds=options.refresh_seconds, statistics=options.statistics(),
    )  # fmt: skip
    fragment = request.query.get("fragment") == "1"
    text = options.page.render(view, lang, fragment=fragment)
    headers = {**_PAGE_HEADERS, "Content-Language": lang, "Vary": "Accept-Language"}
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = _STATIC_TYPES.get(name)
    if content_type is None:  # only the page's own two files; no directory listing, no other path
        raise web.HTTPNotFound()
    body = await asyncio.to_thread((_STATIC / name).read_bytes)
    return web.Response(
        body=body, content_type=content_type, charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )  # fmt: skip


async def _healthz(request: web.Request) -> web.Response:
    failing = list(request.app[_LIVENESS]())
    if failing:
        return web.json_response({"status": "failing", "tasks": failing}, status=503, headers=_NO_CACHE)
    return web.json_response({"status": "alive"}, headers=_NO_CACHE)


async def _readyz(request: web.Request) -> web.Response:
    app = request.app
    results = await _checked(app)
    ready = all(result.ok for result in results)
    last = app[_LAST_READY]
    if last != [ready]:  # log transitions (and the first answer), not every probe
        failed = {r.name: r.detail for r in results if not r.ok}
        if ready:
            _log.info("ops.ready", party=app[_METRICS].party)
        else:
            _log.warning("ops.not_ready", party=app[_METRICS].party, failed_checks=failed)
        last[:] = [ready]
    body = {"ready": ready, "checks": [result.as_json() for result in results]}
    return web.json_response(body, status=200 if ready else 503, headers=_NO_CACHE)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[_METRICS].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE, **_NO_CACHE})


async def start_ops_server(
    app: web.Application, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = False
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 = any free port); returns the runner and the port actually bound.

    Access logging is off by default: probes and scrapes every few seconds would drown the gateway's own
    logs. Signals are left to the gateway's runtime.
    """
    runner = (
        web.AppRunner(app, handle_signals=False)
        if access_log
        else web.AppRunner(app, handle_signals=False, access_log=None)
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        actual = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    _log.info("ops.listening", host=host, port=actual)
    return runner, actual


async def stop_ops_server(runner: web.AppRunner) -> None:
    """Stop serving and release the port."""
    await runner.cleanup()


# ---- check factories --------------------------------------------------------------------------------------


def signing_key_check(
    signer: EventSigner,
    public_key: PublicKey,
    *,
    load: Callable[[], SigningKey] | None = None,
    name: str = "signing-key",
) -> ReadinessCheck:
    """Sign a fresh random nonce with the gateway's key and verify it with the registered public key.

    Catches a key file that does not belong to the registry entry (wrong file deployed after a rotation)
    before any peer rejects our events with ``sig.invalid``. With ``load`` (re-reads the key file as start-up
    does, raising ``GatewayError(keyfile.invalid)``), the key *file* is checked too, in a worker thread: a
    file that was deleted, made unreadable, corrupted or replaced by another key fails the check, because
    the next restart would fail or sign with a key peers do not accept.
    """

    async def probe() -> str:
        keys = [("in-memory key", signer.key)]
        if load is not None:
            try:
                keys.append(("key file", await asyncio.to_thread(load)))
            except GatewayError as exc:
                raise CheckFailed(f"{exc.reason}: {exc.detail}") from None
            except Exception as exc:  # noqa: BLE001 - reported by type only
                raise CheckFailed(
                    f"key file of {signer.kid} cannot be loaded ({type(exc).__name__})"
                ) from None
        for what, key in keys:
            message = _SELF_TEST_CONTEXT + secrets.token_bytes(32)
            try:
                signature = key.sign(message)
            except Exception as exc:  # noqa: BLE001 - reported by type only
                raise CheckFailed(f"signing with {what} {signer.kid} failed ({type(exc).__name__})") from None
            if key.alg != public_key.alg or not public_key.verify(signature, message):
                raise CheckFailed(
                    f"{what} of {signer.kid} does not match the registered {public_key.alg} public key"
                )
        checked = " and key file" if load is not None else ""
        return f"{signer.kid} ({signer.key.alg}) signs and verifies{checked}"

    return ReadinessCheck(name, probe)


def registry_check(
    registry: Registry | Callable[[], Registry | None],
    party: str,
    *,
    kid: str,
    min_days: int,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    name: str = "registry",
) -> ReadinessCheck:
    """The registry is loaded, ``party`` is in it, and its signing key ``kid`` is usable for ``min_days``.

    ``registry`` may be a callable returning the current registry (``None`` while none is loaded), for
    gateways that reload it. Fails for a key that is unknown, another party's, not a signing key, not yet
    valid, expired, revoked, or whose expiry or scheduled revocation is less than ``min_days`` away (the
    detail says how many days are left): rotating a key takes every agency's registry update, so it must
    start well before the old one stops verifying.
    """

    async def probe() -> str:
        current = registry() if callable(registry) else registry
        if current is None:
            raise CheckFailed("no registry loaded")
        if current.party(party) is None:
            raise CheckFailed(f"party {party} is not in the registry")
        key = current.key(kid)
        if key is None:
            raise CheckFailed(f"signing key {kid} is not in the registry")
        if key.party != party:
            raise CheckFailed(f"key {kid} belongs to {key.party}, not {party}")
        if key.use != "sig":
            raise CheckFailed(f"key {kid} is a {key.use} key, not a signing key")
        instant = now()
        problem = key.problem_at(instant)
        if problem is Reason.KEY_REVOKED and key.revoked_at is not None:
            raise CheckFailed(f"signing key {kid} is revoked since {_iso(key.revoked_at)} ({problem})")
        if problem is Reason.KEY_NOT_YET_VALID:
            raise CheckFailed(f"signing key {kid} is not valid before {_iso(key.valid_from)} ({problem})")
        if problem is Reason.KEY_EXPIRED and key.valid_until is not None:
            raise CheckFailed(f"signing key {kid} expired at {_iso(key.valid_until)} ({problem})")
        if problem is not None:
            raise CheckFailed(f"signing key {kid} is not usable ({problem})")
        ends = [t for t in (key.valid_until, key.revoked_at) if t is not None]
        if not ends:
            return f"{party}: signing key {kid} valid, no expiry"
        end = min(ends)
        what = "revocation scheduled" if end == key.revoked_at else "expires"
        days = (end - instant) // timedelta(days=1)
        if end - instant < timedelta(days=min_days):
            raise CheckFailed(
                f"signing key {kid} {what} in {days} day(s) at {_iso(end)}; at least {min_days} required"
            )
        return f"{party}: signing key {kid} valid, {what} in {days} day(s)"

    return ReadinessCheck(name, probe)


def schemas_check(store: SchemaStore, *, name: str = "schemas") -> ReadinessCheck:
    """At least one message schema is loaded; reports how many."""

    async def probe() -> str:
        count = len(store.schemas())
        if count == 0:
            raise CheckFailed("no message schemas loaded")
        return f"{count} schema version(s) for {len(store.types())} type(s)"

    return ReadinessCheck(name, probe)


def threshold_check(
    name: str, value: Callable[[], float | Awaitable[float]], maximum: float, unit: str
) -> ReadinessCheck:
    """``value()`` (sync or async) must be finite and at most ``maximum``: outbox backlog, consumer lag."""

    async def probe() -> str:
        current = value()
        if inspect.isawaitable(current):
            current = await current
        number = float(current)
        if not math.isfinite(number):
            raise CheckFailed(f"{name} is not a finite number")
        if number > maximum:
            raise CheckFailed(f"{number:g} {unit} exceeds the maximum of {maximum:g} {unit}")
        return f"{number:g} {unit} (maximum {maximum:g})"

    return ReadinessCheck(name, probe)


def kafka_check(settings: KafkaSettings, timeout: float, *, name: str = "kafka") -> ReadinessCheck:
    """Connect to the cluster with the gateway's settings (:func:`gateway.bus.kafka.check_connection`).

    Reports how many brokers are reachable. Give ``timeout`` below the app's ``check_timeout`` so the
    detail says what failed rather than just "timed out". Settings for the embedded broker must first be
    pointed at it (:meth:`KafkaSettings.for_embedded`).
    """

    async def probe() -> str:
        if settings.embedded:
            raise CheckFailed("no bootstrap servers (embedded broker settings not resolved)")
        try:
            async with asyncio.timeout(timeout):
                brokers = await check_connection(settings)
        except TimeoutError:
            raise CheckFailed(f"no answer from the cluster within {timeout:g}s") from None
        except GatewayError as exc:
            raise CheckFailed(exc.detail) from None
        return f"{len(brokers)} broker(s) reachable"

    return ReadinessCheck(name, probe)


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
