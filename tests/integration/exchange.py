"""Helpers for end-to-end exchange tests: a sandbox deployment of several gateways on one broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from gateway.bus.kafka import EMBEDDED_CLIENT_TIMINGS, KafkaSettings
from gateway.bus.registry_feed import publish_version
from gateway.bus.subscriber import Route
from gateway.contract.registry import Registry
from gateway.contract.registry_chain import Anchor
from gateway.contract.registry_changes import initial_document
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from gateway.sandbox.broker import EmbeddedBroker
from gateway.sandbox.deployment import ANCHOR_FILE, SandboxParty, create_sandbox, sandbox_registry
from gateway.sandbox.maintainers import maintainer_set, new_maintainers, signed_version
from gateway.sandbox.memory import MemorySink
from tests.kafka.cluster import ClusterSettings

#: Client timings the embedded broker needs (gateway.bus.kafka.EMBEDDED_CLIENT_TIMINGS) and the tests' request
#: timeout; an external Kafka gets its own settings.
EMBEDDED_KAFKA = {**EMBEDDED_CLIENT_TIMINGS, "request_timeout_ms": 10000}


@dataclass
class Node:
    party: str
    sandbox: SandboxParty
    sink: MemorySink
    gateway: Gateway


def kafka_table(settings: KafkaSettings) -> dict[str, Any]:
    table: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "request_timeout_ms": settings.request_timeout_ms,
        "enable_idempotence": settings.idempotence,
    }
    if settings.fetch_max_wait_ms is not None:
        table["fetch_max_wait_ms"] = settings.fetch_max_wait_ms
    if settings.allow_plaintext:
        table["allow_plaintext"] = True
    if settings.security_protocol != "PLAINTEXT":
        table["security_protocol"] = settings.security_protocol
    if settings.tls is not None:  # as an operator writes it: [kafka.tls] ca_file = "..."
        table["tls"] = {"ca_file": str(settings.tls.ca_file), "check_hostname": settings.tls.check_hostname}
    if settings.sasl is not None:  # the password stays in its file
        sasl = settings.sasl
        table["sasl"] = {
            "mechanism": sasl.mechanism,
            "username": sasl.username,
            "password_file": str(sasl.password_file),
        }
    return table


def kafka_settings_for(bootstrap_servers: str, **extra: Any) -> KafkaSettings:
    """Settings for an embedded broker (or a TLS proxy in front of one): no idempotence, its group timings."""
    return KafkaSettings(
        bootstrap_servers=(bootstrap_servers,),
        enable_idempotence=False,
        **{**EMBEDDED_KAFKA, **extra},
    )


def embedded_settings(broker: EmbeddedBroker) -> KafkaSettings:
    """PLAINTEXT settings for an embedded broker, with the group timings it needs."""
    return kafka_settings_for(broker.bootstrap_servers)


@contextlib.asynccontextmanager
async def exchange(
    root: Path,
    parties: Sequence[str],
    settings: KafkaSettings,
    *,
    extra_parties: Sequence[Mapping[str, Any]] = (),
    overrides: Mapping[str, Any] | None = None,
    per_party: Mapping[str, Mapping[str, Any]] | None = None,
    sinks: Mapping[str, MemorySink] | None = None,
    template: Path | None = None,
    publish_registry: bool = True,
) -> AsyncIterator[dict[str, Node]]:
    """Start one gateway per party (each with a MemorySink for everything it receives); stop them all after.

    ``sinks`` replaces the MemorySink of some parties (e.g. one that fails); ``overrides`` are merged into
    every gateway's configuration file; ``per_party`` gives top-level tables (e.g. an adapter's
    ``[[sources]]`` / ``[[sinks]]``) written into one party's file only, replacing what the sandbox wrote
    there, as that agency's operator configures it; ``template`` replaces the sample registry the deployment
    starts from. The maintainers publish version 1 of the signed registry on the registry topic unless
    ``publish_registry`` is false (gateways that cannot reach the broker read it from the file alone). On the
    Apache Kafka cluster (``settings`` is a :class:`ClusterSettings`), each gateway connects as its own SCRAM
    user (``xchg-<party>``), so the ACLs kafka-init.sh applied are enforced.
    """
    sandbox = create_sandbox(
        root, parties, bootstrap_servers=settings.bootstrap_servers, extra_parties=extra_parties,
        **({"template": template} if template is not None else {}),
        settings={"kafka": kafka_table(settings), "shutdown": {"timeout_seconds": 10.0}, **(overrides or {})},
    )  # fmt: skip
    if publish_registry:
        await publish_version(settings, sandbox_registry(root))
    own_users = (
        {p: {"kafka": {**kafka_table(settings.for_party(p)), "client_id": f"xchg-{p}"}} for p in parties}
        if isinstance(settings, ClusterSettings)
        else {}
    )
    for party in parties:
        tables = {**own_users.get(party, {}), **(per_party or {}).get(party, {})}
        if not tables:
            continue
        config = sandbox[party].config
        document = tomllib.loads(config.read_text("utf-8"))
        config.write_text(tomli_w.dumps({**document, **tables}), "utf-8")
    nodes: dict[str, Node] = {}
    try:
        for party in parties:
            nodes[party] = await start_node(sandbox[party], (sinks or {}).get(party))
        yield nodes
    finally:
        for node in nodes.values():
            await node.gateway.stop()


async def start_node(sandbox: SandboxParty, sink: MemorySink | None = None) -> Node:
    config = GatewayConfig.load(sandbox.config)
    sink = sink or MemorySink(name=f"{sandbox.party}-sink")
    gateway = Gateway(config, routes=[Route(sink)])
    await gateway.start()
    return Node(sandbox.party, sandbox, sink, gateway)


async def eventually(
    predicate: Callable[[], bool],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a bound on polling, not a cancellation scope
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` (a bound, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def received_ids(node: Node, ours: set[str]) -> list[str]:
    """Ids of *our* events this node's sink received, once per delivery call (a duplicate would repeat)."""
    return [event_id for _, event_id in node.sink.log if event_id in ours]


def metric_total(node: Node, name: str, **labels: str) -> float:
    """Sum of a metric's samples (optionally only those with ``labels``) in the node's own registry."""
    total = 0.0
    for family in node.gateway.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def publish_registry(document: Mapping[str, Any], directory: Path, settings: KafkaSettings) -> Path:
    """Sign ``document`` (an unsigned ``xchg-registry/1`` registry, e.g. ``World.document``) as version 1 by
    two of three fresh maintainers, publish it on the registry topic and write its anchor in ``directory``;
    returns the anchor file (what a notary without gateways needs)."""
    maintainers = new_maintainers()
    document = initial_document(
        Registry.from_mapping(document), maintainer_set(maintainers, 2), now=datetime.now(UTC)
    )
    version = signed_version(document, maintainers[:2])
    await publish_version(settings, version)
    return _write_anchor(directory, Anchor.of(version))


def _write_anchor(directory: Path, anchor: Anchor) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ANCHOR_FILE
    path.write_text(anchor.to_toml(), "utf-8")
    return path
