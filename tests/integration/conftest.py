"""Fixtures for tests that talk to a real Kafka-protocol broker over TCP.

Every test in this directory is marked ``integration`` (see :func:`pytest_collection_modifyitems`).

Which broker: ``XCHG_TEST_KAFKA`` (one variable: a comma-separated ``host:port`` list of any Kafka cluster
reachable with PLAINTEXT, no TLS or SASL; topics are created through the admin API, so the test principal
needs CREATE) or, when it is unset, an :class:`~gateway.sandbox.broker.EmbeddedBroker` (Tansu) on a free
loopback port for the whole session. Tests that freeze, stop or restart a broker use ``embedded_broker`` (a
fresh one per test) and are skipped when ``XCHG_TEST_KAFKA`` is set. Sandbox exchanges, whose topics have
fixed names, use ``isolated_kafka``: a fresh embedded broker per test, or the external cluster. ``tls_proxy``
puts stunnel in front of a fresh embedded broker with a throwaway CA.

Isolation: tests never share topics or consumer groups (``unique_topic`` / ``unique_group``), so they can
run against one long-lived broker in any order.

Apache Kafka: ``kafka_cluster`` starts a 3-node KRaft cluster (tests/kafka/cluster.py: SASL_SSL, SCRAM,
StandardAuthorizer, replication 3) once per session, renders the sample registry with ``gateway deploy
render`` and applies the rendered ``kafka-init.sh`` -- the production path. Tests in :data:`CLUSTER_MODULES`
that use ``isolated_kafka`` run twice: on the embedded broker and, marked ``kafka_cluster``, on the cluster,
where ``isolated_kafka`` is the admin's :class:`~tests.kafka.cluster.ClusterSettings` (every exchange topic
emptied first) and each gateway connects as its own SCRAM user. ``-m kafka_cluster`` runs only those;
``-m "not kafka_cluster"`` leaves the cluster out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.bus.kafka import EMBEDDED_CLIENT_TIMINGS, KafkaSettings
from gateway.sandbox.broker import EmbeddedBroker, free_port
from gateway.sandbox.deployment import SAMPLE_REGISTRY
from tests.integration.exchange import embedded_settings
from tests.kafka.cluster import (
    ATTACH_VAR,
    ClusterDeployment,
    KafkaCluster,
    Rendering,
    apply_init_script,
    kafka_available,
    render,
)
from tests.tls import make_ca

ENV_VAR = "XCHG_TEST_KAFKA"
_HERE = Path(__file__).resolve().parent
CLUSTER_MODULES = frozenset({"test_exchange.py", "test_dead_letters.py"})
"""Modules whose ``isolated_kafka`` tests also run, unchanged, on the Apache Kafka cluster."""
KAFKA_CONNECTION_FINALIZED = (  # no ':' in the message: it separates a filter's fields ('.' stands in)
    r"Exception ignored in. <(function "
    r"(AIOKafkaConnection|_SSLProtocolTransport|StreamWriter|_SelectorTransport)\.__del__|socket\.socket )"
    ":pytest.PytestUnraisableExceptionWarning"
)
"""A warning filter for the ``kafka_cluster`` tests: a TLS connection to the cluster that aiokafka dropped
without closing, finalized by the garbage collector (which closes its socket).

