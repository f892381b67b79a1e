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
from gateway.errors import GatewayError, Reason
from gateway.settings import load_toml

__all__ = ["ENV_PREFIX", "GatewayConfig", "OpsConfig", "SinkConfig", "SourceConfig", "env_overrides"]

ENV_PREFIX: Final = "XCHG__"
_SECTIONS: Final = frozenset(
    {"party", "data_dir", "registry", "schemas", "keys", "kafka", "limits", "ops", "retry", "shutdown",
     "sources", "sinks", "topics"}
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    key_expiry_days: int = 14
    max_outbox_backlog: int = 10_000
    max_consumer_lag: int = 10_000
    check_timeout: float = 2.0


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


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    party: str
    base_dir: Path
    """The configuration file's folder; relative paths in adapter options are resolved against it."""
    data_dir: Path
    registry: Path
    signing_key: Path
    sealing_keys: tuple[Path, ...]
    passphrase_file: Path | None = None
    schemas: Path | None = None
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    limits: Limits = field(default_factory=Limits)
    outbox_max_backlog: int = 100_000
    batch_size: int = 500
    topic_partitions: int = 4
    topic_replication: int = 1
    ops: OpsConfig = field(default_factory=OpsConfig)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    shutdown_timeout: float = 30.0
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()

    @classmethod
    def load(cls, path: Path, overrides: Mapping[str, Any] | None = None) -> GatewayConfig:
        document = load_toml(path)
        return cls.from_mapping(_merge(document, overrides or {}), base_dir=path.parent)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any], *, base_dir: Path) -> GatewayConfig:
        unknown = set(document) - _SECTIONS
        if unknown:
            raise _fail(sorted(unknown)[0], "unknown setting")
        keys = _table(document, "keys")
        limits = _table(document, "limits")
        ops = _table(document, "ops")
        retry = _table(document, "retry")
        topics = _table(document, "topics")

        def path(value: object, name: str) -> Path:
            if not isinstance(value, str) or not value:
                raise _fail(name, "a path is required")
            candidate = Path(value)
            return candidate if candidate.is_absolute() else base_dir / candidate

        sealing = keys.get("sealing_keys", [])
        if not isinstance(sealing, list) or not sealing:
            raise _fail("keys.sealing_keys", "a list with at least one sealing key file is required")
        try:
            kafka = KafkaSettings.from_mapping(_table(document, "kafka"), base_dir=base_dir)
            retry_policy = RetryPolicy(
                attempts=_int(retry, "attempts", 5, 1, 100, "retry"),
                base_delay=_float(retry, "base_delay", 0.2, "retry"),
                max_delay=_float(retry, "max_delay", 10.0, "retry"),
            )
        except ValueError as exc:
            raise _fail("retry", str(exc)) from exc
        return cls(
            party=_str(document, "party"),
            base_dir=base_dir,
            data_dir=path(document.get("data_dir"), "data_dir"),
            registry=path(document.get("registry"), "registry"),
            schemas=path(document["schemas"], "schemas") if "schemas" in document else None,
            signing_key=path(keys.get("signing_key"), "keys.signing_key"),
            sealing_keys=tuple(path(p, "keys.sealing_keys") for p in sealing),
            passphrase_file=path(keys["passphrase_file"], "keys.passphrase_file")
            if "passphrase_file" in keys
            else None,
            kafka=kafka,
            limits=Limits(
                max_bytes=_int(limits, "max_bytes", 256 * 1024, 1024, 16 * 1024 * 1024, "limits"),
                max_depth=_int(limits, "max_depth", 32, 4, 256, "limits"),
            ),
            outbox_max_backlog=_int(limits, "outbox_max_backlog", 100_000, 1, 10**9, "limits"),
            batch_size=_int(limits, "batch_size", 500, 1, 100_000, "limits"),
            topic_partitions=_int(topics, "partitions", 4, 1, 1000, "topics"),
            topic_replication=_int(topics, "replication", 1, 1, 10, "topics"),
            ops=OpsConfig(
                host=str(ops.get("host", "127.0.0.1")),
                port=_int(ops, "port", 8080, 0, 65535, "ops"),
                key_expiry_days=_int(ops, "key_expiry_days", 14, 0, 3650, "ops"),
                max_outbox_backlog=_int(ops, "max_outbox_backlog", 10_000, 0, 10**9, "ops"),
                max_consumer_lag=_int(ops, "max_consumer_lag", 10_000, 0, 10**9, "ops"),
                check_timeout=_float(ops, "check_timeout", 2.0, "ops"),
            ),
            retry=retry_policy,
            shutdown_timeout=_float(_table(document, "shutdown"), "timeout_seconds", 30.0, "shutdown"),
            sources=tuple(_source(s, i) for i, s in enumerate(_list(document, "sources"))),
            sinks=tuple(_sink(s, i) for i, s in enumerate(_list(document, "sinks"))),
        )


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


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _source(raw: object, index: int) -> SourceConfig:
    where = f"sources[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be a table")
    options = {k: v for k, v in raw.items() if k != "kind"}
    return SourceConfig(kind=_str(raw, "kind", where), options=options)


def _sink(raw: object, index: int) -> SinkConfig:
    where = f"sinks[{index}]"
    if not isinstance(raw, Mapping):
        raise _fail(where, "must be a table")
    types = raw.get("types", ["*"])
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise _fail(f"{where}.types", "must be a non-empty list of event type patterns")
    options = {k: v for k, v in raw.items() if k not in ("kind", "types")}
    return SinkConfig(kind=_str(raw, "kind", where), options=options, types=tuple(types))


def _fail(name: str, message: str) -> GatewayError:
    return GatewayError(Reason.CONFIG_INVALID, f"{name}: {message}")


def _table(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, Mapping):
        raise _fail(name, "must be a table")
    return value


def _list(document: Mapping[str, Any], name: str) -> list[Any]:
    value = document.get(name, [])
    if not isinstance(value, list):
        raise _fail(name, "must be an array of tables ([[...]])")
    return value


def _str(table: Mapping[str, Any], name: str, where: str = "") -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}.{name}" if where else name, "a non-empty string is required")
    return value


def _int(table: Mapping[str, Any], name: str, default: int, low: int, high: int, where: str) -> int:  # noqa: PLR0917 - reads like the bounds table it checks
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(f"{where}.{name}", f"must be an integer in {low}..{high}, got {value!r}")
    return value


def _float(table: Mapping[str, Any], name: str, default: float, where: str) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(f"{where}.{name}", f"must be a positive number, got {value!r}")
    return float(value)
