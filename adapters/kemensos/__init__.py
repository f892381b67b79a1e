"""Kemensos adapter: the Ministry of Social Affairs' RPTC shelters and Pos Pemulangan return posts.

Two plug-ins, declared as entry points in ``pyproject.toml`` and documented in ``docs/ADAPTERS.md#kemensos``:

* source ``kemensos-csv`` (:func:`csv_source`): CSV exports dropped into a folder (admissions, discharges,
  bed capacity, group arrivals, onward referrals) become signed, sealed exchange events.
  Options: ``directory`` (required), ``poll_interval`` (seconds, default 1.0), ``mapping`` (path to a
  mapping file replacing ``adapters/kemensos/mapping.toml``), ``name``.
* sink ``kemensos-case-system`` (:func:`case_system_sink`): referrals, repatriation plans and anything else
  routed to Kemensos are POSTed to its case system in its own Indonesian field names, with the webhook
  sink's ``Idempotency-Key: <source>/<id>`` and retry rules. Options: ``url`` (required), ``timeout``
  (seconds, default 10.0), ``mapping``, ``name``.

Why the tables are in a data file (``mapping.toml``) and the code only applies them: the column names and
code lists are what changes when Kemensos changes an export, and the people who know them review TOML, not
Python. Every factory checks its options and the mapping file up front, so a mistake stops the gateway at
start-up with ``config.invalid`` naming the key, instead of quarantining every row later.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Final

from adapters._io import refuse_unknown_options
from adapters.kemensos.inbound import CsvDropSource, RowMapper, csv_event_id, suppress_count, write_drop
from adapters.kemensos.mapping import DEFAULT_MAPPING, KemensosMapping, load_mapping
from adapters.kemensos.outbound import native_record, to_native
from gateway.bus.delivery import Sink, WebhookSink
from gateway.errors import GatewayError, Reason
from gateway.runtime.plugins import PluginContext, option
from gateway.runtime.sources import Source

__all__ = [
    "DEFAULT_MAPPING",
    "SINK_KIND",
    "SOURCE_KIND",
    "CsvDropSource",
    "KemensosMapping",
    "RowMapper",
    "case_system_sink",
    "csv_event_id",
    "csv_source",
    "load_mapping",
    "native_record",
    "suppress_count",
    "to_native",
    "write_drop",
]

SOURCE_KIND: Final = "kemensos-csv"
SINK_KIND: Final = "kemensos-case-system"
_SOURCE_OPTIONS: Final = frozenset({"directory", "poll_interval", "mapping", "name"})
_SINK_OPTIONS: Final = frozenset({"url", "timeout", "mapping", "name"})


def _mapping(options: Mapping[str, Any], ctx: PluginContext) -> KemensosMapping:
    if "mapping" not in options:
        return load_mapping()
    return load_mapping(ctx.path(options["mapping"], "mapping"))


def csv_source(options: Mapping[str, Any], ctx: PluginContext) -> Source:
    """Factory of the ``kemensos-csv`` source (see the module docstring for the options)."""
    refuse_unknown_options(options, _SOURCE_OPTIONS, ctx)
    directory = ctx.path(options.get("directory"), "directory")
    poll_interval = option(options, "poll_interval", float, ctx, 1.0)
    if poll_interval <= 0:
        raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.poll_interval: must be positive")
    return CsvDropSource(
        directory,
        _mapping(options, ctx),
        name=option(options, "name", str, ctx, SOURCE_KIND),
        poll_interval=poll_interval,
        on_quarantine=ctx.quarantined,
    )


def case_system_sink(options: Mapping[str, Any], ctx: PluginContext) -> Sink:
    """Factory of the ``kemensos-case-system`` sink: a :class:`WebhookSink` with the Kemensos body."""
    refuse_unknown_options(options, _SINK_OPTIONS, ctx)
    mapping = _mapping(options, ctx)
    timeout = option(options, "timeout", float, ctx, 10.0)
    if timeout <= 0:
        raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.timeout: must be positive")
    return WebhookSink(
        option(options, "url", str, ctx),
        name=option(options, "name", str, ctx, SINK_KIND),
        timeout=timeout,
        body=partial(to_native, mapping=mapping),
    )
