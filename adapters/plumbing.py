"""Plumbing shared by the adapters: base URL checks and JSON state files.

Posting to agency systems is :class:`gateway.runtime.webhook.WebhookSink` with a ``body`` transform (not
re-implemented here), configured like every HTTP client of the gateway
(:func:`gateway.runtime.webhook.client_options`: token file, private CA, client certificate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from yarl import URL

from gateway.errors import GatewayError, Reason
from gateway.runtime.dropfolder import write_atomically
from gateway.settings import is_loopback

__all__ = [
    "check_base_url",
    "write_json_atomically",
]

_log = structlog.get_logger(__name__)


def write_json_atomically(target: Path, document: Mapping[str, Any]) -> None:
    """A state file as indented JSON, written with :func:`gateway.runtime.dropfolder.write_atomically`."""
    write_atomically(target, json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def check_base_url(url: str, where: str) -> URL:
    """An absolute http(s) URL. Plain http to a non-loopback host is allowed (as for the webhook sink: some
    agencies terminate TLS on a proxy next to the gateway) but warned about: the bodies are personal data."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise GatewayError(Reason.CONFIG_INVALID, f"{where}: must be an absolute http(s) URL")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        _log.warning("agency_api.plaintext_http", where=where)
    return parsed