Seen, rarely, against the 3-node cluster over TLS and never on the embedded broker: aiokafka's client
bootstrap leaves its bootstrap connection open when cancelled between connecting and asking for metadata
(the readiness check bounds it with a timeout), and a connection that finishes its TLS and SCRAM handshake
after its client was closed (a shutdown racing a reconnect, or a node killed under it) is stored in the
closed client. Every client the gateway starts is closed; what these tests assert (delivery, ACLs, exactly
once) does not depend on it. Only these finalizers are ignored: any other unraisable exception still fails
the test, and :func:`pytest_runtest_teardown` finalizes each test's garbage under that test's filters.
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the ``isolated_kafka`` tests of :data:`CLUSTER_MODULES` on both brokers (``kafka_backend``)."""
    if "isolated_kafka" in metafunc.fixturenames and metafunc.definition.path.name in CLUSTER_MODULES:
        metafunc.parametrize(
            "kafka_backend",
            ["embedded", pytest.param("cluster", marks=pytest.mark.kafka_cluster)],
            indirect=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory ``integration`` (the marker is registered), and run the
    ``kafka_cluster`` tests last: the cluster starts with the first of them and is not left running (three
    JVMs) while the rest of the suite runs."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("kafka_cluster") is not None:
            item.add_marker(pytest.mark.filterwarnings(f"ignore:{KAFKA_CONNECTION_FINALIZED}"))
    items.sort(key=lambda item: item.get_closest_marker("kafka_cluster") is not None)


@pytest.fixture(autouse=True)
async def _closing_sockets_finish(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a ``kafka_cluster`` test, run its event loop until the sockets it was closing are closed
    (bounded: 10 s), before pytest-asyncio closes the loop.

    Closing a TLS connection takes a round trip (close_notify), and a connection attempt that a client's
    shutdown cancels mid-handshake (aiokafka's fetcher does, stopping a consumer) is closed without anyone
    awaiting it. If the loop closes first, the socket is left open until garbage collection, which reports it
    as a leak. Waiting here tells the two apart: a close in progress finishes, a socket nobody closes is
    still reported (by :func:`pytest_runtest_teardown`).
    """
    yield
    if request.node.get_closest_marker("kafka_cluster") is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while _open_sockets(loop) and loop.time() < deadline:  # noqa: ASYNC110 - no event says a socket closed
        await asyncio.sleep(0.05)


