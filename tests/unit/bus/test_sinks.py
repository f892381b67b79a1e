"""Sinks against a real local HTTP server (aiohttp on 127.0.0.1, ephemeral port), and the retry loop."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs
from yarl import URL

import gateway.runtime.webhook as webhook_module
from gateway.bus.delivery import RetryPolicy, SinkError, deliver_with_retry, is_retryable_status
from gateway.contract.verify import Accepted
from gateway.errors import GatewayError, Reason
from gateway.runtime.webhook import WebhookSink
from gateway.sandbox.memory import MemorySink
from tests.world import World, example

SYNTHETIC_NAME = "Sri Wahyuningsih Purbasari"  # invented; must never reach an error, log or DLQ header
URL_SECRET = "s3cr3t-url-token"  # a token in a URL must never reach an error or a log either


def referral(world: World, **changes: Any) -> Accepted:
    event = world.event(
        "id.trafficking.case.referral",
        {**example("case.referral", "1.0")[0][1], **changes},
        by="kemlu.kbri-kuching",
        recipients=["kemensos"],
    )
    verdict = world.verifier("kemensos").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted), verdict
    assert verdict.unsealed  # the payload includes what was sealed for kemensos
    return verdict


@pytest.fixture(scope="module")
def accepted(world: World) -> Accepted:
    return referral(world)


@pytest.fixture(scope="module")
def other_case(world: World) -> Accepted:
    """An event about another case than ``accepted``'s."""
    return referral(world, case_id="KBRI-KCH-2020-000124")


