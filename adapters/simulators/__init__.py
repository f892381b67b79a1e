"""SIMULATORS of agency systems, for tests and the demo. Not agency code, and not used in production.

The agencies' own case systems are not public, so each adapter's counterpart is simulated here: a small
server speaking the native interface the adapter is built against (e.g.
:class:`adapters.simulators.kemensos.KemensosCaseSystemSimulator`), plus helpers that write the synthetic
native files an agency would export. All data they produce is invented ("Siti Contoh"). What the servers share
(a loopback aiohttp app on a free port, ``fail_next(n)`` outages, idempotency keys answered ``409`` when
repeated) is :class:`adapters.simulators.server.SimulatorServer`.
"""

from __future__ import annotations

__all__: list[str] = []