def _open_sockets(loop: asyncio.AbstractEventLoop) -> int:
    """How many of ``loop``'s socket transports still hold an open socket. asyncio's selector loop keeps
    them in ``_transports`` (file descriptor -> transport) and drops a transport's ``_sock`` once its
    socket is closed: internals, read only here, in a test's teardown."""
    transports = getattr(loop, "_transports", {})
    return sum(1 for transport in list(transports.values()) if getattr(transport, "_sock", None) is not None)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Collect a ``kafka_cluster`` test's garbage once its fixtures, event loop included, are torn down.

    A connection aiokafka dropped (:data:`KAFKA_CONNECTION_FINALIZED`) is closed when it is
    garbage-collected, and the warning that comes with it belongs to the test that dropped it. Left to the
    collector's own timing it fires in a later test or at the end of the session, where no test's filters
    apply and ``filterwarnings = error`` fails the run with no test to blame. Collected here, before
    pytest's own ``trylast`` teardown hook reports unraisable exceptions (hooks of the same priority run
    newest plugin first), it is reported against this test, under this test's filters. Until nothing more
    is freed (at most three rounds): a finalized connection frees its transport and socket.
    """
    if item.get_closest_marker("kafka_cluster") is not None:
        for _ in range(3):
            if not gc.collect():
                break


def _external_kafka() -> str | None:
    value = os.environ.get(ENV_VAR, "").strip()
    return value or None


@pytest.fixture(scope="session")
def external_kafka() -> str | None:
    """The value of ``XCHG_TEST_KAFKA`` (bootstrap servers of an external cluster), or None."""
    return _external_kafka()


@pytest.fixture(scope="session")
def kafka_bootstrap(external_kafka: str | None) -> Iterator[str]:
    """Bootstrap servers for the session: ``XCHG_TEST_KAFKA`` if set, else a session-wide embedded broker.

    A plain (sync) fixture: :class:`EmbeddedBroker` is a Popen-owned process bound to no event loop, so it is
    started and stopped with ``asyncio.run`` and serves tests running in their own loops.
    """
    if external_kafka is not None:
        yield external_kafka
        return
    broker = EmbeddedBroker()
    asyncio.run(broker.start())
    try:
        yield broker.bootstrap_servers
    finally:
        asyncio.run(broker.stop())


async def _supports_idempotence(bootstrap: str) -> bool:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=5_000
    )
    try:
        await producer.start()
    except KafkaError:
        return False
    finally:
        await producer.stop()
    return True


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str, external_kafka: str | None) -> KafkaSettings:
    """PLAINTEXT settings for ``kafka_bootstrap``.

    On the embedded broker: no idempotence (Tansu cannot) and short group sessions, because Tansu holds
    JoinGroup for about half the session timeout and aiokafka never sends LeaveGroup from generation 0 (see
    gateway.sandbox.broker). Real Kafka refuses sessions below 6 s by default, so an external cluster gets 6
    s, and idempotence if it supports it (probed once, so ``XCHG_TEST_KAFKA`` may also name a separate Tansu).
    """
    servers = tuple(s.strip() for s in kafka_bootstrap.split(",") if s.strip())
    if external_kafka is None:
        return KafkaSettings(
            bootstrap_servers=servers,
            enable_idempotence=False,
            request_timeout_ms=10_000,
            **EMBEDDED_CLIENT_TIMINGS,
            client_id="xchg-tests",
        )
    return KafkaSettings(
        bootstrap_servers=servers,
        allow_plaintext=True,
        enable_idempotence=asyncio.run(_supports_idempotence(kafka_bootstrap)),
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        request_timeout_ms=10_000,
        client_id="xchg-tests",
    )


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """Factory of fresh topic names: ``unique_topic("orders")`` -> ``it.orders.<uuid hex>``."""

    def make(label: str = "t") -> str:
        return f"it.{label}.{uuid.uuid4().hex}"

    return make


@pytest.fixture
def unique_group() -> Callable[[str], str]:
    """Factory of fresh consumer group ids: ``unique_group("sub")`` -> ``it-sub-<uuid hex>``."""

    def make(label: str = "g") -> str:
        return f"it-{label}-{uuid.uuid4().hex}"

    return make


@pytest.fixture
async def embedded_broker(external_kafka: str | None) -> AsyncIterator[EmbeddedBroker]:
    """A fresh embedded broker owned by this test (pause, stop, restart it at will); always stopped after."""
    if external_kafka is not None:
        pytest.skip(f"{ENV_VAR} is set: tests that control the broker process need the embedded broker")
    broker = EmbeddedBroker()
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
def kafka_backend(request: pytest.FixtureRequest) -> str:
    """``embedded`` (the default) or ``cluster``, as :func:`pytest_generate_tests` parametrized it."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture
async def isolated_kafka(
    request: pytest.FixtureRequest, external_kafka: str | None, kafka_backend: str
) -> AsyncIterator[KafkaSettings]:
    """A fresh embedded broker per test (exchange topics have fixed names), the external cluster, or -- for
    ``kafka_backend == "cluster"`` -- the Apache Kafka cluster with every exchange topic emptied."""
    if kafka_backend == "cluster":
        deployment: ClusterDeployment = request.getfixturevalue("kafka_cluster")
        await deployment.truncate()
        yield deployment.admin()
        return
    if external_kafka is not None:
        yield request.getfixturevalue("kafka_settings")
        return
    async with EmbeddedBroker() as broker:
        yield embedded_settings(broker)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDeployment]:
    """The 3-node Apache Kafka cluster for the session, set up as production is (module docstring).

    Needs Java and the jars tests/kafka/fetch.sh fetches (``./xchg test`` installs both): skipped without
    them locally, a failure under CI. Its nodes are stopped (and reaped) when the session ends.
    ``XCHG_TEST_KAFKA_CLUSTER=DIR`` attaches to a cluster ``python -m tests.kafka.cluster --dir DIR`` runs.
    """
    attach = os.environ.get(ATTACH_VAR, "").strip()
    if attach:
        yield ClusterDeployment(KafkaCluster.attach(Path(attach)), Rendering.load(Path(attach) / "rendered"))
        return
    missing = kafka_available()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Apache Kafka cannot run: {missing}")
        pytest.skip(f"Apache Kafka cannot run: {missing}")
    root = tmp_path_factory.mktemp("kafka-cluster")
    cluster = KafkaCluster(root)
    cluster.start()
    try:
        cluster.save()  # so that a benchmark can attach (bench/kafka_cluster.py --attach)
        rendering = render(SAMPLE_REGISTRY, root / "rendered")
        apply_init_script(cluster, rendering)
        yield ClusterDeployment(cluster, rendering)
    finally:
        cluster.stop()


