"""IOM adapter: IOM's HTCDS v2.0 case data on the exchange.

Inbound (source ``iom-htcds``) reads IOM exports in the column layout of the HTCDS v2.0 Excel template (CSV
or XLSX, header row of HTCDS field names followed by a few IOM operational columns) and publishes assistance
records (hygiene kits, psychoeducation, ...) and supply alerts (e.g. 2,500 hygiene kits to Pos Pemulangan
Pontianak). Outbound (sink ``iom-htcds``) posts referrals to IOM's case system as HTCDS-shaped JSON. Codes
are translated per ``mapping.toml``; the HTCDS column list is ``htcds_v2_columns.txt``. Configuration::

    [[sources]]
    kind = "iom-htcds"
    directory = "iom-exports"     # inbox/, done/, quarantine/ are created inside (mode 0700)
    poll_interval = 2.0
    sheet = "HTCDS"               # optional: worksheet to read (default: the first one)

    [[sinks]]
    kind = "iom-htcds"
    types = ["id.trafficking.case.referral"]
    url = "https://cases.iom.example/api/v1/referrals"
    token_file = "secrets/iom-token"   # optional bearer token; ca_file = "..." optional private CA

See docs/adapters/iom.md for the file and JSON layouts and docs/adapters/README.md for the mapping file.
"""

from __future__ import annotations

from typing import Final

from adapters.iom.mapping import (
    COLUMNS_FILE,
    EVENT_ID_NAMESPACE,
    MAPPING_FILE,
    ROW_MESSAGES,
    IomMapping,
    htcds_columns,
    row_event_id,
)
from adapters.iom.reader import FileProblem, Sheet, read_sheet
from adapters.iom.sink import referral_sink
from adapters.iom.source import DEFAULT_MAX_FILE_BYTES, FileReport, HtcdsExportSource, RowRejection
from adapters.plumbing import check_base_url
from gateway.runtime.intake import BOUND_OPTIONS, IntakeBounds
from gateway.runtime.plugins import PluginContext
from gateway.runtime.webhook import WebhookSink, client_options, formulas_option
from gateway.settings import Table

__all__ = [
    "COLUMNS_FILE",
    "EVENT_ID_NAMESPACE",
    "MAPPING_FILE",
    "ROW_MESSAGES",
    "FileProblem",
    "FileReport",
    "HtcdsExportSource",
    "IomMapping",
    "RowRejection",
    "Sheet",
    "htcds_columns",
    "htcds_sink",
    "htcds_source",
    "read_sheet",
    "referral_sink",
    "row_event_id",
]


_SOURCE_OPTIONS: Final = frozenset({"directory", "name", "poll_interval", "sheet", "mapping", *BOUND_OPTIONS})
_SINK_OPTIONS: Final = frozenset(
    {"url", "name", "timeout", "token_file", "ca_file", "cert_file", "key_file", "mapping", "formulas"}
)


def _mapping(options: Table) -> IomMapping:
    path = options.path("mapping", None)
    return IomMapping.load(path) if path is not None else IomMapping.load()


def htcds_source(options: Table, ctx: PluginContext) -> HtcdsExportSource:
    """Entry point ``xchg_gateway.sources: iom-htcds``."""
    options.only(*_SOURCE_OPTIONS)
    return HtcdsExportSource(
        options.path("directory"),
        party=ctx.party,
        mapping=_mapping(options),
        name=options.string("name", "iom-htcds"),
        poll_interval=options.number("poll_interval", 2.0),
        sheet=options.string("sheet", None),
        on_quarantine=ctx.quarantined,
        bounds=IntakeBounds.from_options(options, max_file_bytes=DEFAULT_MAX_FILE_BYTES),
    )


def htcds_sink(options: Table, ctx: PluginContext) -> WebhookSink:
    """Entry point ``xchg_gateway.sinks: iom-htcds``."""
    options.only(*_SINK_OPTIONS)
    url = options.string("url")
    check_base_url(url, options.name("url"))
    client = client_options(options)
    return referral_sink(
        url,
        _mapping(options),
        name=options.string("name", "iom-htcds"),
        timeout=options.number("timeout", 10.0),
        headers=client.headers,
        ssl=client.ssl,
        formulas=formulas_option(options),
    )
