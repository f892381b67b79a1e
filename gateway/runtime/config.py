"""Gateway configuration: one TOML file per party gateway, plus environment overrides applied by the CLI.

Validated once, at start-up, into frozen keyword-only objects; every error names the offending key
(``config.invalid: ops.port: ...``). Relative paths are resolved against the configuration file's folder.
See ``docs/CONFIGURATION.md`` and ``deploy/gateway.example.toml``.

Environment overrides (read by the CLI only, never here): ``XCHG__<SECTION>__<KEY>=value`` sets
``[section] key``, e.g. ``XCHG__KAFKA__BOOTSTRAP_SERVERS=k1:9093,k2:9093`` or ``XCHG__OPS__PORT=9100``;
values are parsed as TOML when they parse (numbers, booleans, arrays), else taken as strings; a
comma-separated value for ``bootstrap_servers`` becomes a list.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.bus.delivery import RetryPolicy
from gateway.bus.kafka import KafkaSettings
from gateway.contract.envelope import Limits
from gateway.coordination.config import CoordinationConfig
from gateway.errors import GatewayError
from gateway.settings import Table, load_toml, overlay

__all__ = [
    "ENV_PREFIX",
    "GatewayConfig",
    "OpsConfig",
    "ReceiptsConfig",
    "SinkConfig",
    "SourceConfig",
    "env_overrides",
]

ENV_PREFIX: Final = "XCHG__"
_SECTIONS: Final = frozenset(
    {"party", "data_dir", "registry", "registry_anchor", "follow_registry", "schemas", "keys", "kafka",
     "limits", "ops", "retry", "shutdown", "sources", "sinks", "topics", "coordination", "receipts", "dlq"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    key_expiry_days: int = 14
    max_outbox_backlog: int = 10_000
    max_consumer_lag: int = 10_000
    check_timeout: float = 2.0
    task_initial_backoff: float = 0.5
    task_max_backoff: float = 30.0
    task_unhealthy_after: int = 5
    task_healthy_after: float = 60.0
    status: bool = True
    """Serve the operators' status page (``/status``) on the same port."""
    status_interval: float = 15.0
    """Seconds between the status page's samples (rates, charts, readiness gauge) and its refreshes."""
    notary_url: str | None = None
    """The notary's HTTP base URL: the status page shows its latest signed checkpoint."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptsConfig:
    """``[receipts]``: signed delivery receipts (gateway/bus/receipts.py)."""

    issue: bool = True
    """Sign and publish a receipt for every event this gateway finishes."""
    unacknowledged_after_seconds: float = 3600.0
    """An own event without a receipt from every expected recipient this long after publishing counts in
    ``xchg_unacknowledged_events``."""
    sweep_seconds: float = 30.0
    retention_days: int = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceConfig:
    """A ``[[sources]]`` table: ``kind`` names a built-in or adapter source; the rest are its options."""

    kind: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SinkConfig:
    """A ``[[sinks]]`` table: ``kind``, ``types`` (fnmatch patterns of event types routed to it), options."""

    kind: str
    options: Mapping[str, Any]
    types: tuple[str, ...] = ("*",)
    retry: RetryPolicy | None = None
    """The sink's own ``retry`` table laid over ``[retry]`` (None: ``[retry]`` as it is)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    party: str
    base_dir: Path
    """The configuration file's folder; relative paths in adapter options are resolved against it."""
    data_dir: Path
    registry: Path
    """The signed registry: one version's file, or a folder of them (air-gapped sites add files there)."""
    signing_key: Path
    sealing_keys: tuple[Path, ...]
    passphrase_file: Path | None = None
    registry_anchor: Path | None = None
    """The trust anchor (``gateway registry anchor``): the first registry version trusted. Required to run."""
    follow_registry: bool = True
    """Follow ``xchg.registry.v1`` and apply new versions live (``false``: the file source only)."""
    schemas: Path | None = None
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    limits: Limits = field(default_factory=Limits)
    outbox_max_backlog: int = 100_000
    max_event_age_days: int = 3660
    """Events timed longer ago are rejected (``time.out-of-range``; gateway/contract/instants.py)."""
    outbox_retention_days: int = 7
    """Days a sent event stays in the outbox (an id re-published within them is ignored), then deleted."""
    inbox_retention_days: int = 30
    """Delivery outcomes (``(source, id)`` only) are deleted after this many days: the deduplication window,
    which must cover the exchange topics' retention (``gateway deploy render --retention-days``)."""
    batch_size: int = 500
    topic_partitions: int = 4
    topic_replication: int = 1
    ops: OpsConfig = field(default_factory=OpsConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    shutdown_timeout: float = 30.0
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()
    coordination: CoordinationConfig | None = None
    """``[coordination]``: timeline, SOP engine and statistics (gateway/coordination); absent: off."""
    receipts: ReceiptsConfig = field(default_factory=ReceiptsConfig)
    redrive_poll_seconds: float = 1.0
    """``[dlq] redrive_poll_seconds``: how often the gateway looks for re-drive requests (gateway dlq)."""

    @classmethod
    def load(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
        document = load_toml(path)
        return cls.from_mapping(overlay(document, overrides or {}), base_dir=path.parent)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], *, base_dir: Path) -> GatewayConfig:
        return cls.from_table(Table(document, base_dir=base_dir))

    @classmethod
    def from_table(cls, doc: Table) -> GatewayConfig:
        """Every key checked (type, bounds); an unknown key or table is an error naming it."""
        doc.only(*_SECTIONS)
        keys, limits, ops, retry, topics, receipts, dlq = (
            doc.table(n) for n in ("keys", "limits", "ops", "retry", "topics", "receipts", "dlq")
        )
        base_dir = doc.base_dir or Path()
        retry_policy = _retry(retry, RetryPolicy())
        config = cls(
            party=doc.string("party"),
            base_dir=base_dir,
            data_dir=doc.path("data_dir"),
            registry=doc.path("registry"),
            registry_anchor=doc.path("registry_anchor", None),
            follow_registry=doc.boolean("follow_registry", True),
            schemas=doc.path("schemas", None),
            signing_key=keys.path("signing_key"),
            sealing_keys=_sealing_keys(keys),
            passphrase_file=keys.path("passphrase_file", None),
            kafka=KafkaSettings.from_table(doc.table("kafka")),
            limits=Limits(
                max_bytes=limits.integer("max_bytes", 256 * 1024, low=1024, high=16 * 1024 * 1024),
                max_depth=limits.integer("max_depth", 32, low=4, high=256),
            ),
            outbox_max_backlog=limits.integer("outbox_max_backlog", 100_000, low=1, high=10**9),
            max_event_age_days=limits.integer("max_event_age_days", 3660, low=1, high=36_600),
            outbox_retention_days=limits.integer("outbox_retention_days", 7, low=1, high=3660),
            inbox_retention_days=limits.integer("inbox_retention_days", 30, low=1, high=3660),
            batch_size=limits.integer("batch_size", 500, low=1, high=100_000),
            topic_partitions=topics.integer("partitions", 4, low=1, high=1000),
            topic_replication=topics.integer("replication", 1, low=1, high=10),
            ops=OpsConfig(
                host=ops.string("host", "127.0.0.1"),
                port=ops.integer("port", 8080, low=0, high=65535),
                key_expiry_days=ops.integer("key_expiry_days", 14, low=0, high=3650),
                max_outbox_backlog=ops.integer("max_outbox_backlog", 10_000, low=0, high=10**9),
                max_consumer_lag=ops.integer("max_consumer_lag", 10_000, low=0, high=10**9),
                check_timeout=ops.number("check_timeout", 2.0, positive=True),
                task_initial_backoff=ops.number("task_initial_backoff", 0.5, positive=True),
                task_max_backoff=ops.number("task_max_backoff", 30.0, positive=True),
                task_unhealthy_after=ops.integer("task_unhealthy_after", 5, low=1, high=1000),
                task_healthy_after=ops.number("task_healthy_after", 60.0, positive=True),
                status=ops.boolean("status", True),
                status_interval=ops.number("status_interval", 15.0, low=1.0, high=300.0),
                notary_url=ops.string("notary_url", None),
            ),
            retry=retry_policy,
            shutdown_timeout=doc.table("shutdown").number("timeout_seconds", 30.0, positive=True),
            sources=tuple(_source(s) for s in doc.tables("sources")),
            sinks=tuple(_sink(s, retry_policy) for s in doc.tables("sinks")),
            coordination=(
                CoordinationConfig.from_table(doc.table("coordination"), data_dir=doc.path("data_dir"))
                if "coordination" in doc
                else None
            ),
            receipts=ReceiptsConfig(
                issue=receipts.boolean("issue", True),
                unacknowledged_after_seconds=receipts.number(
                    "unacknowledged_after_seconds", 3600.0, positive=True
                ),
                sweep_seconds=receipts.number("sweep_seconds", 30.0, positive=True),
                retention_days=receipts.integer("retention_days", 30, low=1, high=3660),
            ),
            redrive_poll_seconds=dlq.number("redrive_poll_seconds", 1.0, positive=True),
        )
        if config.ops.task_max_backoff < config.ops.task_initial_backoff:
            raise ops.fail("task_max_backoff", "must not be below task_initial_backoff")
        for table in (keys, limits, ops, retry, topics, receipts, dlq):
            table.refuse_unknown()
        return config


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Turn ``XCHG__SECTION__KEY=value`` variables into a nested mapping (called by the CLI)."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        value: Any
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if parts[-1] == "bootstrap_servers" and isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return result


