"""The coordination component of one party's gateway: timeline projection, SOP engine and statistics.

:class:`Coordinator` is wired into the runtime (gateway/runtime/gateway.py) when the configuration has a
``[coordination]`` table: it observes every event the gateway *publishes* (a publisher observer, after the
outbox accepted it) and every event it *accepts* (a route of the subscriber, like a sink, so it is
idempotent and at-least-once like every delivery), and its :meth:`run` loop ticks the SOP engine and
publishes the statistics of each completed month. Time comes from the injected clock.

What it keeps is in :mod:`gateway.coordination.store`; what it may look at is the *clear* part of each
payload (sealed properties are dropped first), plus, only with ``profiles = true``, the coarse statistical
profile of a referral this party could unseal (:mod:`gateway.coordination.projection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.contract.envelope import Envelope
from gateway.contract.registry import Registry
from gateway.contract.schemas import SchemaStore
from gateway.contract.verify import Accepted
from gateway.coordination.clock import Clock, SystemClock
from gateway.coordination.config import CoordinationConfig
from gateway.coordination.engine import PublishAlert, SopEngine
from gateway.coordination.projection import project
from gateway.coordination.sop import Sop
from gateway.coordination.statistics import STAT_TYPE, Period, Statistics, compute, month_of
from gateway.coordination.store import Store
from gateway.errors import GatewayError, Reason
from gateway.settings import read_secret

__all__ = ["Coordinator", "schema_fields"]

_log = structlog.get_logger(__name__)
#: uuid5(NAMESPACE_URL, "urn:id.trafficking:statistics") written out (event ids of statistics alerts).
_STAT_NAMESPACE: Final = uuid.UUID("0f5e8b1a-3c4d-5e6f-8a9b-0c1d2e3f4a5b")


def schema_fields(schemas: SchemaStore) -> Any:
    """``fields_of(message)`` for the SOP loader: clear and sealed top-level properties (newest version)."""

    def fields_of(message: str) -> tuple[frozenset[str], frozenset[str]]:
        schema = schemas.latest(f"id.trafficking.{message}")
        properties = frozenset(schema.raw.get("properties", {}))
        sealed = frozenset(schema.sealed_fields)
        return properties - sealed, sealed

    return fields_of


class Coordinator:
    """See the module docstring; also a delivery Sink (``name``, ``deliver``, ``close``)."""

    name = "coordination"

    def __init__(
        self,
        config: CoordinationConfig,
        *,
        party: str,
        registry: Registry,
        schemas: SchemaStore,
        publish: PublishAlert | None = None,
        clock: Clock | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.party = party
        self.registry = registry
        self.schemas = schemas
        self.clock = clock or SystemClock()
        self._publish = publish
        self.store = store or _store(config)
        self.sop = (
            Sop.load(config.sop, known_types=schemas.types(), fields_of=schema_fields(schemas))
            if config.sop is not None
            else None
        )
        self.engine = (
            SopEngine(
                self.sop,
                self.store,
                clock=self.clock,
                parties_with_role=self._parties_with_role,
                publish=publish if config.sop_alerts else None,
            )
            if self.sop is not None
            else None
        )
        self._fact_fields = self.sop.fact_fields if self.sop is not None else frozenset()
        self._published_periods: dict[str, str] = {}
        self._last_prune = 0.0
        self._lock = asyncio.Lock()
        self.anomalies = 0

    def _parties_with_role(self, role: str) -> list[str]:
        return [p.id for p in self.registry.parties.values() if role in p.roles]

    async def start(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        """Sink interface: the store is closed by :meth:`stop` (the runtime calls it last)."""

    async def stop(self) -> None:
        await self.store.close()

    # ---- observing events -------------------------------------------------------------------------------
    async def published(self, event: Envelope, data: Mapping[str, Any]) -> None:
        """Publisher observer: an event of ours was accepted into the outbox (``data``: logical payload)."""
        schema = self.schemas.get(event.dataschema)
        clear = {k: v for k, v in data.items() if k not in schema.sealed_fields}
        await self._observe(event, clear, data)

    async def deliver(self, accepted: Accepted) -> None:
        """Route of the subscriber: an event of another party was accepted."""
        clear = {k: v for k, v in accepted.data.items() if k != "sealed"}
        await self._observe(accepted.event, clear, accepted.payload())

    async def _observe(self, event: Envelope, clear: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        await self.record(
            event_type=event.type, source=event.source, event_id=event.id, subject=event.subject or "",
            time=event.time or "", clear=clear, payload=payload,
        )  # fmt: skip

    async def record(
        self,
        *,
        event_type: str,
        source: str,
        event_id: str,
        subject: str,
        time: str,
        clear: Mapping[str, Any],
        payload: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Project one event (``clear``: its clear payload) into the timeline and the SOP engine; returns its
        anomaly (``closure`` before ``shelter-admission``...) or None. Recorded either way; never raises for
        an event out of order."""
        entry = project(
            event_type=event_type, source=source, event_id=event_id, subject=subject, event_time=time,
            clear=clear, payload=payload, fact_fields=self._fact_fields, profiles=self.config.profiles,
        )  # fmt: skip
        if entry is None:
            return None
        async with self._lock:  # one event at a time: the engine reads what the previous one wrote
            added = await self.store.add([entry])
            if not added:
                return None  # a redelivery: already recorded
            _, anomaly = added[0]
            if anomaly is not None:
                self.anomalies += 1
                _log.warning("timeline.out-of-order", subject=subject, anomaly=anomaly, party=self.party)
            if self.engine is not None:
                await self.engine.observe(entry, clear)
            return anomaly

    # ---- time -------------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Escalate overdue steps, publish last month's statistics once, apply retention once a day."""
        async with self._lock:
            if self.engine is not None:
                await self.engine.tick()
        now = self.clock.now()
        if self.config.statistics or self.config.report_dir is not None:
            period = month_of((now.replace(day=1) - timedelta(days=1)).date())
            await self.publish_statistics(period)
        if now.timestamp() - self._last_prune > 86400:
            self._last_prune = now.timestamp()
            cutoff = (now - timedelta(days=self.config.retention_days)).timestamp()
            removed = await self.store.prune(cutoff)
            if removed:
                _log.info("coordination.retention", removed=removed, party=self.party)

    async def statistics(self, period: Period) -> Statistics:
        return await compute(self.store, self.party, period, now=self.clock.now())

    async def publish_statistics(self, period: Period) -> Statistics | None:
        """Compute ``period``; write the report files and publish ``alert.statistics`` when they changed."""
        stats = await self.statistics(period)
        digest = stats.digest()
        if self._published_periods.get(period.label) == digest:
            return None
        if self.config.report_dir is not None:
            write_report(stats, self.config.report_dir)
        if self.config.statistics and self._publish is not None:
            event_id = str(uuid.uuid5(_STAT_NAMESPACE, f"{self.party}:{period.label}:{digest}"))
            try:
                await self._publish(STAT_TYPE, stats.payload(), event_id=event_id)
            except GatewayError as exc:
                _log.warning("statistics.not-published", reason=str(exc.reason), period=period.label)
                return None
        self._published_periods[period.label] = digest
        return stats

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every ``tick_seconds`` until ``stop``; a failed tick is logged and retried next time."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - the coordination loop must never stop the gateway
                _log.error("coordination.tick-failed", error=type(exc).__name__, party=self.party)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.tick_seconds)


def write_report(stats: Statistics, folder: Path) -> list[Path]:
    """``statistics-<party>-<period>.json``, ``.csv`` and ``.html`` under ``folder`` (created 0700)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = folder / f"statistics-{stats.party}-{stats.period.label}"
    written = []
    for suffix, text in (
        (".json", json.dumps(stats.payload(), indent=2, sort_keys=True) + "\n"),
        (".csv", stats.to_csv()),
        (".html", stats.to_html()),
    ):
        path = stem.with_suffix(suffix)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _store(config: CoordinationConfig) -> Store:
    if config.store == "postgresql":
        if config.dsn_file is None:
            raise GatewayError(Reason.CONFIG_INVALID, "coordination.dsn_file: required for postgresql")
        return Store.postgresql(read_secret(config.dsn_file, "coordination.dsn_file"))
    return Store.sqlite(config.path)
