"""Outbound: shelter admissions and case closures from the exchange -> the Kemlu case API.

Each event becomes ``POST <url>/api/v1/cases/<case_id>/updates`` with a body in the embassy system's own field
names (``mapping.toml``, ``[updates."<type>"]``) and ``Idempotency-Key: <source>/<id>``, so the embassy system
files a redelivered event once (it answers ``409`` to a key it has seen, which counts as delivered).

The posting itself is :class:`gateway.sinks.WebhookSink` (headers, redirects refused, 409/408/429/5xx
outcomes, no body or URL in errors), composed per event because the URL names the case; one HTTP session
is shared by all of them.
"""

from __future__ import annotations

import re
import ssl as _ssl
from collections.abc import Mapping
from typing import Final

import aiohttp
from yarl import URL

from adapters._fieldmap import MappingError
from adapters.kemlu._mapping import KemluMapping
from gateway.sinks import WebhookSink
from gateway.verify import Accepted

__all__ = ["KemluUpdatesSink", "update_url"]

_CASE_ID_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9-]{5,63}$")


def update_url(base: URL, accepted: Accepted) -> URL:
    """``<base>/api/v1/cases/<case_id>/updates``; the case id is the event's subject (= partition key)."""
    case_id = accepted.event.subject
    if not _CASE_ID_RE.match(case_id):  # schema-checked already; a path segment is never built from junk
        raise MappingError("case_id", "not an exchange case id")
    return base / "api" / "v1" / "cases" / case_id / "updates"


class KemluUpdatesSink:
    """Posts Kemlu case updates; a mapping error (a type or code without a native equivalent) is raised as
    ``GatewayError`` and dead-lettered without retries, since sending it again cannot help."""

    def __init__(
        self,
        base: URL,
        mapping: KemluMapping,
        *,
        name: str = "kemlu-case-api",
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.base = base
        self.mapping = mapping
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._ssl = ssl
        self._session = session
        self._owns_session = session is None

    async def deliver(self, accepted: Accepted) -> None:
        url = update_url(self.base, accepted)
        webhook = WebhookSink(
            str(url),
            name=self.name,
            timeout=self._timeout,
            headers=self._headers,
            session=self._get_session(),
            ssl=self._ssl,
            body=self.mapping.update_body,
        )
        await webhook.deliver(accepted)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or (self._owns_session and self._session.closed):
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session
