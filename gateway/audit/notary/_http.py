"""The notary's HTTP endpoints (``docs/AUDIT.md`` section 11.5), over a running :class:`~.service.Notary`:

* ``GET /checkpoint`` — the latest signed note with the cosignatures collected so far;
* ``GET /checkpoint/<size>`` — an earlier one (404 if the notary never signed that size);
* ``GET /consistency?from=m&to=n`` — an RFC 6962 consistency proof, one base64 hash per line;
* ``GET /proof/<event id>[?source=<party>]`` — a c2sp.org/tlog-proof@v1 receipt for the first leaf of that
  event (the entry itself in the ``extra`` line), against the latest checkpoint;
* ``POST /cosignature`` — a cosigner returns the checkpoint note with its cosignature line appended; the
  notary verifies it against the configured cosigner keys and attaches it;
* ``GET /healthz`` — liveness plus size, signed size, the supervised tasks, and a refusal or a task that
  keeps failing if any (503);
* ``GET /tile/...`` — the tlog-tiles files, for any tlog-tiles client;
* ``GET /metrics`` — Prometheus gauges for alerting (deploy/prometheus/): ``xchg_notary_log_size``,
  ``xchg_notary_signed_size``, ``xchg_notary_last_signed_timestamp_seconds`` (when it last signed or
  confirmed its checkpoint) and ``xchg_notary_refusing`` (1 while it refuses to sign).

Errors are JSON ``{"reason", "detail"}``; no answer may be cached.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from gateway.audit.note import MAX_NOTE_SIZE
from gateway.errors import GatewayError, Reason

if TYPE_CHECKING:
    from gateway.audit.notary.service import Notary

__all__ = ["notary_app"]

_NO_CACHE: Final = {"Cache-Control": "no-store"}


def _note_response(note: bytes) -> web.Response:
    return web.Response(body=note, content_type="text/plain", charset="utf-8", headers=_NO_CACHE)


def _error(status: int, reason: Reason, detail: str) -> web.Response:
    return web.json_response({"reason": str(reason), "detail": detail}, status=status, headers=_NO_CACHE)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def notary_app(notary: Notary) -> web.Application:
    """The notary's web application (every route above)."""
    endpoints = _Endpoints(notary)
    app = web.Application(client_max_size=MAX_NOTE_SIZE)
    app.router.add_get("/healthz", endpoints.healthz)
    app.router.add_get("/checkpoint", endpoints.get_checkpoint)
    app.router.add_get("/checkpoint/{size:[0-9]+}", endpoints.get_checkpoint_at)
    app.router.add_get("/consistency", endpoints.get_consistency)
    app.router.add_get("/proof/{event_id}", endpoints.get_proof)
    app.router.add_post("/cosignature", endpoints.post_cosignature)
    app.router.add_get("/metrics", endpoints.metrics)
    tiles = notary.config.log_dir / "tile"
    tiles.mkdir(parents=True, exist_ok=True)
    app.router.add_static("/tile", tiles, follow_symlinks=False)
    return app


class _NotaryCollector:
    """The notary's gauges, read from the running notary at each scrape."""

    def __init__(self, notary: Notary) -> None:
        self._notary = notary

    def collect(self) -> list[Metric]:
        notary = self._notary
        gauges = [
            GaugeMetricFamily("xchg_notary_log_size", "Entries in the notary's log.", value=notary.log.size),
            GaugeMetricFamily(
                "xchg_notary_signed_size", "Entries covered by the latest signed checkpoint.",
                value=notary.signed_size,
            ),
            GaugeMetricFamily(
                "xchg_notary_refusing", "1 while the notary refuses to sign (its log does not extend its "
                "last checkpoint).", value=1 if notary.refused is not None else 0,
            ),
        ]  # fmt: skip
        if notary.last_signed_wall is not None:
            gauges.append(
                GaugeMetricFamily(
                    "xchg_notary_last_signed_timestamp_seconds",
                    "Unix time the notary last signed or confirmed its checkpoint.",
                    value=notary.last_signed_wall,
                )
            )
        return list(gauges)


class _Endpoints:
    """The request handlers, over one notary."""

    def __init__(self, notary: Notary) -> None:
        self._notary = notary
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_NotaryCollector(notary))

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._registry),
            headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4, **_NO_CACHE},
        )

    async def healthz(self, request: web.Request) -> web.Response:
        notary = self._notary
        body: dict[str, object] = {
            "status": "refusing" if notary.refused else "alive",
            "origin": notary.origin,
            "size": notary.log.size,
            "signed_size": notary.signed_size,
        }
        if notary.refused is not None:
            body["reason"] = str(notary.refused.reason)
            body["detail"] = notary.refused.detail
        failing = notary.supervisor.liveness()  # a task that keeps failing (gateway/runtime/supervisor.py)
        if failing and notary.refused is None:
            body["status"] = "failing"
        body["tasks"] = [state.as_json() for state in notary.supervisor.states()]
        unhealthy = notary.refused is not None or bool(failing)
        return web.json_response(body, status=503 if unhealthy else 200, headers=_NO_CACHE)

    async def get_checkpoint(self, request: web.Request) -> web.Response:
        return _note_response(self._notary.latest_checkpoint)

    async def get_checkpoint_at(self, request: web.Request) -> web.Response:
        note = await asyncio.to_thread(self._notary.store.get, int(request.match_info["size"]))
        if note is None:
            return _error(404, Reason.PROOF_OUT_OF_RANGE, "no checkpoint of that size")
        return _note_response(note)

    async def get_consistency(self, request: web.Request) -> web.Response:
        try:
            old, new = int(request.query["from"]), int(request.query["to"])
        except (KeyError, ValueError):
            return _error(400, Reason.PROOF_MALFORMED, "give from=<size>&to=<size> as decimal integers")
        try:
            proof = await asyncio.to_thread(self._notary.log.consistency_proof, old, new)
        except GatewayError as exc:
            return _error(400, exc.reason, exc.detail)
        return web.Response(text="".join(_b64(h) + "\n" for h in proof), headers=_NO_CACHE)

    async def get_proof(self, request: web.Request) -> web.Response:
        event_id, source = request.match_info["event_id"], request.query.get("source")
        receipt = await self._notary.receipt(event_id, source)
        if receipt is None:
            return _error(404, Reason.PROOF_OUT_OF_RANGE, "no such event in a signed checkpoint (yet)")
        return _note_response(receipt)

    async def post_cosignature(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            updated = await self._notary.attach_cosignatures(body)
        except GatewayError as exc:
            status = 409 if exc.reason == Reason.COSIGN_FORK else 403
            return _error(status, exc.reason, exc.detail)
        return _note_response(updated)
