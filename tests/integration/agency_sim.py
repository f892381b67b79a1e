"""A SIMULATOR of an agency's case-management system: the endpoint a gateway's generic webhook sink POSTs to.

Not an agency system and not a mock of the gateway: a small aiohttp server on a loopback port (lifecycle,
``fail_next`` and idempotency keys from :class:`adapters.simulators.server.SimulatorServer`) that records
every POST it acts on (``Idempotency-Key``, ``X-Xchg-Event-Id``, arrival order) and answers the way an
idempotent agency API does: ``200`` the first time it sees a key, ``409 Conflict`` for a repeat (which
:class:`gateway.runtime.webhook.WebhookSink` counts as delivered). Tests read :attr:`AgencySimulator.posts` to
tell a lost event from a repeated one and to check that every repeat carried the key of the first delivery.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from adapters.simulators.server import SimulatorServer

__all__ = ["AgencySimulator", "Post"]


@dataclass(frozen=True, slots=True)
class Post:
    """One POST as the simulator received it."""

    idempotency_key: str
    event_id: str
    body_event_id: str
    source: str
    type: str


class AgencySimulator(SimulatorServer):
    """``async with AgencySimulator() as sim:`` serves ``sim.url`` (``http://127.0.0.1:<port>/events``).

    Requests answered with a simulated failure (:meth:`fail_next`) are not recorded: the agency system did
    not act on them.
    """

    path = "/events"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.posts: list[Post] = []

    @property
    def url(self) -> str:
        return f"{self.origin}{self.path}"

    def counts(self) -> Counter[str]:
        """POSTs per event id (a value above 1 is a repeated delivery)."""
        return Counter(post.event_id for post in self.posts)

    def received(self) -> set[str]:
        """Distinct event ids received."""
        return {post.event_id for post in self.posts}

    def keys_of(self, event_id: str) -> list[str]:
        """The ``Idempotency-Key`` of every POST of ``event_id``, in arrival order."""
        return [post.idempotency_key for post in self.posts if post.event_id == event_id]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        unavailable = self._unavailable()
        if unavailable is not None:
            return unavailable
        try:
            summary = json.loads(await request.read())["event"]
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="not an exchange webhook body")
        key = request.headers.get("Idempotency-Key", "")
        self.posts.append(
            Post(
                idempotency_key=key,
                event_id=request.headers.get("X-Xchg-Event-Id", ""),
                body_event_id=str(summary.get("id", "")),
                source=str(summary.get("source", "")),
                type=str(summary.get("type", "")),
            )
        )
        if self._is_repeat(key):
            return web.Response(status=409)
        self._accept(key)
        return web.Response(status=200)
