"""Kemlu / KBRI adapter: the embassies' citizen-protection case API on the exchange.

Each embassy (``kemlu.kbri-kuching``, ``kemlu.kbri-kuala-lumpur``) is its own party with its own keys and runs
its own gateway; this adapter is the same code for all of them and only reads its gateway's party and the
``mission`` option. Inbound (source ``kemlu-case-api``) polls the case API and publishes trafficking (TPPO)
cases as referrals, repatriation plans and network alerts; outbound (sink ``kemlu-case-api``) posts shelter
admissions and case closures back to the case API. Field names and codes are translated per
``mapping.toml``. Configuration (``gateway.toml``)::

    [[sources]]
    kind = "kemlu-case-api"
    url = "https://pwni.kemlu.example/"     # base URL of the case API
    mission = "kuching"                     # default: derived from the party (kemlu.kbri-<mission>)
    poll_interval = 30.0                    # seconds between polls when all is well
    page_size = 100
    timeout = 10.0
    since = "2020-01-01T00:00:00+07:00"     # where a fresh gateway starts (default: the beginning)
    backoff_base = 1.0                      # first retry delay after an API failure (doubles, jittered)
    backoff_max = 60.0                      # cap of the retry delay
    token_file = "secrets/kemlu-token"      # optional bearer token; ca_file = "..." optional private CA

    [[sinks]]
    kind = "kemlu-case-api"
    types = ["id.trafficking.case.shelter-admission", "id.trafficking.case.closure"]
    url = "https://pwni.kemlu.example/"

See docs/adapters/kemlu.md for the API layouts and docs/adapters/README.md for the mapping file.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Final

from adapters.kemlu.mapping import (
    EVENT_ID_NAMESPACE,
    MAPPING_FILE,
    KemluMapping,
    MessageProblem,
    PlannedMessage,
    case_event_id,
)
from adapters.kemlu.sink import update_url
from adapters.kemlu.source import Cursor, KemluCaseApiSource, PollResult, parse_instant
from adapters.plumbing import check_base_url
from gateway.bus.delivery import RetryPolicy
from gateway.errors import GatewayError, Reason
from gateway.runtime.plugins import PluginContext
from gateway.runtime.webhook import WebhookSink, client_options, formulas_option
from gateway.settings import Table

__all__ = [
    "EVENT_ID_NAMESPACE",
    "MAPPING_FILE",
    "Cursor",
    "KemluCaseApiSource",
    "KemluMapping",
    "MessageProblem",
    "PlannedMessage",
    "PollResult",
    "case_api_sink",
    "case_api_source",
    "case_event_id",
    "mission_of",
    "parse_instant",
    "update_url",
]

_MISSION_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HTTP_OPTIONS: Final = frozenset(
    {"url", "name", "timeout", "token_file", "ca_file", "cert_file", "key_file", "mapping"}
)
_SOURCE_OPTIONS: Final = _HTTP_OPTIONS | {
    "max_clock_skew",
    "mission",
    "poll_interval",
    "page_size",
    "since",
    "backoff_base",
    "backoff_max",
}


def mission_of(party: str) -> str | None:
    """``kemlu.kbri-kuching`` -> ``kuching``: the mission an embassy party's gateway serves by default."""
    prefix = "kemlu.kbri-"
    return party[len(prefix) :] if party.startswith(prefix) and len(party) > len(prefix) else None


def _mapping(options: Table) -> KemluMapping:
    return KemluMapping.load(options.path("mapping", MAPPING_FILE))


def case_api_source(options: Table, ctx: PluginContext) -> KemluCaseApiSource:
    """Entry point ``xchg_gateway.sources: kemlu-case-api``."""
    options.only(*_SOURCE_OPTIONS)
    mission = options.string("mission", None) or mission_of(ctx.party)
    if mission is None or not _MISSION_RE.match(mission):
        raise GatewayError(
            Reason.CONFIG_INVALID,
            f"{ctx.where}.mission: required (lower-case, e.g. 'kuching') "
            "unless the party is kemlu.kbri-<mission>",
        )
    name = options.string("name", f"kemlu-case-api-{mission}")
    if not _NAME_RE.match(name):
        raise GatewayError(
            Reason.CONFIG_INVALID, f"{ctx.where}.name: lower-case letters, digits and '-' only"
        )
    client = client_options(options)
    try:
        backoff = RetryPolicy(
            attempts=1,
            base_delay=options.number("backoff_base", 1.0),
            max_delay=options.number("backoff_max", 60.0),
            jitter=0.2,
        )
    except GatewayError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.backoff_*: {exc.detail}") from exc
    return KemluCaseApiSource(
        base_url=check_base_url(options.string("url"), options.name("url")),
        mission=mission,
        party=ctx.party,
        state_dir=ctx.data_dir,
        mapping=_mapping(options),
        name=name,
        poll_interval=options.number("poll_interval", 30.0),
        page_size=options.integer("page_size", 100),
        timeout=options.number("timeout", 10.0),
        since=options.string("since", "1970-01-01T00:00:00Z"),
        max_clock_skew=options.number("max_clock_skew", 300.0, low=0.0, high=86_400.0),
        backoff=backoff,
        headers=dict(client.headers),
        ssl=client.ssl,
        on_quarantine=ctx.quarantined,
    )


def case_api_sink(options: Table, ctx: PluginContext) -> WebhookSink:
    """Entry point ``xchg_gateway.sinks: kemlu-case-api``: the gateway's webhook sink posting to the update
    endpoint of each event's case (:func:`update_url`), in the embassy system's field names."""
    options.only(*_HTTP_OPTIONS, "formulas")
    client = client_options(options)
    base = check_base_url(options.string("url"), options.name("url"))
    return WebhookSink(
        partial(update_url, base),
        name=options.string("name", "kemlu-case-api"),
        timeout=options.number("timeout", 10.0),
        headers=client.headers,
        ssl=client.ssl,
        body=_mapping(options).update_body,
        formulas=formulas_option(options),
    )