@dataclass
class Endpoint:
    """A scripted agency endpoint: answers with ``statuses`` in turn (the last one repeats)."""

    statuses: list[int]
    body: str = ""
    hang: bool = False
    retry_after: str | None = None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    url: str = ""
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.paths.append(request.path)
        if self.hang:
            await asyncio.Event().wait()  # never answers; the client's timeout must fire
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        headers = {"Location": "http://127.0.0.1:9/x"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return web.Response(status=status, text=self.body, headers=headers)


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def start(endpoint: Endpoint) -> Endpoint:
        app = web.Application()
        app.router.add_post("/hook", endpoint.handle)
        app.router.add_post("/cases/{case_id}/updates", endpoint.handle)  # an API naming the case in the path
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        endpoint.url = str(server.make_url("/hook"))
        endpoint.base = str(server.make_url("/"))
        return endpoint

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def sink_factory() -> AsyncIterator[Any]:
    sinks: list[WebhookSink] = []

    def make(url: str, **kwargs: Any) -> WebhookSink:
        sink = WebhookSink(url, **kwargs)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


class Sleeps:
    """Injected ``sleep``: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


NO_JITTER = RetryPolicy(attempts=3, base_delay=0.2, max_delay=10.0, jitter=0.0)


# ---- WebhookSink ---------------------------------------------------------------------------------------
async def test_webhook_delivers_body_and_headers(serve: Any, sink_factory: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([200]))
    sink = sink_factory(
        endpoint.url, headers={"Authorization": "Bearer test-token", "Idempotency-Key": "overridden?"}
    )
    await sink.deliver(accepted)

    assert len(endpoint.requests) == 1
    headers, body = endpoint.requests[0]
    event = accepted.event
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == f"{event.source}/{event.id}"
    assert headers["X-Xchg-Event-Id"] == event.id
    assert headers["X-Xchg-Source"] == "kemlu.kbri-kuching"
    assert headers["X-Xchg-Type"] == "id.trafficking.case.referral"
    assert headers["Authorization"] == "Bearer test-token"
    document = json.loads(body)
    assert document == {
        "event": {
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": event.time,
            "dataschema": event.dataschema,
            "dataclassification": event.dataclassification,
        },
        "payload": accepted.payload(),
    }
    assert "sealed" not in document["payload"]
    assert set(accepted.unsealed or {}) <= set(document["payload"])


async def test_webhook_409_counts_as_delivered(serve: Any, sink_factory: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([409]))
    await sink_factory(endpoint.url).deliver(accepted)
    assert len(endpoint.requests) == 1


async def test_retry_500_then_200_succeeds(serve: Any, sink_factory: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([500, 200]))
    sleeps, failures = Sleeps(), []
    await deliver_with_retry(
        sink_factory(endpoint.url),
        accepted,
        NO_JITTER,
        sleep=sleeps,
        on_failure=lambda error, attempt: failures.append((error.status, attempt)),
    )
    assert len(endpoint.requests) == 2
    assert sleeps.delays == [0.2]
    assert failures == [(500, 1)]
    # the retry carries the same idempotency key, so the endpoint can deduplicate
    assert endpoint.requests[0][0]["Idempotency-Key"] == endpoint.requests[1][0]["Idempotency-Key"]


async def test_400_is_not_retried(serve: Any, sink_factory: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([400, 200]))
    sleeps = Sleeps()
    with pytest.raises(SinkError) as info:
        await deliver_with_retry(sink_factory(endpoint.url), accepted, NO_JITTER, sleep=sleeps)
    assert info.value.retryable is False
    assert info.value.status == 400
    assert info.value.reason is Reason.SINK_REFUSED  # a permanent refusal, not an outage
    assert len(endpoint.requests) == 1
    assert sleeps.delays == []


async def test_exhausted_retries_raise_last_error(serve: Any, sink_factory: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([503]))
    sleeps, attempts = Sleeps(), []
    with pytest.raises(SinkError) as info:
        await deliver_with_retry(
            sink_factory(endpoint.url),
            accepted,
            NO_JITTER,
            sleep=sleeps,
            on_failure=lambda _error, attempt: attempts.append(attempt),
        )
    assert info.value.retryable is True
    assert info.value.status == 503
    assert len(endpoint.requests) == 3
    assert sleeps.delays == [0.2, 0.4]
    assert attempts == [1, 2, 3]


@pytest.mark.parametrize("status", [400, 500])
async def test_error_detail_never_contains_the_body(
    serve: Any, sink_factory: Any, accepted: Accepted, status: int
) -> None:
    endpoint = await serve(Endpoint([status], body=f'{{"error": "duplicate victim {SYNTHETIC_NAME}"}}'))
    with capture_logs() as logs, pytest.raises(SinkError) as info:
        await deliver_with_retry(
            sink_factory(endpoint.url, name="kemensos-cms"), accepted, NO_JITTER, sleep=Sleeps()
        )
    assert f"HTTP {status}" in info.value.detail
    assert "kemensos-cms" in info.value.detail
    assert logs  # the failure was logged ...
    for text in (info.value.detail, str(info.value), repr(info.value), repr(logs)):  # ... without the body
        assert SYNTHETIC_NAME not in text
        assert "Wahyuningsih" not in text


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (301, False),
        (302, False),
        (401, False),
        (403, False),
        (404, False),
        (413, False),
        (422, False),
    ],
)
async def test_status_classification(
    serve: Any, sink_factory: Any, accepted: Accepted, status: int, retryable: bool
) -> None:
    endpoint = await serve(Endpoint([status]))
    with pytest.raises(SinkError) as info:
        await sink_factory(endpoint.url).deliver(accepted)
    assert info.value.retryable is retryable
    assert is_retryable_status(status) is retryable
    assert len(endpoint.requests) == 1  # redirects are not followed


RETRY_AFTER_CASES = [
    (503, "120", 120.0),
    (429, "Wed, 21 Oct 2015 07:28:00 GMT", 3600.0),  # an HTTP date, an hour after "now" below
    (503, "Wed, 21 Oct 2015 05:00:00 GMT", 0.0),  # in the past: no wait of its own
    (503, "soon", None),  # unreadable: the backoff applies
    (503, None, None),
]


@pytest.mark.parametrize("case", RETRY_AFTER_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
async def test_retry_after_is_passed_on_in_seconds(
    serve: Any,
    sink_factory: Any,
    accepted: Accepted,
    case: tuple[int, str | None, float | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, header, expected = case
    now = datetime(2015, 10, 21, 6, 28, tzinfo=UTC)
    monkeypatch.setattr(webhook_module, "retry_after", functools.partial(webhook_module.retry_after, now=now))
    endpoint = await serve(Endpoint([status], retry_after=header))
    with pytest.raises(SinkError) as info:
        await sink_factory(endpoint.url).deliver(accepted)
    assert info.value.retryable is True
    assert info.value.retry_after == expected


async def test_connection_refused_is_retryable(sink_factory: Any, accepted: Accepted) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SinkError) as info:
        await sink_factory(f"http://127.0.0.1:{port}/hook").deliver(accepted)
    assert info.value.retryable is True
    assert info.value.status is None


async def test_timeout_is_retryable(serve: Any, sink_factory: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([200], hang=True))
    with pytest.raises(SinkError) as info:
        await sink_factory(endpoint.url, timeout=0.2).deliver(accepted)
    assert info.value.retryable is True
    assert "timed out" in info.value.detail


async def test_close_only_closes_own_session(serve: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([200]))
    async with aiohttp.ClientSession() as shared:
        sink = WebhookSink(endpoint.url, session=shared)
        await sink.deliver(accepted)
        await sink.close()
        assert not shared.closed
    with pytest.raises(SinkError) as info:  # shared session closed under the sink: retry, do not dead-letter
        await sink.deliver(accepted)
    assert info.value.retryable is True
    own = WebhookSink(endpoint.url)
    await own.deliver(accepted)
    session = own._session
    assert session is not None
    await own.close()
    assert session.closed


INVALID_URLS = [
    "ftp://example.org/x",
    "/relative",
    "http:///nohost",
    "not a url",
    "http://[::1/x",  # not parseable at all
    f"file:///cases/{URL_SECRET}/updates",
]


@pytest.mark.parametrize("url", INVALID_URLS)
def test_invalid_url_is_a_config_error(url: str) -> None:
    with pytest.raises(GatewayError) as info:
        WebhookSink(url)
    assert info.value.reason is Reason.CONFIG_INVALID
    assert URL_SECRET not in str(info.value)


# ---- WebhookSink: the URL computed per event -------------------------------------------------------------
class CaseUrl:
    """A ``url`` callable like the Kemlu case API's: ``<base>/cases/<case id>/updates``; records its calls."""

    def __init__(self, base: str) -> None:
        self.base = URL(base)
        self.calls: list[str] = []

    def __call__(self, accepted: Accepted) -> URL:
        self.calls.append(accepted.event.subject)
        return self.base / "cases" / accepted.event.subject / "updates"


async def test_webhook_posts_to_the_url_computed_per_event(
    serve: Any, sink_factory: Any, accepted: Accepted, other_case: Accepted
) -> None:
    endpoint = await serve(Endpoint([200]))
    url_for = CaseUrl(endpoint.base)
    sink = sink_factory(url_for)
    await sink.deliver(accepted)
    await sink.deliver(other_case)

    assert endpoint.paths == [
        "/cases/KBRI-KCH-2020-000123/updates",
        "/cases/KBRI-KCH-2020-000124/updates",
    ]
    assert url_for.calls == ["KBRI-KCH-2020-000123", "KBRI-KCH-2020-000124"]
    # everything but the URL is the webhook contract as for a configured URL
    for (headers, body), event in zip(endpoint.requests, (accepted, other_case), strict=True):
        assert headers["Idempotency-Key"] == f"{event.event.source}/{event.event.id}"
        assert headers["X-Xchg-Event-Id"] == event.event.id
        assert json.loads(body)["payload"] == event.payload()


async def test_a_computed_url_is_retried_like_a_configured_one(
    serve: Any, sink_factory: Any, accepted: Accepted
) -> None:
    endpoint = await serve(Endpoint([503, 200]))
    url_for = CaseUrl(endpoint.base)
    sleeps, failures = Sleeps(), []
    await deliver_with_retry(
        sink_factory(url_for),
        accepted,
        NO_JITTER,
        sleep=sleeps,
        on_failure=lambda error, attempt: failures.append((error.status, error.retryable, attempt)),
    )
    assert endpoint.paths == ["/cases/KBRI-KCH-2020-000123/updates"] * 2
    assert url_for.calls == ["KBRI-KCH-2020-000123"] * 2  # computed again for every attempt
    assert sleeps.delays == [0.2]
    assert failures == [(503, True, 1)]
    assert endpoint.requests[0][0]["Idempotency-Key"] == endpoint.requests[1][0]["Idempotency-Key"]


async def test_a_computed_url_refused_by_the_endpoint_is_not_retried(
    serve: Any, sink_factory: Any, accepted: Accepted
) -> None:
    endpoint = await serve(Endpoint([404, 200]))  # e.g. a case the agency system does not know
    sleeps = Sleeps()
    with pytest.raises(SinkError) as info:
        await deliver_with_retry(sink_factory(CaseUrl(endpoint.base)), accepted, NO_JITTER, sleep=sleeps)
    assert (info.value.status, info.value.retryable) == (404, False)
    assert len(endpoint.requests) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("url", INVALID_URLS)
async def test_a_computed_url_is_refused_like_a_configured_one(
    sink_factory: Any, accepted: Accepted, url: str
) -> None:
    with pytest.raises(GatewayError) as configured:
        WebhookSink(url, name="agency")
    sink = sink_factory(lambda _accepted: url, name="agency")  # accepted: checked per event, not here
    with pytest.raises(GatewayError) as computed:
        await sink.deliver(accepted)
    assert computed.value.reason is configured.value.reason is Reason.CONFIG_INVALID
    assert computed.value.detail == configured.value.detail

    sleeps = Sleeps()
    with capture_logs() as logs, pytest.raises(SinkError) as info:
        await deliver_with_retry(sink, accepted, NO_JITTER, sleep=sleeps)
    assert info.value.retryable is False  # the same event computes the same URL: dead-letter at once
    assert sleeps.delays == []
    assert "config.invalid" in info.value.detail
    assert isinstance(info.value.__cause__, GatewayError)
    assert info.value.__cause__.reason is Reason.CONFIG_INVALID
    for text in (str(info.value), repr(info.value), repr(logs)):
        assert URL_SECRET not in text


async def test_a_gateway_error_of_the_url_callable_is_dead_lettered(
    sink_factory: Any, accepted: Accepted
) -> None:
    def no_case(_accepted: Accepted) -> str:
        raise GatewayError(Reason.SCHEMA_INVALID, "case_id: not an exchange case id")

    sleeps = Sleeps()
    with pytest.raises(SinkError) as info:
        await deliver_with_retry(sink_factory(no_case), accepted, NO_JITTER, sleep=sleeps)
    assert info.value.retryable is False
    assert "schema.invalid: case_id" in info.value.detail
    assert sleeps.delays == []


class ToLoopback(AbstractResolver):
    """Resolves every name to 127.0.0.1, so a host that is not loopback *by name* reaches the test server."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
             "flags": socket.AI_NUMERICHOST}
        ]  # fmt: skip

    async def close(self) -> None:
        pass


async def test_plain_http_to_a_remote_host_is_warned_once_per_origin(serve: Any, accepted: Accepted) -> None:
    endpoint = await serve(Endpoint([200]))
    port = URL(endpoint.url).port
    hosts: Iterator[str] = iter(["a.agency.example", "a.agency.example", "b.agency.example"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=ToLoopback())) as session:
        with capture_logs() as logs:
            WebhookSink(
                f"http://a.agency.example:{port}/hook?token={URL_SECRET}", name="static", session=session
            )
            computed = WebhookSink(
                lambda _accepted: f"http://{next(hosts)}:{port}/hook?token={URL_SECRET}",
                name="computed",
                session=session,
            )
            for _ in range(3):
                await computed.deliver(accepted)
            loopback = WebhookSink(CaseUrl(endpoint.base), name="loopback", session=session)
            await loopback.deliver(accepted)
    assert len(endpoint.requests) == 4
    warned = [e["sink"] for e in logs if e["event"] == "webhook.plaintext_http"]
    assert warned == ["static", "computed", "computed"]  # a.agency.example once, b.agency.example once
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "webhook.plaintext_http")
    assert URL_SECRET not in repr(logs)
    assert "agency.example" not in repr(logs)


# ---- MemorySink ----------------------------------------------------------------------------------------
async def test_memory_sink_deduplicates_by_source_and_id(accepted: Accepted) -> None:
    sink = MemorySink()
    await sink.deliver(accepted)
    await sink.deliver(accepted)
    assert sink.events == [accepted]
    assert sink.deliveries == 2
    await sink.close()
    assert sink.closed


# ---- retry loop ----------------------------------------------------------------------------------------
class FlakySink:
    """Raises the given errors in turn, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.name = "flaky"
        self.errors = list(errors)
        self.calls = 0

    async def deliver(self, accepted: Accepted) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    async def close(self) -> None:
        pass


async def test_retry_backoff_is_exponential_and_capped(accepted: Accepted) -> None:
    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=5.0, jitter=0.0)
    sink = FlakySink(*(SinkError("down", retryable=True) for _ in range(5)))
    sleeps = Sleeps()
    await deliver_with_retry(sink, accepted, policy, sleep=sleeps)
    assert sink.calls == 6
    assert sleeps.delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_jitter_bounds() -> None:
    policy = RetryPolicy(base_delay=1.0, jitter=0.1)
    assert policy.delay(1, rng=lambda: 0.0) == pytest.approx(0.9)
    assert policy.delay(1, rng=lambda: 1.0) == pytest.approx(1.1)
    assert policy.delay(1000, rng=lambda: 0.5) == policy.max_delay  # no overflow for huge attempt numbers
    for _ in range(100):
        assert 0.9 <= policy.delay(1) <= 1.1


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -1.0}, {"jitter": 1.5}, {"jitter": -0.1}]
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        RetryPolicy(**kwargs)
    assert info.value.reason is Reason.CONFIG_INVALID


async def test_unexpected_sink_exception_becomes_non_retryable(accepted: Accepted) -> None:
    sink = FlakySink(ValueError(f"cannot store {SYNTHETIC_NAME}"))
    with pytest.raises(SinkError) as info:
        await deliver_with_retry(sink, accepted, NO_JITTER, sleep=Sleeps())
    assert info.value.retryable is False
    assert "ValueError" in info.value.detail
    assert SYNTHETIC_NAME not in str(info.value)
    assert sink.calls == 1


async def test_other_gateway_error_becomes_non_retryable(accepted: Accepted) -> None:
    sink = FlakySink(GatewayError(Reason.SCHEMA_INVALID, "$.x: required"))
    with pytest.raises(SinkError) as info:
        await deliver_with_retry(sink, accepted, NO_JITTER, sleep=Sleeps())
    assert info.value.retryable is False
    assert "schema.invalid" in info.value.detail


async def test_cancellation_is_not_swallowed(accepted: Accepted) -> None:
    sink = FlakySink(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await deliver_with_retry(sink, accepted, NO_JITTER, sleep=Sleeps())
