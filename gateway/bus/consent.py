"""Consent enforced at delivery: after a consent withdrawal or narrowing, later case events outside the
remaining scope are not handed to the agency system; the consent change itself always is, and so is an
erasure request, as an instruction for the agency system to delete the case's personal data.

Why here and not only in the agencies' systems: UU 27/2022 art. 9 gives the person the right to withdraw
consent and the controller must then stop processing (see docs/PRIVACY.md for the articles and how far they
were checked); a gateway that kept delivering referrals, plans and admissions after a withdrawal would make
every recipient process them. The rule, per case (``case.consent-change`` as the latest word):

* an event is *delivered* when no consent change was recorded for its case, when the change names another
  legal ground (``legal_basis``: processing continues on it, e.g. a criminal investigation), when the event
  itself names a ground other than consent, or when the event's purpose and ``data-sharing`` (exchanging
  case data at all) are both in the remaining scope;
* otherwise it is *withheld*: not delivered, counted (``xchg_withheld_total{reason}``) and logged with the
  reason code ``privacy.consent-withdrawn``, never dead-lettered (the record is valid; the person said no).

Purposes of the case messages (the ``consentScope`` values): referral and its response -> ``referral``;
repatriation plan -> ``repatriation``; admission, discharge, assistance, support plan, closure ->
``case-management``. The register is a small SQLite file in the data folder (durable: a withdrawal must not
be forgotten after a power cut); it holds case ids, scopes and times only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from prometheus_client import CollectorRegistry, Counter

from gateway.bus.database import Database, transaction
from gateway.bus.delivery import Sink
from gateway.contract.verify import Accepted
from gateway.errors import Reason

__all__ = ["CONSENT_CHANGE", "PURPOSES", "ConsentGate", "ConsentRegister", "ConsentState", "withholds"]

_log = structlog.get_logger(__name__)

CONSENT_CHANGE: Final = "id.trafficking.case.consent-change"
PURPOSES: Final[Mapping[str, str]] = {
    "id.trafficking.case.referral": "referral",
    "id.trafficking.case.referral-response": "referral",
    "id.trafficking.case.repatriation-plan": "repatriation",
    "id.trafficking.case.shelter-admission": "case-management",
    "id.trafficking.case.shelter-discharge": "case-management",
    "id.trafficking.case.assistance-record": "case-management",
    "id.trafficking.case.support-plan": "case-management",
    "id.trafficking.case.closure": "case-management",
}
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS consent (
    case_id TEXT PRIMARY KEY, scope TEXT NOT NULL, legal_basis TEXT, effective_at TEXT NOT NULL,
    erasure INTEGER NOT NULL, recorded REAL NOT NULL, source TEXT NOT NULL, event_id TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class ConsentState:
    scope: frozenset[str]
    legal_basis: str | None
    erasure: bool

    def permits(self, event_type: str, event_basis: object) -> bool:
        if self.legal_basis:
            return True
        if isinstance(event_basis, str) and event_basis != "consent":
            return True
        purpose = PURPOSES.get(event_type)
        return purpose is None or (purpose in self.scope and "data-sharing" in self.scope)


class ConsentRegister:
    """The latest consent change per case (by ``effective_at``, then arrival)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, ConsentState] = {}

    async def attach(self) -> None:
        def setup(connection: sqlite3.Connection) -> dict[str, ConsentState]:
            connection.executescript(_SCHEMA)
            rows = connection.execute("SELECT case_id, scope, legal_basis, erasure FROM consent").fetchall()
            return {r[0]: ConsentState(frozenset(json.loads(r[1])), r[2], bool(r[3])) for r in rows}

        self._cache = await self._db.run(setup)

    def state(self, case_id: str) -> ConsentState | None:
        return self._cache.get(case_id)

    async def apply(self, source: str, event_id: str, data: Mapping[str, Any]) -> ConsentState:
        case_id = str(data["case_id"])
        state = ConsentState(
            scope=frozenset(data.get("scope") or ()) if data.get("con_Consent") is not False else frozenset(),
            legal_basis=data.get("legal_basis") if isinstance(data.get("legal_basis"), str) else None,
            erasure=data.get("erasure_requested") is True,
        )
        effective = str(data.get("effective_at", ""))

        def work(connection: sqlite3.Connection) -> bool:
            def write(c: sqlite3.Connection) -> bool:
                row = c.execute(
                    "SELECT effective_at, erasure FROM consent WHERE case_id = ?", (case_id,)
                ).fetchone()
                if row is not None and row[0] > effective:
                    return False  # an older change arriving late does not override a newer one
                c.execute(
                    "INSERT INTO consent (case_id, scope, legal_basis, effective_at, erasure, recorded,"
                    " source,"
                    " event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (case_id) DO UPDATE SET"
                    " scope = excluded.scope, legal_basis = excluded.legal_basis, effective_at ="
                    " excluded.effective_at, erasure = MAX(consent.erasure, excluded.erasure), recorded ="
                    " excluded.recorded, source = excluded.source, event_id = excluded.event_id",
                    (
                        case_id,
                        json.dumps(sorted(state.scope)),
                        state.legal_basis,
                        effective,
                        int(state.erasure),
                        time.time(),
                        source,
                        event_id,
                    ),
                )
                return True

            return transaction(connection, write)

        if await self._db.run(work):
            previous = self._cache.get(case_id)
            self._cache[case_id] = (
                ConsentState(state.scope, state.legal_basis, True) if previous and previous.erasure else state
            )
        return self._cache.get(case_id, state)

    async def prune(self, before: float) -> int:
        """Retention: forget changes recorded before ``before`` (the cases' messages are gone by then)."""
        removed = await self._db.run(
            lambda c: c.execute("DELETE FROM consent WHERE recorded < ?", (before,)).rowcount
        )
        await self.attach()
        return int(removed)


def withholds(register: ConsentRegister, accepted: Accepted) -> bool:
    """Whether the consent in ``register`` withholds ``accepted`` from agency systems (module docstring). A
    consent change itself is never withheld. The subscriber asks too, after delivery, so that the event's
    signed receipt says ``withheld`` rather than ``delivered``."""
    event = accepted.event
    if event.type == CONSENT_CHANGE or event.type not in PURPOSES:
        return False
    state = register.state(event.subject or "")
    return state is not None and not state.permits(event.type, accepted.data.get("legal_basis"))


class ConsentGate:
    """Wraps an agency sink with the rule of the module docstring (one gate per sink, one register)."""

    def __init__(self, sink: Sink, register: ConsentRegister, withheld: Counter) -> None:
        self.inner = sink
        self.name = sink.name
        self._register = register
        self._withheld = withheld

    @staticmethod
    def counter(registry: CollectorRegistry) -> Counter:
        return Counter(
            "xchg_withheld_total",
            "Accepted events not delivered to an agency system because consent was withdrawn or narrowed",
            ["reason"],
            registry=registry,
        )

    async def deliver(self, accepted: Accepted) -> None:
        event = accepted.event
        if event.type == CONSENT_CHANGE:
            await self._register.apply(event.source, event.id, accepted.data)
            await self.inner.deliver(accepted)  # the change, and an erasure request, always reach the agency
            return
        if withholds(self._register, accepted):
            self._withheld.labels(reason=str(Reason.PRIVACY_CONSENT_WITHDRAWN)).inc()
            _log.info(
                "delivery withheld",
                reason=str(Reason.PRIVACY_CONSENT_WITHDRAWN),
                sink=self.name,
                event_id=event.id,
                source=event.source,
                type=event.type,
            )
            return
        await self.inner.deliver(accepted)

    async def close(self) -> None:
        await self.inner.close()