# -- TLS: a throwaway CA and stunnel in front of an embedded broker --------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA and a server certificate for 127.0.0.1 / localhost."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA plus a server certificate (SAN: 127.0.0.1, ::1, localhost) signed by it."""
    ca_path, ca_key, ca_cert = make_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_cert = directory / "server.pem"
    server_key = directory / "server.key"
    server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_key.chmod(0o600)
    return Pki(ca_cert=ca_path, server_cert=server_cert, server_key=server_key)


@dataclass(frozen=True)
class TlsProxy:
    """stunnel on ``port`` (TLS) forwarding to ``broker`` (PLAINTEXT), which advertises ``port``."""

    broker: EmbeddedBroker
    port: int
    pki: Pki

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def _stunnel_binary() -> str | None:
    return shutil.which("stunnel4") or shutil.which("stunnel")


def _spawn(stunnel: str, conf: Path, console: Path) -> subprocess.Popen[bytes]:
    with console.open("wb") as out:
        return subprocess.Popen([stunnel, str(conf)], stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s; always reaped (stunnel exits within milliseconds of SIGTERM)."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _wait_for_port(port: int, proc: subprocess.Popen[bytes], logs: list[Path]) -> None:
    deadline = time.monotonic() + 10.0
    while True:
        if proc.poll() is not None:
            text = "\n".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())
            pytest.fail(f"stunnel exited with {proc.returncode}:\n{text}")
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"stunnel not listening on {port} within 10s")
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


@pytest.fixture
async def tls_proxy(external_kafka: str | None, tmp_path: Path) -> AsyncIterator[TlsProxy]:
    """A fresh embedded broker behind stunnel with a throwaway CA (``.pki.ca_cert`` for clients).

    The broker listens on port A and advertises stunnel's port B, so clients bootstrap *and* reconnect
    through TLS. Needs stunnel (Debian ``stunnel4``, installed by ``.ci/install-system-deps``): skipped
    without it locally, a failure under CI.
    """
    if external_kafka is not None:
        pytest.skip(f"{ENV_VAR} is set: the TLS proxy fronts the embedded broker")
    stunnel = _stunnel_binary()
    if stunnel is None:
        if os.environ.get("CI"):
            pytest.fail("stunnel is not installed; run .ci/install-system-deps")
        pytest.skip("stunnel is not installed (apt-get install stunnel4, or .ci/install-system-deps)")
    pki = make_pki(tmp_path / "pki")
    tls_port = free_port()
    log = tmp_path / "stunnel.log"
    console = tmp_path / "stunnel.console"
    broker = EmbeddedBroker(advertised_port=tls_port)
    await broker.start()
    try:
        conf = tmp_path / "stunnel.conf"
        conf.write_text(
            "\n".join(
                [
                    "foreground = yes",
                    "pid =",
                    f"output = {log}",
                    "debug = notice",
                    "[kafka]",
                    f"accept = 127.0.0.1:{tls_port}",
                    f"connect = 127.0.0.1:{broker.port}",
                    f"cert = {pki.server_cert}",
                    f"key = {pki.server_key}",
                    "sslVersionMin = TLSv1.2",
                    "",
                ]
            )
        )
        proc = _spawn(stunnel, conf, console)
        try:
            await _wait_for_port(tls_port, proc, [console, log])
            yield TlsProxy(broker=broker, port=tls_port, pki=pki)
        finally:
            _stop(proc)
    finally:
        await broker.stop()
