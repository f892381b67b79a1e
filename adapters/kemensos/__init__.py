"""Kemensos adapter: the Ministry of Social Affairs' RPTC shelters and Pos Pemulangan return posts.

Two plug-ins, declared as entry points in ``pyproject.toml`` and documented in ``docs/adapters/kemensos.md``:

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

from functools import partial
from typing import Final

from adapters.fieldmap import suppress_count
from adapters.kemensos.mapping import MAPPING_FILE, KemensosMapping, RowMapper
from adapters.kemensos.sink import native_record, to_native
from adapters.kemensos.source import CsvDropSource, csv_event_id, write_drop
from gateway.bus.delivery import Sink
from gateway.runtime.intake import BOUND_OPTIONS, IntakeBounds
from gateway.runtime.plugins import PluginContext
from gateway.runtime.sources import Source
from gateway.runtime.webhook import WebhookSink, client_options, formulas_option
from gateway.settings import Table

__all__ = [
    "MAPPING_FILE",
    "SINK_KIND",
    "SOURCE_KIND",
    "CsvDropSource",
    "KemensosMapping",
    "RowMapper",
    "case_system_sink",
    "csv_event_id",
    "csv_source",
    "native_record",
    "suppress_count",
    "to_native",
    "write_drop",
]

SOURCE_KIND: Final = "kemensos-csv"
SINK_KIND: Final = "kemensos-case-system"
_SOURCE_OPTIONS: Final = frozenset({"directory", "poll_interval", "mapping", "name", *BOUND_OPTIONS})
_SINK_OPTIONS: Final = frozenset(
    {"url", "timeout", "mapping", "name", "token_file", "ca_file", "cert_file", "key_file", "formulas"}
)


def _mapping(options: Table) -> KemensosMapping:
    return KemensosMapping.load(options.path("mapping", MAPPING_FILE))


def csv_source(options: Table, ctx: PluginContext) -> Source:
    """Factory of the ``kemensos-csv`` source (see the module docstring for the options)."""
    options.only(*_SOURCE_OPTIONS)
    return CsvDropSource(
        options.path("directory"),
        _mapping(options),
        name=options.string("name", SOURCE_KIND),
        poll_interval=options.number("poll_interval", 1.0, positive=True),
        on_quarantine=ctx.quarantined,
        bounds=IntakeBounds.from_options(options),
    )


def case_system_sink(options: Table, ctx: PluginContext) -> Sink:
    """Factory of the ``kemensos-case-system`` sink: a :class:`WebhookSink` with the Kemensos body; the
    case system's token, CA and client certificate as for every HTTP client (``token_file``, ``ca_file``,
    ``cert_file``/``key_file``)."""
    options.only(*_SINK_OPTIONS)
    mapping = _mapping(options)
    client = client_options(options)
    return WebhookSink(
        options.string("url"),
        name=options.string("name", SINK_KIND),
        timeout=options.number("timeout", 10.0, positive=True),
        headers=client.headers,
        ssl=client.ssl,
        body=partial(to_native, mapping=mapping),
        formulas=formulas_option(options),
    )