def _sealing_keys(keys: Table) -> tuple[Path, ...]:
    listed = keys.raw("sealing_keys", [])
    if not isinstance(listed, list) or not listed:
        raise keys.fail("sealing_keys", "a list with at least one sealing key file is required")
    return keys.paths("sealing_keys", empty=False)


def _source(table: Table) -> SourceConfig:
    """A ``[[sources]]`` table; its options are checked by the source's factory (:mod:`.plugins`)."""
    return SourceConfig(kind=table.string("kind"), options={k: table.raw(k) for k in table if k != "kind"})


def _retry(table: Table, base: RetryPolicy) -> RetryPolicy:
    """A ``retry`` table (``[retry]``, or a sink's own) laid over ``base``; unknown keys are refused.

    ``attempts`` is still read so that older files load: the subscriber no longer gives up after a number of
    attempts but after ``horizon_hours`` (gateway/bus/breaker.py)."""
    try:
        policy = RetryPolicy(
            attempts=table.integer("attempts", base.attempts, low=1, high=100),
            base_delay=table.number("base_delay", base.base_delay, positive=True),
            max_delay=table.number("max_delay", base.max_delay, positive=True),
            horizon=table.number("horizon_hours", base.horizon / 3600, positive=True) * 3600,
            breaker_threshold=table.integer("breaker_threshold", base.breaker_threshold, low=1, high=1000),
            max_retry_after=table.number("max_retry_after", base.max_retry_after, low=0),
        )
    except GatewayError as exc:
        raise table.fail("", exc.detail) from exc
    if policy.max_delay < policy.base_delay:
        raise table.fail("max_delay", "must not be below base_delay")
    table.refuse_unknown()
    return policy


def _sink(table: Table, retry: RetryPolicy) -> SinkConfig:
    types = table.strings("types", ("*",), empty=False)
    own = _retry(table.table("retry"), retry) if "retry" in table else None
    options = {k: table.raw(k) for k in table if k not in ("kind", "types", "retry")}
    return SinkConfig(kind=table.string("kind"), options=options, types=types, retry=own)
