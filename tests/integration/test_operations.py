"""The operations surface of running gateways on a real broker: /healthz, /readyz, /metrics, TLS.

Readiness must follow the world: the broker going down or freezing, the signing key file disappearing or
being replaced, a wrong CA for the brokers' TLS certificates. Each such case answers 503 with the failing
check named and the others still passing, and answers 200 again once the cause is gone. /metrics must parse
as Prometheus text and show the traffic that happened. Gateways are configured through their TOML files,
exactly as an operator would (``gateway.sandbox.deployment``), including ``security_protocol = "SSL"``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog.testing
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.bus.kafka import KafkaSettings, SaslSettings, TlsSettings
from gateway.contract.keys import SigningKey
from gateway.errors import GatewayError, Reason
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from gateway.sandbox.broker import EmbeddedBroker, free_port
from gateway.sandbox.deployment import create_sandbox
from tests.integration.conftest import TlsProxy
from tests.integration.exchange import (
    Node,
    embedded_settings,
    eventually,
    exchange,
    kafka_settings_for,
    kafka_table,
    received_ids,
    start_node,
)
from tests.tls import make_ca
from tests.world import example

KCH, READER = "kemlu.kbri-kuching", "kemensos"
REFERRAL = "id.trafficking.case.referral"
CHECKS = [
    "kafka", "signing-key", "registry", "registry-version", "schemas", "outbox-backlog", "consumer-lag",
    "tasks", "dead-letters", "producer", "sinks",
]  # fmt: skip


# ---- HTTP helpers -------------------------------------------------------------------------------------


async def get(node: Node, path: str) -> tuple[int, str, dict[str, str]]:
    url = f"http://127.0.0.1:{node.gateway.ops_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text(), dict(response.headers)


async def readyz(node: Node) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{node.gateway.ops_port}/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


def checks_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert [c["name"] for c in body["checks"]] == CHECKS  # every check, by name, in order
    return {c["name"]: c for c in body["checks"]}


async def wait_ready(node: Node, *, status: int, within: float = 30.0) -> dict[str, Any]:
    """Poll /readyz until it answers ``status`` (a bound, not a timing assertion); return that body."""
    deadline = time.monotonic() + within
    while True:
        answer, body = await readyz(node)
        if answer == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz did not answer {status} within {within}s; last: {answer} {body}")
        await asyncio.sleep(0.05)


def assert_only_failing(body: dict[str, Any], failing: str, *, also: tuple[str, ...] = ()) -> dict[str, Any]:
    """``body`` is not ready because of ``failing`` (and the checks ``also``) alone; returns that check."""
    assert body["ready"] is False
    checks = checks_of(body)
    assert {name for name, c in checks.items() if not c["ok"]} == {failing, *also}, body
    return checks[failing]


async def publish_referrals(node: Node, count: int) -> set[str]:
    referral = example("case.referral", "1.0")[0][1]
    events = [
        await node.gateway.publisher.publish(REFERRAL, referral, recipients=[READER]) for _ in range(count)
    ]
    return {e.id for e in events}


# ---- /healthz and /readyz -----------------------------------------------------------------------------


async def test_healthz_and_readyz_of_a_running_gateway(tmp_path: Path, isolated_kafka: KafkaSettings) -> None:
    async with exchange(tmp_path, [READER], isolated_kafka) as nodes:
        node = nodes[READER]
        status, text, headers = await get(node, "/healthz")
        assert (status, text) == (200, '{"status": "alive"}')
        assert headers["Cache-Control"] == "no-store"

        body = await wait_ready(node, status=200)
        assert body["ready"] is True
        checks = checks_of(body)
        assert all(c["ok"] for c in checks.values()), body
        assert checks["kafka"]["detail"].endswith(" broker(s) reachable")
        kid = node.gateway.signer.kid
        assert checks["signing-key"]["detail"] == f"{kid} (Ed25519) signs and verifies and key file"
        assert checks["registry"]["detail"].startswith(f"{READER}: signing key {kid} valid")
        assert checks["registry-version"]["detail"].startswith("serial 1 (sha256:")
        assert "expires in 36" in checks["registry-version"]["detail"]  # the sandbox's version: one year
        assert "schema version(s)" in checks["schemas"]["detail"]
        assert checks["outbox-backlog"]["detail"].startswith("0 events")


async def test_readyz_fails_while_the_broker_is_down_and_recovers(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    async with exchange(tmp_path, [READER], embedded_settings(embedded_broker)) as nodes:
        node = nodes[READER]
        await wait_ready(node, status=200)

        await embedded_broker.stop()
        body = await wait_ready(node, status=503)
        kafka = assert_only_failing(body, "kafka")
        assert kafka["detail"].startswith("kafka.bootstrap_servers: no broker reachable"), kafka
        assert (await get(node, "/healthz"))[0] == 200  # alive: no restart loop for a Kafka outage

        await embedded_broker.start()  # same port; memory storage starts empty
        body = await wait_ready(node, status=200)
        assert all(c["ok"] for c in checks_of(body).values())


@pytest.mark.parametrize("setting", ["unset", "true"])
async def test_a_broker_without_idempotent_producing_is_said_once_and_readyz_tells_the_truth(
    tmp_path: Path, embedded_broker: EmbeddedBroker, setting: str
) -> None:
    """``gateway run`` against ``gateway broker`` (issue 13): the settings name a broker, so idempotence is on
    by default, and the embedded broker refuses InitProducerId. Unset: one ``kafka.idempotence_unsupported``
    line, then the gateway produces without it and is ready. Explicitly true: not ready, the ``producer``
    check says why, and nothing is retried in a tight loop."""
    table = kafka_table(embedded_settings(embedded_broker))
    del table["enable_idempotence"]
    if setting == "true":
        table["enable_idempotence"] = True
    sandbox = create_sandbox(
        tmp_path, [READER], bootstrap_servers=[embedded_broker.bootstrap_servers],
        settings={"kafka": table, "shutdown": {"timeout_seconds": 2.0}},
    )  # fmt: skip
    config = GatewayConfig.load(sandbox[READER].config)
    assert config.kafka.idempotence is True
    with structlog.testing.capture_logs() as logs:
        node = await start_node(sandbox[READER])
        try:
            if setting == "unset":
                body = await wait_ready(node, status=200)
                assert checks_of(body)["producer"]["detail"].endswith(
                    "without idempotence (the broker refused it)"
                )
                data = example("alert.shelter-capacity", "1.0")[0][1]
                await node.gateway.publisher.publish("id.trafficking.alert.shelter-capacity", data)
                await eventually(lambda: node.gateway.outbox.depth == 0, what="the alert on the broker")
            else:
                await eventually(lambda: any(e["event"] == "kafka.idempotence_unsupported" for e in logs),
                                 what="the broker's refusal to be said")  # fmt: skip
                body = await wait_ready(node, status=503)
                producer = assert_only_failing(body, "producer")
                assert "refused an idempotent producer" in producer["detail"]
        finally:
            await node.gateway.stop()
    assert sum(1 for e in logs if e["event"] == "kafka.idempotence_unsupported") == 1


async def test_readyz_fails_while_the_broker_is_frozen_and_recovers(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    async with exchange(tmp_path, [READER], embedded_settings(embedded_broker)) as nodes:
        node = nodes[READER]
        await wait_ready(node, status=200)
        embedded_broker.pause()
        try:
            body = await wait_ready(node, status=503)
            kafka = assert_only_failing(body, "kafka")
            # the probe gives up before the endpoint's own bound, so it says what failed
            assert kafka["detail"] == "no answer from the cluster within 1.5s", kafka
        finally:
            embedded_broker.resume()
        await wait_ready(node, status=200)


# ---- the signing key ----------------------------------------------------------------------------------


def _delete(path: Path) -> None:
    path.unlink()


def _garbage(path: Path) -> None:
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")


def _directory(path: Path) -> None:  # unreadable even for root (tests may run as root: chmod 000 is no bar)
    path.unlink()
    path.mkdir()


def _other_key(path: Path) -> None:  # e.g. a new key deployed before the registry lists it
    path.write_bytes(SigningKey.generate().to_pem())


def _restore(path: Path, pem: bytes) -> None:
    if path.is_dir():
        path.rmdir()
    path.write_bytes(pem)
    path.chmod(0o600)


NO_FILE = "keyfile.invalid: cannot read key file {path}: No such file or directory"
IS_DIR = "keyfile.invalid: cannot read key file {path}: Is a directory"
NOT_PEM = "keyfile.invalid: key file is not a readable PKCS#8 PEM key"
OTHER_KEY = "key file of {kid} does not match the registered Ed25519 public key"
KEY_DAMAGE = [
    pytest.param(_delete, NO_FILE, id="deleted"),
    pytest.param(_directory, IS_DIR, id="directory"),
    pytest.param(_garbage, NOT_PEM, id="garbage"),
    pytest.param(_other_key, OTHER_KEY, id="other-key"),
]


@pytest.mark.parametrize(("damage", "detail"), KEY_DAMAGE)
async def test_readyz_fails_when_the_signing_key_file_becomes_unusable(
    tmp_path: Path, isolated_kafka: KafkaSettings, damage: Callable[[Path], None], detail: str
) -> None:
    async with exchange(tmp_path, [READER], isolated_kafka) as nodes:
        node = nodes[READER]
        path, kid = node.gateway.config.signing_key, node.gateway.signer.kid
        pem = path.read_bytes()
        await wait_ready(node, status=200)

        damage(path)
        body = await wait_ready(node, status=503)
        check = assert_only_failing(body, "signing-key")
        assert check["detail"] == detail.format(path=path, kid=kid)
        assert "PRIVATE KEY" not in str(body)

        _restore(path, pem)
        await wait_ready(node, status=200)


def _sandbox_config(tmp_path: Path, damage: Callable[[Path], None] | None = None) -> Path:
    """A Kemensos configuration whose key file was damaged before start (no broker needed to refuse)."""
    settings = kafka_settings_for(f"127.0.0.1:{free_port()}")  # nothing listens: start fails before
    sandbox = create_sandbox(
        tmp_path,
        [READER],
        bootstrap_servers=settings.bootstrap_servers,
        settings={"kafka": kafka_table(settings)},
    )
    config = sandbox[READER].config
    if damage is not None:
        damage(GatewayConfig.load(config).signing_key)
    return config


@pytest.mark.parametrize(("damage", "detail"), KEY_DAMAGE)
async def test_a_gateway_with_an_unusable_key_file_refuses_to_start(
    tmp_path: Path, damage: Callable[[Path], None], detail: str
) -> None:
    config = GatewayConfig.load(_sandbox_config(tmp_path, damage))
    gateway = Gateway(config)
    with pytest.raises(GatewayError) as info:
        await gateway.start()
    assert info.value.reason is Reason.KEYFILE_INVALID
    if damage is _other_key:
        assert info.value.detail == f"{config.signing_key}: its public key is not a sig key of {READER}"
    else:
        assert f"{info.value.reason}: {info.value.detail}" == detail.format(path=config.signing_key)
    assert gateway.ops_port is None  # nothing was started


def test_gateway_run_exits_2_with_keyfile_invalid(tmp_path: Path) -> None:
    config = _sandbox_config(tmp_path, _delete)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gateway.cli.main import main; raise SystemExit(main())",
            "run",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("XCHG__")},
    )
    assert result.returncode == 2, result.stderr
    key = GatewayConfig.load(config).signing_key
    assert f"error: keyfile.invalid: cannot read key file {key}: No such file or directory" in result.stderr


# ---- /metrics -----------------------------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(node: Node) -> Samples:
    status, text, headers = await get(node, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_show_the_traffic(
    tmp_path: Path, isolated_kafka: KafkaSettings, external_kafka: str | None
) -> None:
    async with exchange(tmp_path, [KCH, READER], isolated_kafka) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]
        ids = await publish_referrals(publisher, 3)
        await eventually(lambda: set(received_ids(reader, ids)) == ids, what="delivery")
        await eventually(lambda: publisher.gateway.outbox.depth == 0, what="every send acknowledged")

        sent = await scrape(publisher)
        assert value(sent, "xchg_gateway_info", party=KCH, version=__version__) == 1.0
        assert value(sent, "xchg_published_total", type=REFERRAL) == 3
        assert value(sent, "xchg_outbox_depth") == 0
        assert value(sent, "xchg_publish_latency_seconds_count") == 3
        assert 0 < value(sent, "xchg_publish_latency_seconds_sum") < 3 * 30

        got = await scrape(reader)
        assert value(got, "xchg_accepted_total", type=REFERRAL) == 3
        assert value(got, "xchg_delivered_total", sink=reader.sink.name) == 3
        assert value(got, "xchg_delivery_latency_seconds_count") == 3
        # event time has whole seconds and is stamped at publish: each delivery well within a minute
        assert 0 <= value(got, "xchg_delivery_latency_seconds_sum") < 3 * 30
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (name, labels), v in got.items()
            if name == "xchg_delivery_latency_seconds_bucket"
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
        assert dict(buckets)[30.0] == 3
        assert dict(buckets)[float("inf")] == 3
        if external_kafka is None:  # an external cluster's topics may hold older records, rejected here
            assert not any(name.startswith("xchg_rejected") for name, _ in got)  # nothing rejected
            assert value(got, "xchg_dead_lettered_total") == 0


async def test_published_counts_acknowledged_events_and_the_outbox_holds_the_rest(
    tmp_path: Path, embedded_broker: EmbeddedBroker
) -> None:
    async with exchange(tmp_path, [KCH, READER], embedded_settings(embedded_broker)) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]
        await wait_ready(publisher, status=200)
        embedded_broker.pause()  # publish still works: the events wait in the outbox
        try:
            ids = await publish_referrals(publisher, 2)
            frozen = await scrape(publisher)
            assert value(frozen, "xchg_outbox_depth") == 2
            assert value(frozen, "xchg_published_total", type=REFERRAL) == 0  # not acknowledged yet
        finally:
            embedded_broker.resume()
        await eventually(lambda: set(received_ids(reader, ids)) == ids, what="delivery after the thaw")
        await eventually(lambda: publisher.gateway.outbox.depth == 0, what="every send acknowledged")
        thawed = await scrape(publisher)
        assert value(thawed, "xchg_outbox_depth") == 0
        assert value(thawed, "xchg_published_total", type=REFERRAL) == 2


# ---- TLS ----------------------------------------------------------------------------------------------


def tls_settings(proxy: TlsProxy, ca_file: Path) -> KafkaSettings:
    return kafka_settings_for(
        proxy.bootstrap_servers, security_protocol="SSL", tls=TlsSettings(ca_file=ca_file)
    )


async def test_gateways_exchange_over_tls_and_a_wrong_ca_is_not_ready(
    tmp_path: Path, tls_proxy: TlsProxy
) -> None:
    settings = tls_settings(tls_proxy, tls_proxy.pki.ca_cert)
    async with exchange(tmp_path / "tls", [KCH, READER], settings) as nodes:
        publisher, reader = nodes[KCH], nodes[READER]
        for node in (publisher, reader):  # configured as an operator would: in the TOML file
            text = node.sandbox.config.read_text()
            assert 'security_protocol = "SSL"' in text
            assert f'ca_file = "{tls_proxy.pki.ca_cert}"' in text
            assert node.gateway.kafka.security_protocol == "SSL"
            assert node.gateway.kafka.bootstrap_servers == (tls_proxy.bootstrap_servers,)
        ids = await publish_referrals(publisher, 2)
        await eventually(lambda: set(received_ids(reader, ids)) == ids, what="delivery over TLS")
        assert all(c["ok"] for c in checks_of(await wait_ready(reader, status=200)).values())

        other_ca, _key, _cert = make_ca(tmp_path / "other-ca", name="not the brokers' CA")
        wrong = tls_settings(tls_proxy, other_ca)
        overrides = {"shutdown": {"timeout_seconds": 2.0}}  # it never connects: do not wait to drain
        async with exchange(
            tmp_path / "wrong-ca", ["iom"], wrong, overrides=overrides, publish_registry=False
        ) as others:
            body = await wait_ready(others["iom"], status=503)
            kafka = assert_only_failing(body, "kafka", also=("producer",))  # it never started: not ready
            assert kafka["detail"].startswith(
                f"kafka.tls.ca_file: TLS handshake with {tls_proxy.bootstrap_servers} failed: "
                "certificate verify failed"
            ), kafka


async def test_sasl_scram_settings_from_the_toml_reach_the_broker(
    tmp_path: Path, tls_proxy: TlsProxy
) -> None:
    """SASL_SSL with SCRAM-SHA-512, configured in the TOML file, is what aiokafka sends over TLS.

    Not an end-to-end SCRAM login: this Tansu build cannot hold SCRAM users for a broker that requires
    authentication (``tansu user create`` is refused by a broker started with ``--authentication``, and
    its memory/s3 storage does not keep credentials for another broker process; postgres storage is not
    compiled in). Without ``--authentication`` it answers the SCRAM handshake with
    UNSUPPORTED_SASL_MECHANISM, which proves the mechanism went on the wire, inside TLS.
    """
    password = tmp_path / "kafka-password"
    password.write_text("synthetic password with spaces \n")
    password.chmod(0o600)
    settings = kafka_settings_for(
        tls_proxy.bootstrap_servers,
        security_protocol="SASL_SSL",
        tls=TlsSettings(ca_file=tls_proxy.pki.ca_cert),
        sasl=SaslSettings(mechanism="SCRAM-SHA-512", username="gw-kemensos", password_file=password),
    )
    overrides = {"shutdown": {"timeout_seconds": 2.0}}  # it never connects: do not wait to drain
    async with exchange(
        tmp_path / "sasl", [READER], settings, overrides=overrides, publish_registry=False
    ) as nodes:
        node = nodes[READER]
        text = node.sandbox.config.read_text()
        assert 'security_protocol = "SASL_SSL"' in text
        assert 'mechanism = "SCRAM-SHA-512"' in text
        assert "synthetic password" not in text  # only the file's path is in the configuration

        kafka = node.gateway.kafka
        for kwargs in (
            kafka.producer_kwargs(),
            kafka.consumer_kwargs(node.gateway.group_id),
            kafka.admin_kwargs(),
        ):
            assert kwargs["security_protocol"] == "SASL_SSL"
            assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
            assert kwargs["sasl_plain_username"] == "gw-kemensos"
            assert kwargs["sasl_plain_password"] == "synthetic password with spaces "
            assert kwargs["ssl_context"].verify_mode is ssl.CERT_REQUIRED
        assert "synthetic password" not in repr(kafka.redacted())

        body = await wait_ready(node, status=503)
        check = assert_only_failing(body, "kafka", also=("producer",))  # the producer cannot start either
        assert check["detail"].startswith(
            f"kafka.sasl.mechanism: {tls_proxy.bootstrap_servers} does not accept it: [Error 33] "
            "UnsupportedSaslMechanismError"
        ), check
        assert "synthetic password" not in str(body)
