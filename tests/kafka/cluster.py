"""A 3-node Apache Kafka (KRaft) cluster on loopback, secured as production is: the test suite's real Kafka.

Why: production runs Apache Kafka with TLS, SASL/SCRAM and deny-by-default literal ACLs; the embedded
broker (Tansu) has none of that, nor replication or idempotent producers. This module starts the real
thing from the jars ``tests/kafka/pom.xml`` fetched from Maven Central (``tests/kafka/fetch.sh``, run by
``./xchg test``), with the security shape of ``deploy/compose/kafka/start.sh``:

* three combined broker+controller nodes (``process.roles=broker,controller``), static quorum;
* listeners ``INTERNAL`` (SSL, mutual TLS: replication), ``CLIENT`` (SASL_SSL, SCRAM-SHA-512: every client)
  and ``CONTROLLER`` (SSL, mutual TLS: the KRaft quorum), certificates made here with ``cryptography`` by a
  throwaway CA (nodes are ``User:CN=kafka-N``, super users, as is the bootstrap SCRAM user ``admin``);
* ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``, ``default.replication.factor=3``,
  ``min.insync.replicas=2``, no topic auto-creation.

Nothing else is configured for the exchange: topics, the gateways' SCRAM users and their ACLs come from the
rendered ``kafka-init.sh`` (:func:`apply_init_script`), run with Kafka's own tool classes
(``tests/kafka/bin``).

Processes: each node is a ``java`` child of this process, in its own session, with ``PR_SET_PDEATHSIG`` so
that it dies with the test run even when that is killed; :meth:`KafkaCluster.stop` terminates and reaps
them. :meth:`KafkaCluster.kill` (SIGKILL) and :meth:`KafkaCluster.restart` are for failure tests.

Run by hand (the benchmark does): ``python -m tests.kafka.cluster --dir /tmp/kc`` starts the cluster, applies
the sample registry's rendering, prints the connection settings and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.bus.kafka import KafkaSettings, SaslSettings, TlsSettings
from gateway.deploy.acls import username_for
from gateway.sandbox.broker import free_port
from tests.tls import make_ca

__all__ = [
    "ATTACH_VAR",
    "HERE",
    "KAFKA_BIN",
    "KAFKA_LIB",
    "KAFKA_VERSION",
    "ClusterDeployment",
    "ClusterError",
    "ClusterSettings",
    "KafkaCluster",
    "Rendering",
    "apply_init_script",
    "kafka_available",
    "render",
]

HERE: Final = Path(__file__).resolve().parent
KAFKA_LIB: Final = HERE / ".cache" / "lib"
KAFKA_BIN: Final = HERE / "bin"
KAFKA_VERSION: Final = "4.4.0"  # tests/kafka/pom.xml pins it; test_cluster checks the jar is that version
ADMIN_USER: Final = "admin"
ATTACH_VAR: Final = "XCHG_TEST_KAFKA_CLUSTER"
"""Names the folder of a cluster started with ``python -m tests.kafka.cluster --dir``: the test session then
attaches to it instead of starting its own (quicker while developing; failure tests that kill nodes skip)."""
SERVER_JAVA_OPTS: Final = (
    "-Xms128m",
    "-Xmx384m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
_PR_SET_PDEATHSIG: Final = 1
_T = TypeVar("_T")


class ClusterError(RuntimeError):
    """The cluster could not be started, reached or configured (the message says which node and why)."""


def kafka_available() -> str | None:
    """None when the cluster can run here; else what is missing (Java, or the fetched Kafka jars)."""
    if shutil.which("java") is None:
        return "no java on PATH (Debian: default-jre-headless; .ci/install-system-deps installs it)"
    if not (KAFKA_LIB / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        return f"no Kafka {KAFKA_VERSION} jars in {KAFKA_LIB} (run tests/kafka/fetch.sh; ./xchg test does)"
    return None


# ---- certificates -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Pki:
    ca_file: Path
    node_keystores: Mapping[int, Path]  # PEM: private key (PKCS#8) + certificate + CA


def _make_pki(directory: Path, node_ids: Sequence[int]) -> _Pki:
    """A throwaway CA and, per node, a certificate ``CN=kafka-N`` for 127.0.0.1/localhost (server+client)."""
    ca_file, ca_key, ca_cert = make_ca(directory, "xchg test Kafka CA")
    now = datetime.now(UTC)
    stores = {}
    for node_id in node_ids:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"kafka-{node_id}")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        store = directory / f"kafka-{node_id}.pem"
        store.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            + cert.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        store.chmod(0o600)
        stores[node_id] = store
    return _Pki(ca_file=ca_file, node_keystores=stores)


def _cluster_id() -> str:
    """A Kafka ``Uuid`` in its base64url form, as ``kafka-storage random-uuid`` prints (never starts '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _password() -> str:
    """A SCRAM password of the shape kafka-init.sh requires (24+ of A-Z a-z 0-9 _ -)."""
    return secrets.token_urlsafe(24)


def _run_in_thread(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion in a thread of its own (the caller may be inside an event loop: a
    session fixture first requested by an async test)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# ---- the cluster --------------------------------------------------------------------------------------
@dataclass
class _Node:
    node_id: int
    internal_port: int
    client_port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"


@dataclass
class KafkaCluster:
    """``size`` KRaft nodes under ``root``: :meth:`start`, :meth:`stop`, :meth:`kill`, :meth:`restart`."""

    root: Path
    size: int = 3
    broker_session_timeout_ms: int = 4_000
    """How soon the controller fences a node that stopped heartbeating (Kafka's default is 9 s): a killed
    node's partitions move to the survivors after this."""
    offsets_partitions: int = 12
    """``offsets.topic.num.partitions`` (Kafka's default 50): fewer partitions, quicker group start-up."""
    java_opts: Sequence[str] = SERVER_JAVA_OPTS
    nodes: dict[int, _Node] = field(default_factory=dict, init=False)
    admin_password: str = field(default_factory=_password, init=False)
    cluster_id: str = field(default_factory=_cluster_id, init=False)
    pki: _Pki | None = field(default=None, init=False)
    _attached: bool = field(default=False, init=False)

    # -- derived ----------------------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> tuple[str, ...]:
        """The SASL_SSL (CLIENT) listener of every node, ``127.0.0.1:port``."""
        return tuple(f"127.0.0.1:{n.client_port}" for n in self.nodes.values())

    @property
    def ca_file(self) -> Path:
        if self.pki is None:
            raise ClusterError("the cluster has not been started")
        return self.pki.ca_file

    def password_file(self, username: str, password: str) -> Path:
        """Write ``password`` to ``secrets/<username>`` (0600) and return the path."""
        directory = self.root / "secrets"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / username
        path.write_text(password, encoding="utf-8")
        path.chmod(0o600)
        return path

    def settings(
        self, username: str, password_file: Path, *, ca_file: Path | None = None, **extra: Any
    ) -> KafkaSettings:
        """SASL_SSL / SCRAM-SHA-512 client settings for ``username``, TLS verified against the cluster CA."""
        options: dict[str, Any] = {
            "session_timeout_ms": 6_000,  # the broker's group.min.session.timeout.ms
            "heartbeat_interval_ms": 1_000,
            "request_timeout_ms": 15_000,
            "client_id": f"xchg-tests-{username}".replace("@", "-"),
            **extra,
        }
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            security_protocol="SASL_SSL",
            tls=TlsSettings(ca_file=ca_file or self.ca_file),
            sasl=SaslSettings(mechanism="SCRAM-SHA-512", username=username, password_file=password_file),
            enable_idempotence=True,
            **options,  # keyword names and values are KafkaSettings' own checks
        )

    def admin_settings(self, **extra: Any) -> KafkaSettings:
        """Settings of the super user ``admin`` (bootstrapped by ``kafka-storage format --add-scram``)."""
        return self.settings(ADMIN_USER, self.password_file(ADMIN_USER, self.admin_password), **extra)

    def admin_properties(self) -> Path:
        """Client properties of ``admin`` for Kafka's tools (``--command-config``), as deploy/compose does."""
        path = self.root / "admin.properties"
        path.write_text(
            "\n".join(
                [
                    "security.protocol=SASL_SSL",
                    "sasl.mechanism=SCRAM-SHA-512",
                    "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{ADMIN_USER}" password="{self.admin_password}";',
                    "ssl.truststore.type=PEM",
                    f"ssl.truststore.location={self.ca_file}",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        path.chmod(0o600)
        return path

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Generate certificates and configuration, format the storage, start every node, wait until all
        brokers are registered and the admin gets answers."""
        missing = kafka_available()
        if missing is not None:
            raise ClusterError(missing)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        ids = list(range(1, self.size + 1))
        self.pki = _make_pki(self.root / "pki", ids)
        for node_id in ids:
            directory = self.root / f"node-{node_id}"
            directory.mkdir(mode=0o700, exist_ok=True)
            self.nodes[node_id] = _Node(node_id, free_port(), free_port(), free_port(), directory)
        for node in self.nodes.values():
            self._write_config(node)
        self._format()
        try:
            for node in self.nodes.values():
                self._spawn(node)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM every node, SIGKILL those still running after 20 s; always reaped."""
        running = [n for n in self.nodes.values() if n.process is not None]
        for node in running:
            assert node.process is not None
            if node.process.poll() is None:
                node.process.terminate()
        deadline = time.monotonic() + 20.0
        for node in running:
            assert node.process is not None
            try:
                node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            node.process = None

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no clean shutdown: the failure a crash or power loss causes) and reap it."""
        node = self.nodes[node_id]
        if not self.owned:
            raise ClusterError("attached to a cluster another process runs: cannot kill its nodes")
        if node.process is None or node.process.poll() is not None:
            raise ClusterError(f"node {node_id} is not running")
        node.process.kill()
        node.process.wait()
        node.process = None

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a killed node again on the same ports and data; wait until it is a registered broker again
        and every partition's replicas are back in sync."""
        self.spawn(node_id)
        self.wait_back(timeout)

    def spawn(self, node_id: int) -> None:
        """Start a stopped or killed node again on its ports and data, without waiting (:meth:`wait_back`
        waits). Call it from the main thread (see :meth:`_spawn`)."""
        node = self.nodes[node_id]
        if node.process is not None and node.process.poll() is None:
            raise ClusterError(f"node {node_id} is still running")
        self._spawn(node)

    def wait_back(self, timeout: float = 90.0) -> None:
        """Until every running node is a registered broker and every partition's replicas are in sync."""
        deadline = time.monotonic() + timeout
        self.wait_ready(timeout)
        self.wait_in_sync(max(1.0, deadline - time.monotonic()))

    def wait_in_sync(self, timeout: float) -> None:
        """Until every partition of every topic has all its replicas in sync again (a restarted node has
        caught up), or ``timeout`` s (then :class:`ClusterError`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                lagging = _run_in_thread(self._under_replicated)
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                lagging = [f"{type(exc).__name__}: {exc}"]
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"replicas not in sync after {timeout:g}s: {', '.join(lagging[:10])}")
            time.sleep(0.5)

    async def _under_replicated(self) -> list[str]:
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only when talking to Kafka

        admin = AIOKafkaAdminClient(**self.admin_settings(request_timeout_ms=5_000).admin_kwargs())
        try:
            await admin.start()
            topics = await admin.list_topics()
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        return [
            f"{entry['topic']}/{part['partition']}"
            for entry in described
            for part in entry["partitions"]
            if len(part["isr"]) < len(part["replicas"])
        ]

    def running(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.process is not None and n.process.poll() is None]

    @property
    def owned(self) -> bool:
        """Whether this object started the nodes (and can kill and restart them), or only attached to them."""
        return not self._attached

    def save(self) -> Path:
        """Write ``cluster.json`` (ports, certificates, admin password file) so another process can attach."""
        path = self.root / "cluster.json"
        state = {
            "cluster_id": self.cluster_id,
            "admin_password_file": str(self.password_file(ADMIN_USER, self.admin_password)),
            "ca_file": str(self.ca_file),
            "nodes": [
                [n.node_id, n.internal_port, n.client_port, n.controller_port] for n in self.nodes.values()
            ],
        }
        path.write_text(json.dumps(state, indent=2), encoding="utf-8")
        path.chmod(0o600)
        return path

    @classmethod
    def attach(cls, root: Path) -> KafkaCluster:
        """A cluster another process started (``python -m tests.kafka.cluster --dir ROOT``): connect only."""
        state = json.loads((root / "cluster.json").read_text(encoding="utf-8"))
        cluster = cls(root)
        cluster.cluster_id = state["cluster_id"]
        cluster.admin_password = Path(state["admin_password_file"]).read_text(encoding="utf-8")
        cluster.pki = _Pki(ca_file=Path(state["ca_file"]), node_keystores={})
        for node_id, internal, client, controller in state["nodes"]:
            cluster.nodes[node_id] = _Node(node_id, internal, client, controller, root / f"node-{node_id}")
        cluster._attached = True
        return cluster

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- readiness and inspection -----------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> None:
        """Until every running node is a registered broker, or ``timeout`` s (then :class:`ClusterError`)."""
        deadline = time.monotonic() + timeout
        want = set(self.running())
        last = "no answer yet"
        while True:
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    raise ClusterError(
                        f"node {node.node_id} exited with {node.process.returncode}:\n{self._tail(node)}"
                    )
            last = self._readiness(want)
            if not last:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(self._tail(n, 15) for n in self.nodes.values())
                raise ClusterError(f"cluster not ready after {timeout:g}s ({last}):\n{tails}")
            time.sleep(0.5)

    def _readiness(self, want: set[int]) -> str:
        """What is still missing before ``want`` are all registered brokers ("" when nothing is)."""
        if not all(_listening(self.nodes[i].client_port) for i in want):
            return "client listeners not accepting connections yet"
        try:
            brokers = _run_in_thread(self._registered_brokers)
        except Exception as exc:  # noqa: BLE001 - not up yet: any client error means "retry"
            return f"{type(exc).__name__}: {exc}"
        if brokers >= want:
            return ""
        return f"brokers registered: {sorted(brokers)}, want {sorted(want)}"

    async def _registered_brokers(self) -> set[int]:
        from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - only when talking to Kafka

        admin = AIOKafkaAdminClient(**self.admin_settings(request_timeout_ms=5_000).admin_kwargs())
        try:
            await admin.start()
            description = await admin.describe_cluster()
            return {int(b["node_id"]) for b in description["brokers"]}
        finally:
            await admin.close()

    def active_controller(self) -> int:
        """The node id of the KRaft quorum leader (``kafka-metadata-quorum describe --status``)."""
        result = subprocess.run(
            [
                str(KAFKA_BIN / "kafka-metadata-quorum.sh"),
                "--bootstrap-server",
                ",".join(self.bootstrap_servers),
                "--command-config",
                str(self.admin_properties()),
                "describe",
                "--status",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for line in result.stdout.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "LeaderId":
                return int(value.strip())
        raise ClusterError(f"no LeaderId from kafka-metadata-quorum: {result.stdout}{result.stderr}")

    def _tail(self, node: _Node, lines: int = 40) -> str:
        texts = []
        for path in (node.log, node.directory / "console.log"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                texts.append(f"--- node {node.node_id} {path.name}\n" + "\n".join(text))
        return "\n".join(texts)

    # -- internals --------------------------------------------------------------------------------------
    def _write_config(self, node: _Node) -> None:
        assert self.pki is not None
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes.values())
        super_users = ";".join([*(f"User:CN=kafka-{i}" for i in self.nodes), f"User:{ADMIN_USER}"])
        properties = {
            "node.id": node.node_id,
            "process.roles": "broker,controller",
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": (
                f"INTERNAL://127.0.0.1:{node.internal_port},CLIENT://127.0.0.1:{node.client_port},"
                f"CONTROLLER://127.0.0.1:{node.controller_port}"
            ),
            "advertised.listeners": (
                f"INTERNAL://127.0.0.1:{node.internal_port},CLIENT://127.0.0.1:{node.client_port}"
            ),
            "listener.security.protocol.map": "INTERNAL:SSL,CLIENT:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "INTERNAL",
            "log.dirs": node.directory / "data",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": self.pki.node_keystores[node.node_id],
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": self.pki.ca_file,
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            "ssl.endpoint.identification.algorithm": "https",
            "listener.name.internal.ssl.client.auth": "required",
            "listener.name.controller.ssl.client.auth": "required",
            "listener.name.client.ssl.client.auth": "none",
            "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.client.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": super_users,
            "auto.create.topics.enable": "false",
            "default.replication.factor": 3,
            "min.insync.replicas": 2,
            "offsets.topic.replication.factor": 3,
            "offsets.topic.num.partitions": self.offsets_partitions,
            "transaction.state.log.replication.factor": 3,
            "transaction.state.log.min.isr": 2,
            "group.initial.rebalance.delay.ms": 0,
            "broker.session.timeout.ms": self.broker_session_timeout_ms,
            "broker.heartbeat.interval.ms": 500,
            "num.network.threads": 2,
            "num.io.threads": 4,
        }
        node.config.write_text(
            "".join(f"{key}={value}\n" for key, value in properties.items()), encoding="utf-8"
        )
        node.config.chmod(0o600)

    def _java(self, main: str, *args: str, opts: Sequence[str]) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ClusterError("no java on PATH")
        return [java, *opts, "-cp", f"{KAFKA_LIB}/*", main, *args]

    def _format(self) -> None:
        """``kafka-storage format`` for every node, bootstrapping the admin's SCRAM credential."""
        for node in self.nodes.values():
            command = self._java(
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "--cluster-id",
                self.cluster_id,
                "--config",
                str(node.config),
                "--add-scram",
                f"SCRAM-SHA-512=[name={ADMIN_USER},password={self.admin_password}]",
                opts=(
                    "-Xmx256m",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",
                    f"-Dlog4j2.configurationFile={HERE / 'log4j2-tools.properties'}",
                ),
            )
            result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0:
                raise ClusterError(f"kafka-storage format of node {node.node_id} failed: {result.stderr}")

    def _spawn(self, node: _Node) -> None:
        """Start a node's JVM. Only from the main thread: ``PR_SET_PDEATHSIG`` fires when the *thread* that
        forked exits, so a node started from a worker thread (``asyncio.to_thread``) would be killed when
        that thread ends, not when the test run does."""
        if threading.current_thread() is not threading.main_thread():
            raise ClusterError("start nodes from the main thread (PR_SET_PDEATHSIG follows the thread)")
        command = self._java(
            "kafka.Kafka",
            str(node.config),
            opts=(
                *self.java_opts,
                f"-Dkafka.logs.dir={node.directory}",
                f"-Dlog4j2.configurationFile={HERE / 'log4j2-server.properties'}",
            ),
        )
        with (node.directory / "console.log").open("ab") as console:
            node.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                cwd=node.directory,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, async-signal-safe enough
            )


# ---- the production path: render from the registry, apply kafka-init.sh ---------------------------------
@dataclass(frozen=True)
class Rendering:
    """What ``gateway deploy render`` wrote, and a password file per SCRAM user it lists."""

    directory: Path
    manifest: Mapping[str, object]
    passwords: Mapping[str, Path]  # username -> password file

    @property
    def init_script(self) -> Path:
        return self.directory / "kafka-init.sh"

    @classmethod
    def load(cls, directory: Path) -> Rendering:
        """A rendering :func:`render` wrote earlier (acls.json and scram/<user>)."""
        manifest = json.loads((directory / "acls.json").read_text(encoding="utf-8"))
        passwords = {u["username"]: directory / "scram" / u["username"] for u in manifest["users"]}
        return cls(directory=directory, manifest=manifest, passwords=passwords)

    def usernames(self) -> list[str]:
        users = self.manifest["users"]
        assert isinstance(users, list)
        return [str(u["username"]) for u in users]


def render(registry: Path, out: Path, *, partitions: int = 6) -> Rendering:
    """``gateway deploy render`` for ``registry`` into ``out`` (the same command operators run), plus a
    random password file per user under ``out/scram`` (the ``XCHG_SCRAM_DIR`` kafka-init.sh reads)."""
    command = [
        sys.executable,
        "-m",
        "gateway.cli",
        "deploy",
        "render",
        "--registry",
        str(registry),
        "--out",
        str(out),
        "--partitions",
        str(partitions),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise ClusterError(f"gateway deploy render failed: {result.stderr}")
    manifest = json.loads((out / "acls.json").read_text(encoding="utf-8"))
    scram = out / "scram"
    scram.mkdir(mode=0o700, exist_ok=True)
    passwords = {}
    for user in manifest["users"]:
        path = scram / user["username"]
        path.write_text(_password(), encoding="utf-8")
        path.chmod(0o600)
        passwords[user["username"]] = path
    return Rendering(directory=out, manifest=manifest, passwords=passwords)


def apply_init_script(cluster: KafkaCluster, rendering: Rendering) -> str:
    """Run the rendered ``kafka-init.sh`` as ``admin`` against ``cluster``, with ``KAFKA_BIN`` pointing at
    Kafka's own tool classes (``tests/kafka/bin``); return its output. Raises ClusterError on failure."""
    env = {
        **os.environ,
        "XCHG_BOOTSTRAP": ",".join(cluster.bootstrap_servers),
        "XCHG_ADMIN_CONFIG": str(cluster.admin_properties()),
        "XCHG_SCRAM_DIR": str(rendering.directory / "scram"),
        "KAFKA_BIN": str(KAFKA_BIN),
    }
    result = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(rendering.init_script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"kafka-init.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSettings(KafkaSettings):
    """The admin's settings on a cluster that ``kafka-init.sh`` set up, plus each gateway user's password.

    A :class:`KafkaSettings` (the admin is a super user, so tests may inject and inspect records with it), and
    :meth:`for_party` gives the settings a party's own gateway uses: ``tests/integration/exchange.py``
    connects every gateway of a sandbox exchange with its own SCRAM user, so the broker's ACLs apply.
    """

    passwords: Mapping[str, Path] = field(default_factory=dict, compare=False, hash=False)
    """SCRAM password file per user name (``xchg-<party>``)."""

    def for_party(self, party: str) -> KafkaSettings:
        """These settings as party ``party``'s gateway: user ``xchg-<party>``, its password file."""
        username = username_for(party)
        if username not in self.passwords or self.sasl is None:
            raise ClusterError(f"no SCRAM user {username!r} was rendered for this cluster")
        values = {f.name: getattr(self, f.name) for f in fields(KafkaSettings) if f.init}
        values["sasl"] = SaslSettings(
            mechanism=self.sasl.mechanism, username=username, password_file=self.passwords[username]
        )
        values["client_id"] = f"xchg-{party}"
        return KafkaSettings(**values)


@dataclass(frozen=True)
class ClusterDeployment:
    """A running cluster with the registry's rendering applied: what the ``kafka_cluster`` fixture yields."""

    cluster: KafkaCluster
    rendering: Rendering

    def admin(self, **extra: Any) -> ClusterSettings:
        """The super user's settings, knowing every rendered user's password (see ClusterSettings)."""
        base = self.cluster.admin_settings(**extra)
        values = {f.name: getattr(base, f.name) for f in fields(KafkaSettings) if f.init}
        return ClusterSettings(**values, passwords=dict(self.rendering.passwords))

    def party(self, party: str, **extra: Any) -> KafkaSettings:
        """The settings party ``party``'s gateway connects with (its own SCRAM user)."""
        return self.admin(**extra).for_party(party)

    def topics(self) -> list[str]:
        topics = self.rendering.manifest["topics"]
        assert isinstance(topics, list)
        return [str(t["name"]) for t in topics]

    async def truncate(self) -> None:
        """Delete every record of every rendered topic (DeleteRecords up to the high watermark).

        Gives each test empty exchange topics without deleting them (their ACLs are LITERAL, their shape is
        kafka-init.sh's); a consumer group's committed offsets then lie before the log start, so the next
        gateway of that party starts at the (new) beginning. The compacted registry topic keeps its records
        (Kafka refuses DeleteRecords on a compacted topic): each test's gateways read the earlier tests'
        versions as history their own anchor does not trust, and count nothing for them.
        """
        from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete  # noqa: PLC0415
        from aiokafka.structs import TopicPartition  # noqa: PLC0415

        admin = AIOKafkaAdminClient(**self.admin().admin_kwargs())
        await admin.start()
        try:
            topics = self.rendering.manifest["topics"]
            assert isinstance(topics, list)
            names = [str(t["name"]) for t in topics if t["config"].get("cleanup.policy") != "compact"]
            described = await admin.describe_topics(names)
            wanted = {
                TopicPartition(entry["topic"], part["partition"]): RecordsToDelete(-1)
                for entry in described
                for part in entry["partitions"]
            }
            await admin.delete_records(wanted, timeout_ms=30_000)
        finally:
            await admin.close()


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[KafkaCluster]:
    """A started cluster, stopped on exit."""
    cluster = KafkaCluster(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.kafka.cluster --dir DIR``: start, render and apply the sample registry, wait."""
    from gateway.sandbox.deployment import SAMPLE_REGISTRY  # noqa: PLC0415 - CLI only

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, required=True, help="working folder (certificates, data, logs)")
    parser.add_argument("--registry", type=Path, default=SAMPLE_REGISTRY)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with running_cluster(args.dir) as cluster:
        print(f"cluster up in {time.monotonic() - started:.1f}s", flush=True)
        rendering = render(args.registry, args.dir / "rendered")
        began = time.monotonic()
        apply_init_script(cluster, rendering)
        print(f"kafka-init.sh applied in {time.monotonic() - began:.1f}s", flush=True)
        print(f"attach with {ATTACH_VAR}={cluster.save().parent}", flush=True)
        print(json.dumps({
            "bootstrap_servers": list(cluster.bootstrap_servers),
            "ca_file": str(cluster.ca_file),
            "admin_properties": str(cluster.admin_properties()),
            "scram_dir": str(rendering.directory / "scram"),
        }, indent=2), flush=True)  # fmt: skip
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
