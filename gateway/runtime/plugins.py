"""Sources and sinks by name: how configuration (``[[sources]] kind = "..."``) finds the code to run.

Built-in kinds are ``file-drop`` (source) and ``webhook`` (sink). Agency adapters register more through
Python entry points (groups ``xchg_gateway.sources`` and ``xchg_gateway.sinks`` in ``pyproject.toml``), so the
gateway core never imports agency code and a new agency's adapter is installed, not patched in. A factory
receives the table's options and a :class:`PluginContext`, validates the options (``config.invalid`` naming
the key on error) and returns a :class:`~gateway.runtime.sources.Source` or
:class:`~gateway.bus.delivery.Sink`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

from gateway.bus.delivery import Sink, WebhookSink
from gateway.bus.metrics import GatewayMetrics
from gateway.errors import GatewayError, Reason
from gateway.runtime.sources import FileDropSource, Source

__all__ = [
    "SINK_GROUP",
    "SOURCE_GROUP",
    "PluginContext",
    "SinkFactory",
    "SourceFactory",
    "build_sink",
    "build_source",
    "option",
]

SOURCE_GROUP: Final = "xchg_gateway.sources"
SINK_GROUP: Final = "xchg_gateway.sinks"


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginContext:
    """What a source or sink may need from the gateway that runs it."""

    party: str
    base_dir: Path
    """The configuration file's folder: relative paths in options are resolved against it."""
    data_dir: Path
    """The gateway's state folder (cursors and other durable adapter state go in a sub-folder)."""
    metrics: GatewayMetrics
    where: str = "sources[0]"

    def path(self, value: object, name: str) -> Path:
        if not isinstance(value, str) or not value:
            raise GatewayError(Reason.CONFIG_INVALID, f"{self.where}.{name}: a path is required")
        candidate = Path(value)
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    def quarantined(self, source: str, reason: str) -> None:
        self.metrics.quarantined.labels(source=source, reason=reason).inc()


SourceFactory = Callable[[Mapping[str, Any], PluginContext], Source]
SinkFactory = Callable[[Mapping[str, Any], PluginContext], Sink]


def option(options: Mapping[str, Any], name: str, kind: type, ctx: PluginContext, default: Any = ...) -> Any:
    """Read one option with a type check; a missing required option or a wrong type names the key."""
    if name not in options:
        if default is ...:
            raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.{name}: required")
        return default
    value = options[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.{name}: must be a {kind.__name__}")
    return value


def _file_drop(options: Mapping[str, Any], ctx: PluginContext) -> Source:
    return FileDropSource(
        ctx.path(options.get("directory"), "directory"),
        poll_interval=option(options, "poll_interval", float, ctx, 0.5),
        on_quarantine=ctx.quarantined,
    )


def _webhook(options: Mapping[str, Any], ctx: PluginContext) -> Sink:
    return WebhookSink(
        option(options, "url", str, ctx),
        name=option(options, "name", str, ctx, ctx.where.replace("[", "-").rstrip("]")),
        timeout=option(options, "timeout", float, ctx, 10.0),
    )


_BUILTIN_SOURCES: Final[Mapping[str, SourceFactory]] = {"file-drop": _file_drop}
_BUILTIN_SINKS: Final[Mapping[str, SinkFactory]] = {"webhook": _webhook}


def _factories(group: str, builtins: Mapping[str, Any]) -> dict[str, Any]:
    found = dict(builtins)
    for entry in entry_points(group=group):
        found.setdefault(entry.name, entry)
    return found


def _resolve(group: str, builtins: Mapping[str, Any], kind: str, where: str) -> Any:
    factories = _factories(group, builtins)
    factory = factories.get(kind)
    if factory is None:
        known = ", ".join(sorted(factories))
        raise GatewayError(Reason.CONFIG_INVALID, f"{where}.kind: {kind!r} is not a known kind ({known})")
    return factory.load() if hasattr(factory, "load") else factory


def build_source(kind: str, options: Mapping[str, Any], ctx: PluginContext) -> Source:
    factory: SourceFactory = _resolve(SOURCE_GROUP, _BUILTIN_SOURCES, kind, ctx.where)
    return factory(options, ctx)


def build_sink(kind: str, options: Mapping[str, Any], ctx: PluginContext) -> Sink:
    factory: SinkFactory = _resolve(SINK_GROUP, _BUILTIN_SINKS, kind, ctx.where)
    return factory(options, ctx)
