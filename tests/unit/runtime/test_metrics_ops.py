"""The operations surface: per-gateway metrics, /healthz, /readyz, /metrics and the readiness checks.

Real HTTP throughout: the app is served by aiohttp's TestServer (or start_ops_server on port 0) and queried
with a real client; only the probes' dependencies are stand-ins (an Event that never fires, a failing probe).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.bus.kafka import KafkaSettings
from gateway.bus.metrics import METRICS_CONTENT_TYPE, GatewayMetrics
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from gateway.runtime.ops import (
    CheckFailed,
    ReadinessCheck,
    build_ops_app,
    kafka_check,
    registry_check,
    run_checks,
    schemas_check,
    signing_key_check,
    start_ops_server,
    stop_ops_server,
    threshold_check,
)
from gateway.sandbox.broker import free_port
from tests.world import World

PARTY = "kemensos"
NOW = datetime(2026, 6, 1, tzinfo=UTC)

MakeClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client_for() -> AsyncIterator[MakeClient]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(app: web.Application) -> TestClient[web.Request, web.Application]:
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def ok(name: str, detail: str = "fine") -> ReadinessCheck:
    async def probe() -> str:
        return detail

    return ReadinessCheck(name, probe)


def failing(name: str, exc: BaseException) -> ReadinessCheck:
    async def probe() -> str:
        raise exc

    return ReadinessCheck(name, probe)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ---- metrics ------------------------------------------------------------------------------------------


def test_metrics_render_counters_gauges_histograms_and_info() -> None:
    metrics = GatewayMetrics(party=PARTY, version="9.9.9")
    metrics.published.labels(type="id.trafficking.case.referral").inc()
    metrics.accepted.labels(type="id.trafficking.alert.network").inc(3)
    metrics.rejected.labels(reason=Reason.SIG_INVALID).inc()
    metrics.dead_lettered.labels(reason=Reason.SIG_INVALID).inc()
    metrics.duplicates.inc(2)
    metrics.delivered.labels(sink="webhook").inc()
    metrics.sink_failures.labels(sink="webhook").inc()
    metrics.quarantined.labels(source="sim-kemensos", reason="unmapped-gender").inc()
    metrics.outbox_depth.set(7)
    metrics.consumer_lag.labels(topic="xchg.iom.alert.v1", partition=2).set(11)
    metrics.publish_latency.observe(0.004)
    observed = metrics.observe_delivery(NOW - timedelta(seconds=1.5), now=NOW)
    assert observed == 1.5
    assert metrics.observe_delivery(NOW + timedelta(seconds=3), now=NOW) == 0.0  # clock skew counts as 0

    found = samples(metrics.render().decode())
    assert found[("xchg_gateway_info", (("party", PARTY), ("version", "9.9.9")))] == 1.0
    assert found[("xchg_published_total", (("type", "id.trafficking.case.referral"),))] == 1.0
    assert found[("xchg_accepted_total", (("type", "id.trafficking.alert.network"),))] == 3.0
    assert found[("xchg_rejected_total", (("reason", "sig.invalid"),))] == 1.0
    assert found[("xchg_dead_lettered_total", (("reason", "sig.invalid"),))] == 1.0
    assert found[("xchg_duplicates_total", ())] == 2.0
    assert found[("xchg_delivered_total", (("sink", "webhook"),))] == 1.0
    assert found[("xchg_sink_failures_total", (("sink", "webhook"),))] == 1.0
    assert (
        found[("xchg_quarantined_total", (("reason", "unmapped-gender"), ("source", "sim-kemensos")))] == 1.0
    )
    assert found[("xchg_outbox_depth", ())] == 7.0
    assert found[("xchg_consumer_lag", (("partition", "2"), ("topic", "xchg.iom.alert.v1")))] == 11.0
    assert found[("xchg_publish_latency_seconds_count", ())] == 1.0
    assert found[("xchg_publish_latency_seconds_bucket", (("le", "0.005"),))] == 1.0
    assert found[("xchg_publish_latency_seconds_bucket", (("le", "0.001"),))] == 0.0
    assert found[("xchg_delivery_latency_seconds_count", ())] == 2.0
    assert found[("xchg_delivery_latency_seconds_sum", ())] == 1.5
    assert found[("xchg_delivery_latency_seconds_bucket", (("le", "60.0"),))] == 2.0


def test_two_gateways_do_not_share_metrics() -> None:
    kemensos, iom = GatewayMetrics(party="kemensos"), GatewayMetrics(party="iom")  # same names, no clash
    kemensos.duplicates.inc(5)
    kemensos.rejected.labels(reason=Reason.KEY_UNKNOWN).inc()
    iom.duplicates.inc()
    mine, theirs = samples(kemensos.render().decode()), samples(iom.render().decode())
    assert mine[("xchg_duplicates_total", ())] == 5.0
    assert theirs[("xchg_duplicates_total", ())] == 1.0
    assert ("xchg_rejected_total", (("reason", "key.unknown"),)) not in theirs
    assert any(name == "xchg_gateway_info" and dict(labels)["party"] == "iom" for name, labels in theirs)
    assert kemensos.registry is not iom.registry


# ---- the HTTP endpoints -------------------------------------------------------------------------------


async def test_healthz_is_alive_without_checks(client_for: MakeClient) -> None:
    app = build_ops_app(metrics=GatewayMetrics(party=PARTY), checks=[failing("kafka", CheckFailed("down"))])
    client = await client_for(app)
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "alive"}


async def test_readyz_ok_when_all_checks_pass(client_for: MakeClient, world: World) -> None:
    checks = [ok("first", "one"), schemas_check(world.schemas), ok("last", "three")]
    client = await client_for(build_ops_app(metrics=GatewayMetrics(party=PARTY), checks=checks))
    response = await client.get("/readyz")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["ready"] is True
    assert [c["name"] for c in body["checks"]] == ["first", "schemas", "last"]
    assert all(c["ok"] is True for c in body["checks"])
    assert body["checks"][0]["detail"] == "one"
    assert "schema version(s)" in body["checks"][1]["detail"]
    assert set(body) == {"ready", "checks"}
    assert all(set(c) == {"name", "ok", "detail"} for c in body["checks"])


async def test_readyz_503_when_one_check_fails(client_for: MakeClient) -> None:
    checks = [
        ok("good"),
        failing("outbox", CheckFailed("1200 events exceeds the maximum of 1000 events")),
        failing("registry", GatewayError(Reason.REGISTRY_INVALID, "format must be 'xchg-registry/1'")),
        failing("weird", ValueError("Siti Aminah, born 1999")),  # unexpected: type name only
    ]
    client = await client_for(build_ops_app(metrics=GatewayMetrics(party=PARTY), checks=checks))
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["ready"] is False
    assert body["checks"] == [
        {"name": "good", "ok": True, "detail": "fine"},
        {"name": "outbox", "ok": False, "detail": "1200 events exceeds the maximum of 1000 events"},
        {"name": "registry", "ok": False, "detail": "registry.invalid: format must be 'xchg-registry/1'"},
        {"name": "weird", "ok": False, "detail": "ValueError"},
    ]
    assert "Siti" not in await response.text()


async def test_readyz_reports_a_hung_check_as_timed_out(client_for: MakeClient) -> None:
    never = asyncio.Event()

    async def hang() -> str:
        await never.wait()
        return "unreachable"

    checks = [ok("fast"), ReadinessCheck("broker", hang)]
    app = build_ops_app(metrics=GatewayMetrics(party=PARTY), checks=checks, check_timeout=0.2)
    client = await client_for(app)
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["checks"][0] == {"name": "fast", "ok": True, "detail": "fine"}
    assert body["checks"][1]["ok"] is False
    assert body["checks"][1]["detail"] == "timed out after 0.2s"


async def test_run_checks_answers_even_if_a_probe_ignores_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> str:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # misbehaving probe: swallows cancellation
        return "late"

    results = await run_checks([ReadinessCheck("stubborn", stubborn)], 0.1)
    assert [(r.ok, r.detail) for r in results] == [(False, "timed out after 0.1s")]
    release.set()  # let it end so the test leaves no task behind
    await asyncio.sleep(0)


async def test_metrics_endpoint_serves_the_gateways_registry(client_for: MakeClient) -> None:
    metrics = GatewayMetrics(party=PARTY)
    metrics.rejected.labels(reason=Reason.SCHEMA_INVALID).inc(4)
    metrics.published.labels(type="id.trafficking.case.closure").inc()
    client = await client_for(build_ops_app(metrics=metrics, checks=[]))
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
    found = samples(await response.text())
    assert found[("xchg_rejected_total", (("reason", "schema.invalid"),))] == 4.0
    assert found[("xchg_published_total", (("type", "id.trafficking.case.closure"),))] == 1.0
    assert found[("xchg_gateway_info", (("party", PARTY), ("version", "0.1.0")))] == 1.0


async def test_start_ops_server_on_an_os_assigned_port() -> None:
    app = build_ops_app(metrics=GatewayMetrics(party=PARTY), checks=[ok("only")])
    runner, port = await start_ops_server(app, "127.0.0.1", 0)
    try:
        assert port > 0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200
                assert (await response.json())["ready"] is True
    finally:
        await stop_ops_server(runner)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


def test_build_ops_app_refuses_duplicate_names_and_bad_timeout() -> None:
    metrics = GatewayMetrics(party=PARTY)
    with pytest.raises(ValueError, match="unique"):
        build_ops_app(metrics=metrics, checks=[ok("a"), ok("a")])
    with pytest.raises(ValueError, match="positive"):
        build_ops_app(metrics=metrics, checks=[], check_timeout=0)


# ---- check factories ----------------------------------------------------------------------------------


async def outcome(check: ReadinessCheck) -> tuple[bool, str]:
    [result] = await run_checks([check], 5.0)
    return result.ok, result.detail


async def test_signing_key_check(world: World) -> None:
    signer = world.members[PARTY].signer
    entry = world.registry.key(signer.kid)
    assert entry is not None
    good, detail = await outcome(signing_key_check(signer, entry.public_key))
    assert good, detail
    assert signer.kid in detail

    wrong = SigningKey.generate().public_key  # e.g. the old key file after a rotation
    good, detail = await outcome(signing_key_check(signer, wrong))
    assert not good
    assert "does not match" in detail
    other_alg = SigningKey.generate("ECDSA-P256-SHA256").public_key
    assert (await outcome(signing_key_check(signer, other_alg)))[0] is False


def _with_key_times(world: World, **times: datetime) -> World:
    def edit(document: dict[str, Any]) -> None:
        world.party_doc(document, PARTY)["keys"][0].update(times)

    return world.with_document(edit)


async def test_registry_check_passes_for_a_valid_key(world: World) -> None:
    kid = world.members[PARTY].signer.kid
    good, detail = await outcome(registry_check(world.registry, PARTY, kid=kid, min_days=30, now=lambda: NOW))
    assert good, detail
    assert "no expiry" in detail

    later = _with_key_times(world, valid_until=NOW + timedelta(days=90, hours=1))
    good, detail = await outcome(registry_check(later.registry, PARTY, kid=kid, min_days=30, now=lambda: NOW))
    assert good, detail
    assert "90 day(s)" in detail


async def test_registry_check_fails_for_an_expiring_key(world: World) -> None:
    kid = world.members[PARTY].signer.kid
    soon = _with_key_times(world, valid_until=NOW + timedelta(days=12, hours=5))
    good, detail = await outcome(registry_check(soon.registry, PARTY, kid=kid, min_days=30, now=lambda: NOW))
    assert not good
    assert "12 day(s)" in detail
    assert "30" in detail

    scheduled = _with_key_times(world, revoked_at=NOW + timedelta(days=3))
    good, detail = await outcome(
        registry_check(scheduled.registry, PARTY, kid=kid, min_days=30, now=lambda: NOW)
    )
    assert not good
    assert "revocation scheduled in 3 day(s)" in detail


async def test_registry_check_fails_for_revoked_expired_or_missing(world: World) -> None:
    kid = world.members[PARTY].signer.kid

    def check(registry: Any, party: str = PARTY, key: str = kid) -> ReadinessCheck:
        return registry_check(registry, party, kid=key, min_days=1, now=lambda: NOW)

    revoked = _with_key_times(world, revoked_at=NOW - timedelta(days=1))
    good, detail = await outcome(check(revoked.registry))
    assert not good
    assert "revoked" in detail
    assert Reason.KEY_REVOKED.value in detail

    expired = _with_key_times(world, valid_until=NOW - timedelta(seconds=1))
    good, detail = await outcome(check(expired.registry))
    assert (good, Reason.KEY_EXPIRED.value in detail) == (False, True)

    assert (await outcome(check(world.registry, party="nobody")))[1] == "party nobody is not in the registry"
    assert "not in the registry" in (await outcome(check(world.registry, key="missing-kid")))[1]
    other = world.members["iom"].signer.kid
    assert "belongs to iom" in (await outcome(check(world.registry, key=other)))[1]
    seal_kid = world.members[PARTY].seal_kid
    assert "not a signing key" in (await outcome(check(world.registry, key=seal_kid)))[1]
    assert (await outcome(check(lambda: None)))[1] == "no registry loaded"
    assert (await outcome(check(lambda: world.registry)))[0] is True


async def test_threshold_check_sync_and_async() -> None:
    depth = 10.0

    async def lag() -> float:
        return 5000.0

    good, detail = await outcome(threshold_check("outbox", lambda: depth, 100, "events"))
    assert (good, detail) == (True, "10 events (maximum 100)")
    good, detail = await outcome(threshold_check("lag", lag, 1000, "records"))
    assert (good, detail) == (False, "5000 records exceeds the maximum of 1000 records")
    good, _ = await outcome(threshold_check("lag", lambda: float("nan"), 1000, "records"))
    assert not good


async def test_kafka_check_reports_an_unreachable_cluster() -> None:
    embedded = await outcome(kafka_check(KafkaSettings(), timeout=1.0))
    assert embedded == (False, "no bootstrap servers (embedded broker settings not resolved)")

    settings = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{free_port()}",), request_timeout_ms=1000)
    good, detail = await outcome(kafka_check(settings, timeout=3.0))
    assert not good
    assert "no broker reachable" in detail
