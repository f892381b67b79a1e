"""Outbound: referrals from the exchange -> IOM's case system, as HTCDS-shaped JSON.

IOM's case system is built on HTCDS, so a referral is handed over in HTCDS field names (``prs_*``, ``vic_*``,
``cas_*``, ``con_Consent``; ``[referral_out]`` in ``mapping.toml``) rather than in the exchange's nested
shape. The POST itself is :class:`gateway.runtime.webhook.WebhookSink` with a ``body`` transform: same
``Idempotency-Key: <source>/<id>``, same outcomes (409 = already delivered), nothing re-implemented.
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Mapping

from adapters.iom.mapping import IomMapping
from gateway.runtime.webhook import FormulaMode, WebhookSink

__all__ = ["referral_sink"]


def referral_sink(
    url: str,
    mapping: IomMapping,
    *,
    name: str = "iom-htcds",
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    ssl: _ssl.SSLContext | None = None,
    formulas: FormulaMode = "flag",
) -> WebhookSink:
    """A webhook sink posting referrals in HTCDS shape; other event types are dead-lettered (configure the
    sink's ``types`` to referrals)."""
    return WebhookSink(
        url,
        name=name,
        timeout=timeout,
        headers=headers,
        ssl=ssl,
        body=mapping.referral_body,
        formulas=formulas,
    )
