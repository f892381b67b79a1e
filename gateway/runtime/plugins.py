"""Sources and sinks by name: how configuration (``[[sources]] kind = "..."``) finds the code to run.

Built-in kinds are ``file-drop`` and ``http`` (sources: :mod:`.dropfolder`, :mod:`.http_intake`), ``webhook``
and ``file`` (sinks: :mod:`.webhook`, :mod:`.filesink`). Agency adapters register more through
Python entry points (groups ``xchg_gateway.sources`` and ``xchg_gateway.sinks`` in ``pyproject.toml``), so the
gateway core never imports agency code and a new agency's adapter is installed, not patched in. A factory
receives the table's options as a :class:`gateway.settings.Table` (typed readers; every error names the key,
``sinks[1].url: ...``) and a :class:`PluginContext`, and returns a :class:`~gateway.runtime.sources.Source` or
:class:`~gateway.bus.delivery.Sink`. An option the factory never read is refused afterwards
(``sinks[1].headers: unknown setting``): a misspelt or unsupported option never silently falls back to a
default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final

from gateway.bus.delivery import Sink
from gateway.bus.metrics import GatewayMetrics
from gateway.errors import GatewayError, Reason
from gateway.runtime.filesink import FileSink
from gateway.runtime.http_intake import http_intake_source
from gateway.runtime.intake import BOUND_OPTIONS, IntakeBounds
from gateway.runtime.jsonlines import FileDropSource
from gateway.runtime.sources import Source
from gateway.runtime.webhook import WebhookSink, client_options, formulas_option
from gateway.settings import Table

__all__ = [
    "SINK_GROUP",
    "SOURCE_GROUP",
    "PluginContext",
    "SinkFactory",
    "SourceFactory",
    "build_sink",
    "build_source",
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

    def quarantined(self, source: str, reason: str) -> None:
        self.metrics.quarantined.labels(source=source, reason=reason).inc()


SourceFactory = Callable[[Table, PluginContext], Source]
SinkFactory = Callable[[Table, PluginContext], Sink]


def _file_drop(options: Table, ctx: PluginContext) -> Source:
    options.only("directory", "poll_interval", "name", *BOUND_OPTIONS)
    return FileDropSource(
        options.path("directory"),
        name=options.string("name", "file-drop"),
        poll_interval=options.number("poll_interval", 0.5, positive=True),
        on_quarantine=ctx.quarantined,
        bounds=IntakeBounds.from_options(options),
    )


def _webhook(options: Table, ctx: PluginContext) -> Sink:
    client = client_options(options)
    return WebhookSink(
        options.string("url"),
        name=options.string("name", ctx.where.replace("[", "-").rstrip("]")),
        timeout=options.number("timeout", 10.0, positive=True),
        headers=client.headers,
        ssl=client.ssl,
        formulas=formulas_option(options),
    )


def _http(options: Table, ctx: PluginContext) -> Source:
    return http_intake_source(options, party=ctx.party)


def _file(options: Table, ctx: PluginContext) -> Sink:
    return FileSink(
        options.path("directory"),
        name=options.string("name", ctx.where.replace("[", "-").rstrip("]")),
        formulas=formulas_option(options),
    )


_BUILTIN_SOURCES: Final[Mapping[str, SourceFactory]] = {"file-drop": _file_drop, "http": _http}
_BUILTIN_SINKS: Final[Mapping[str, SinkFactory]] = {"webhook": _webhook, "file": _file}


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
    table = _options(options, ctx, "kind")
    source = factory(table, ctx)
    table.refuse_unknown()
    return source


def build_sink(kind: str, options: Mapping[str, Any], ctx: PluginContext) -> Sink:
    factory: SinkFactory = _resolve(SINK_GROUP, _BUILTIN_SINKS, kind, ctx.where)
    table = _options(options, ctx, "kind", "types")
    sink = factory(table, ctx)
    table.refuse_unknown()
    return sink


def _options(options: Mapping[str, Any], ctx: PluginContext, *loaded: str) -> Table:
    table = Table(options, where=ctx.where, base_dir=ctx.base_dir)
    table.mark_used(*loaded)  # read by the configuration loader
    return table
