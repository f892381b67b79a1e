"""Outbound: shelter admissions and case closures from the exchange -> the Kemlu case API.

Each event becomes ``POST <url>/api/v1/cases/<case_id>/updates`` with a body in the embassy system's own field
names (``mapping.toml``, ``[updates."<type>"]``) and ``Idempotency-Key: <source>/<id>``, so the embassy system
files a redelivered event once (it answers ``409`` to a key it has seen, which counts as delivered).

The sink (``adapters.kemlu.case_api_sink``) is :class:`gateway.runtime.webhook.WebhookSink` configured with
:func:`update_url` as its per-event URL (the URL names the case) and the mapping's ``update_body`` as its
``body`` transform: its session, headers, redirect refusal, 409/408/429/5xx outcomes, URL checks and "no
body or URL in errors" rule, nothing re-implemented here. A mapping error (a malformed case id, a type or
code without a native equivalent) is raised as ``GatewayError`` and dead-lettered without retries, since
sending it again cannot help.
"""

from __future__ import annotations

import re
from typing import Final

from yarl import URL

from adapters.fieldmap import MappingError
from gateway.contract.verify import Accepted

__all__ = ["update_url"]

_CASE_ID_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9-]{5,63}$")


def update_url(base: URL, accepted: Accepted) -> URL:
    """``<base>/api/v1/cases/<case_id>/updates``; the case id is the event's subject (= partition key), an
    agency case reference, never a person's data; it is checked, and not repeated in the error."""
    case_id = accepted.event.subject
    if not _CASE_ID_RE.match(case_id):  # schema-checked already; a path segment is never built from junk
        raise MappingError("case_id", "not an exchange case id")
    return base / "api" / "v1" / "cases" / case_id / "updates"
