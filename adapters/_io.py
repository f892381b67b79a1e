"""Plumbing shared by the adapters: option checks, agency HTTP client settings, JSON state files.

Posting to agency systems is :class:`gateway.bus.delivery.WebhookSink` with a ``body`` transform (not
re-implemented here); what the adapters add is how they are configured: a token kept in a file, a private CA,
a base URL.
"""

from __future__ import annotations

import json
import ssl as _ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from yarl import URL

from gateway.bus.delivery import is_loopback
from gateway.errors import GatewayError, Reason
from gateway.runtime.plugins import PluginContext, option
from gateway.runtime.sources import write_atomically

__all__ = [
    "check_base_url",
    "client_options",
    "read_secret_file",
    "refuse_unknown_options",
    "write_json_atomically",
]

_log = structlog.get_logger(__name__)


def write_json_atomically(target: Path, document: Mapping[str, Any]) -> None:
    """A state file as indented JSON, written with :func:`gateway.runtime.sources.write_atomically`."""
    write_atomically(target, json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def read_secret_file(path: Path, what: str) -> str:
    """A token or password from a file (not from the configuration, which is copied around)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise GatewayError(Reason.CONFIG_INVALID, f"cannot read {what} file {path}: {exc.strerror}") from exc
    if not text:
        raise GatewayError(Reason.CONFIG_INVALID, f"{what} file {path} is empty")
    return text


def check_base_url(url: str, where: str) -> URL:
    """An absolute http(s) URL. Plain http to a non-loopback host is allowed (as for the webhook sink: some
    agencies terminate TLS on a proxy next to the gateway) but warned about: the bodies are personal data."""
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise GatewayError(Reason.CONFIG_INVALID, f"{where}: must be an absolute http(s) URL")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        _log.warning("agency_api.plaintext_http", where=where)
    return parsed


def refuse_unknown_options(options: Mapping[str, Any], allowed: frozenset[str], ctx: PluginContext) -> None:
    """A misspelt option (``maping``, ``poll_intervall``) must not silently fall back to a default."""
    for name in sorted(set(options) - allowed):
        raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.{name}: unknown option")


def client_options(
    options: Mapping[str, Any], ctx: PluginContext
) -> tuple[dict[str, str], _ssl.SSLContext | None]:
    """HTTP client settings shared by the agency API adapters: ``token_file`` (a bearer token, kept out of
    the configuration file, which gets copied around) and ``ca_file`` (the agency's private CA)."""
    headers: dict[str, str] = {}
    token_file = option(options, "token_file", str, ctx, None)
    if token_file is not None:
        headers["Authorization"] = f"Bearer {read_secret_file(ctx.path(token_file, 'token_file'), 'token')}"
    ca_file = option(options, "ca_file", str, ctx, None)
    context = None
    if ca_file is not None:
        path = ctx.path(ca_file, "ca_file")
        try:
            context = _ssl.create_default_context(cafile=str(path))
        except (OSError, _ssl.SSLError) as exc:
            raise GatewayError(Reason.CONFIG_INVALID, f"{ctx.where}.ca_file: cannot load {path}") from exc
    return headers, context
