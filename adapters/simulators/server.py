"""The server half every agency SIMULATOR shares: a loopback aiohttp app, outages on demand, idempotency keys.

Each simulator speaks its own agency's interface (routes, bodies, languages); what they have in common is
how a test drives them, so that lives here once: ``async with Simulator() as sim:`` starts the app on a free
loopback port (``sim.port``), :meth:`SimulatorServer.fail_next` makes the next requests fail (an agency
system that is down and recovers, to exercise retries), and a repeated ``Idempotency-Key`` is recognised
(answered ``409 Conflict`` by the simulators, which the webhook sink counts as delivered).

A simulator holds what the real system would hold, unsealed personal data included (synthetic, but
realistic), so it refuses to bind to anything but a loopback address.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Final, Self

from aiohttp import web

from gateway.settings import is_loopback

__all__ = ["SimulatorServer"]

_UNAVAILABLE: Final = {"error": "service unavailable (simulated)"}


class SimulatorServer(abc.ABC):
    """Base of the agency simulators: lifecycle, ``fail_next`` and idempotency keys; subclasses add routes."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not is_loopback(host):
            raise ValueError("a simulator holds unsealed personal data: bind it to a loopback address only")
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The port it listens on, once started (a free one unless ``port`` was given)."""
        self.failures_served = 0
        """Requests answered with a simulated failure so far."""
        self._fail_remaining = 0
        self._fail_status = 503
        self._keys: set[str] = set()

    @abc.abstractmethod
    def add_routes(self, app: web.Application) -> None:
        """Register the agency interface's handlers on ``app``."""

    @property
    def origin(self) -> str:
        """``http://<host>:<port>``, without a path; the subclasses' ``url`` adds theirs."""
        if self.port is None:
            raise RuntimeError("simulator not started")
        return f"http://{self._host}:{self.port}"

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` without acting on them."""
        if count < 0:
            raise ValueError("count must not be negative")
        self._fail_remaining = count
        self._fail_status = status

    def _take_failure(self) -> int | None:
        """The status to fail this request with, if :meth:`fail_next` asked for one (counted), else None."""
        if self._fail_remaining <= 0:
            return None
        self._fail_remaining -= 1
        self.failures_served += 1
        return self._fail_status

    def _unavailable(self) -> web.Response | None:
        """:meth:`_take_failure` as a JSON error response, for simulators without a body of their own."""
        status = self._take_failure()
        return None if status is None else web.json_response(_UNAVAILABLE, status=status)

    def _is_repeat(self, key: str) -> bool:
        """Whether ``key`` was accepted before: the request is a redelivery (answer ``409 Conflict``)."""
        return key in self._keys

    def _accept(self, key: str) -> None:
        """Remember ``key`` as accepted (call once the request was acted on)."""
        self._keys.add(key)

    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)  # an access log is only noise
        await runner.setup()
        await web.TCPSite(runner, self._host, self._requested_port).start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
