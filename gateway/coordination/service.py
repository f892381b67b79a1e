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
from collections.abc import Callable, Mapping
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
from gateway.coordination.metrics import CoordinationMetrics
from gateway.coordination.projection import TimelineEntry, project
from gateway.coordination.sop import Sop
from gateway.coordination.statistics import STAT_TYPE, Period, Statistics, compute, month_of
from gateway.coordination.store import Session, Store
from gateway.errors import GatewayError, Reason
from gateway.settings import read_secret

__all__ = ["Coordinator", "schema_fields"]

_log = structlog.get_logger(__name__)
_Counts = dict[tuple[str, str], int] | None
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
        metrics: CoordinationMetrics | None = None,
    ) -> None:
        self.config = config
        self.party = party
        self.registry = registry
        self.schemas = schemas
        self.clock = clock or SystemClock()
        self._publish = publish
        self.metrics = metrics or CoordinationMetrics()
        """``xchg_sop_*`` and ``xchg_statistics_*`` (:mod:`gateway.coordination.metrics`)."""
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
                metrics=self.metrics,
            )
            if self.sop is not None
            else None
        )
        if self.sop is not None:
            self.metrics.declare(step.id for step in self.sop.steps)
        self._fact_fields = self.sop.fact_fields if self.sop is not None else frozenset()
        self._published_periods: dict[str, str] = {}
        self.latest_statistics: Statistics | None = None
        """The last completed period's statistics, as last computed (the status page charts them)."""
        self._last_prune = 0.0
        self._lock = asyncio.Lock()
        self._pending: list[tuple[TimelineEntry, Mapping[str, Any], asyncio.Future[str | None]]] = []
        self._wakeup = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.anomalies = 0

    def _parties_with_role(self, role: str) -> list[str]:
        return [p.id for p in self.registry.parties.values() if role in p.roles]

    async def start(self) -> None:
        await self.store.open()
        self._writer = asyncio.create_task(self._write(), name=f"{self.party}-coordination-writer")

    async def close(self) -> None:
        """Sink interface: the store is closed by :meth:`stop` (the runtime calls it last)."""

    async def stop(self) -> None:
        """Commit what is queued, stop the writer, close the store."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.flush()
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
        """Queue the event for the next group commit (``flush_ms = 0``: wait for its commit)."""
        arguments: dict[str, Any] = {
            "event_type": event.type, "source": event.source, "event_id": event.id,
            "subject": event.subject or "", "time": event.time or "", "clear": clear, "payload": payload,
        }  # fmt: skip
        if self.config.flush_ms <= 0 or self._writer is None:
            await self.record(**arguments)
        else:
            self.submit(**arguments)

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
        """Project one event (``clear``: its clear payload) into the timeline and the SOP engine and wait
        until it is committed; returns its anomaly (``closure`` before ``shelter-admission``...) or None.
        Recorded either way; never raises for an event out of order."""
        future = self.submit(
            event_type=event_type,
            source=source,
            event_id=event_id,
            subject=subject,
            time=time,
            clear=clear,
            payload=payload,
        )
        if future is None:
            return None
        if self._writer is None:
            await self.flush()
        else:
            self._flush_now.set()
        return await future

    def submit(
        self,
        *,
        event_type: str,
        source: str,
        event_id: str,
        subject: str,
        time: str,
        clear: Mapping[str, Any],
        payload: Mapping[str, Any] | None = None,
    ) -> asyncio.Future[str | None] | None:
        """Queue one event for the next group commit (within ``flush_ms``); the future gives its anomaly."""
        entry = project(
            event_type=event_type,
            source=source,
            event_id=event_id,
            subject=subject,
            event_time=time,
            clear=clear,
            payload=payload,
            fact_fields=self._fact_fields,
            profiles=self.config.profiles,
        )
        if entry is None:
            return None
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, clear, future))
        self._wakeup.set()
        return future

    async def flush(self) -> None:
        """Commit every queued event now: one transaction for the timeline entries and the SOP engine."""
        async with self._lock:  # one batch at a time: the engine reads what the previous batch wrote
            batch, self._pending = self._pending, []
            if not batch:
                return
            engine = self.engine

            def work(run: Callable[..., Any]) -> tuple[list[tuple[bool, str | None, bool]], Session, _Counts]:
                session = Session(run)
                results: list[tuple[bool, str | None, bool]] = []
                for entry, clear, _ in batch:
                    added = session.add(entry)
                    if added is None:  # a redelivery: already recorded
                        results.append((False, None, False))
                        continue
                    late = engine.observe_in(session, entry, clear) if engine is not None else False
                    results.append((True, added[1], late))
                # the gauges, read in the same transaction when it opened or closed a step
                counts = session.unresolved_counts() if session.opened or session.resolved else None
                return results, session, counts

            try:
                results, session, counts = await self.store.call(work)
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            any_late = False
            for (entry, _, future), (_, anomaly, late) in zip(batch, results, strict=True):
                any_late = any_late or late
                if anomaly is not None:
                    self.anomalies += 1
                    _log.warning(
                        "timeline.out-of-order", subject=entry.subject, anomaly=anomaly, party=self.party
                    )
                if not future.done():
                    future.set_result(anomaly)
            for step, outcome in session.resolved:  # committed: count them
                self.metrics.resolved(step, outcome)
            if counts is not None:
                self.metrics.set_unresolved(counts)
        if any_late and engine is not None:
            async with self._lock:
                await engine.tick()  # the resolved alerts of steps closed late
                await self._count_steps()

    async def _write(self) -> None:
        """Group commit: flush when ``flush_ms`` passed since the first queued event, at 512 queued events,
        or at once when someone waits (``record``)."""
        window = self.config.flush_ms / 1000
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if window > 0 and len(self._pending) < 512 and not self._flush_now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._flush_now.wait(), timeout=window)
            self._flush_now.clear()
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - logged; the waiting callers got the exception
                _log.error("coordination.flush-failed", error=type(exc).__name__, party=self.party)

    # ---- time -------------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Escalate overdue steps, publish last month's statistics once, apply retention once a day."""
        await self.flush()
        async with self._lock:
            if self.engine is not None:
                await self.engine.tick()
                await self._count_steps()
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

    async def _count_steps(self) -> None:
        """Recount ``xchg_sop_steps_open`` / ``_overdue`` from the store (after a tick: new overdue steps,
        retention, a restart)."""
        self.metrics.set_unresolved(await self.store.unresolved_counts())

    async def statistics(self, period: Period) -> Statistics:
        return await compute(self.store, self.party, period, now=self.clock.now())

    async def publish_statistics(self, period: Period) -> Statistics | None:
        """Compute ``period``; write the report files and publish ``alert.statistics`` when they changed."""
        stats = await self.statistics(period)
        self.latest_statistics = stats
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
        self.metrics.published(period.bounds()[0], self.clock.now().timestamp())
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
