"""The SOP engine: opens a step when its trigger happens, escalates it once when overdue, resolves it once.

Fed with the timeline entries of the events this gateway publishes and accepts (:meth:`SopEngine.observe`)
and woken by the clock (:meth:`SopEngine.tick`); time comes from the injected :class:`Clock` only, so tests
move a :class:`ManualClock` instead of sleeping.

Exactly once: each step instance moves ``open -> overdue -> late`` or ``open -> met`` by conditional
updates in the store, so a transition happens once even if two ticks race. The overdue alert and the
resolved alert each carry a deterministic event id (uuid5 of the instance), and an instance is marked
``alerted`` only after the outbox accepted the alert: a crash or a full outbox between the two repeats the
publish with the *same* id, which the outbox and every consumer drop. A late event closes the breach
(``late``) and publishes the ``resolved`` alert; an event that closes a step before its deadline (``met``)
publishes nothing. An expected event recorded *before* its trigger (out of order) closes the step as soon as
the trigger opens it.

Alerts (``alert.sop-overdue``) carry the SOP and step ids, the case or alert id, the responsible and the
coordinating party, the facility where the step names one, the deadline and the hours overdue: nothing about
the person.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import structlog

from gateway.coordination.clock import Clock
from gateway.coordination.metrics import CoordinationMetrics
from gateway.coordination.projection import TimelineEntry, instant
from gateway.coordination.sop import Sop, Step, fact
from gateway.coordination.store import Instance, Session, Store
from gateway.errors import GatewayError

__all__ = ["ALERT_TYPE", "PublishAlert", "SopEngine", "alert_id", "unflatten"]

_log = structlog.get_logger(__name__)

ALERT_TYPE: Final = "id.trafficking.alert.sop-overdue"
#: uuid5(NAMESPACE_URL, "urn:id.trafficking:sop-alert") written out: changing it would change alert ids.
_NAMESPACE: Final = uuid.UUID("5d0c2b7e-53a8-5cb5-9a5e-2f0f5b0f6a11")


class PublishAlert(Protocol):
    def __call__(self, event_type: str, data: Mapping[str, Any], *, event_id: str) -> Awaitable[Any]: ...


def alert_id(instance: str) -> str:
    return f"SOP-{instance[:24].upper()}"


def unflatten(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Stored facts (keys may be dotted paths) back into a nested payload for condition checks."""
    nested: dict[str, Any] = {}
    for key, value in sorted(facts.items(), key=lambda item: item[0].count(".")):
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = dict(child) if isinstance(child, Mapping) else {}
            target = child
        if parts[-1] not in target:
            target[parts[-1]] = dict(value) if isinstance(value, Mapping) else value
    return nested


class SopEngine:
    def __init__(
        self,
        sop: Sop,
        store: Store,
        *,
        clock: Clock,
        parties_with_role: Callable[[str], Sequence[str]],
        publish: PublishAlert | None = None,
        metrics: CoordinationMetrics | None = None,
    ) -> None:
        self.sop = sop
        self.store = store
        self.clock = clock
        self._parties_with_role = parties_with_role
        self._publish = publish
        self.metrics = metrics
        """Counts each ``open -> overdue`` transition (``xchg_sop_escalations_total``)."""
        self.published: list[tuple[str, dict[str, Any]]] = []
        """(event id, payload) of every alert published, in order (for tests, the demo and metrics)."""

    # ---- events -------------------------------------------------------------------------------------------
    async def observe(self, entry: TimelineEntry, clear: Mapping[str, Any]) -> None:
        """Close what ``entry`` completes, then open what it triggers (see the module docstring)."""

        def work(run: Callable[..., Any]) -> tuple[bool, list[tuple[str, str]]]:
            session = Session(run)
            return self.observe_in(session, entry, clear), session.resolved

        late, resolved = await self.store.call(work)
        if self.metrics is not None:
            for step, outcome in resolved:
                self.metrics.resolved(step, outcome)
        if late:
            await self.tick()

    def observe_in(self, session: Session, entry: TimelineEntry, clear: Mapping[str, Any]) -> bool:
        """:meth:`observe` inside the caller's store transaction; True when a step was closed late (call
        :meth:`tick` afterwards to publish its resolved alert)."""
        late = False
        for instance in session.unresolved(entry.subject):
            step = self.sop.step(instance.step)
            if step is not None and self._closes(step, instance, entry.message, entry.source, clear):
                state = session.resolve(instance.instance, entry.at, entry.source, entry.event_id)
                late = late or state == "late"
        for step in self.sop.steps:
            if step.triggered_by(entry.message, clear):
                self._open(session, step, entry, clear)
        return late

    def _closes(
        self, step: Step, instance: Instance, message: str, source: str, payload: Mapping[str, Any]
    ) -> bool:
        if not step.closed_by(message, payload):
            return False
        if step.expect_from == "responsible" and source != instance.responsible:
            return False
        if step.correlate:
            ref = fact(payload, step.correlate)
            if not isinstance(ref, Mapping) or (ref.get("source"), ref.get("id")) != (
                instance.trigger_source,
                instance.trigger_id,
            ):
                return False
        return True

    def _open(self, session: Session, step: Step, entry: TimelineEntry, clear: Mapping[str, Any]) -> None:
        responsible = self._responsible(step, entry, clear)
        if responsible is None:
            _log.warning("sop.no-responsible-party", step=step.id, subject=entry.subject, sop=self.sop.id)
            return
        anchor = entry.event_time if step.anchor == "event-time" else instant(fact(clear, step.anchor))
        if anchor is None:
            _log.warning("sop.no-anchor", step=step.id, subject=entry.subject, field=step.anchor)
            return
        key = "|".join((self.sop.id, step.id, entry.subject, responsible, entry.source, entry.event_id))
        place = fact(clear, step.place) if step.place else None
        instance = Instance(
            instance=hashlib.sha256(key.encode("utf-8")).hexdigest()[:32],
            step=step.id,
            subject=entry.subject,
            kind=entry.kind,
            responsible=responsible,
            place=place if isinstance(place, str) else None,
            trigger_source=entry.source,
            trigger_id=entry.event_id,
            trigger_message=entry.message,
            opened=entry.event_time,
            due=anchor + step.within.total_seconds(),
            state="open",
            overdue_at=None,
            alerted=False,
            resolved_at=None,
            resolved_source=None,
            resolved_id=None,
            resolution_alerted=False,
        )
        if not session.open_instance(instance):
            return
        for event in session.events(entry.subject):  # an expected event recorded before its trigger
            if (event["source"], event["event_id"]) == (entry.source, entry.event_id):
                continue
            if self._closes(step, instance, event["message"], event["source"], unflatten(event["facts"])):
                session.resolve(instance.instance, event["at"], event["source"], event["event_id"])
                break

    def _responsible(self, step: Step, entry: TimelineEntry, clear: Mapping[str, Any]) -> str | None:
        who = step.responsible
        if who.kind == "source":
            return entry.source
        if who.kind == "party":
            return who.value
        if who.kind == "field":
            value = fact(clear, who.value)
            return value if isinstance(value, str) else None
        kind, value = self.sop.roles[who.value]
        if kind == "party":
            return value
        parties = sorted(self._parties_with_role(value))
        return parties[0] if parties else None

    # ---- time -------------------------------------------------------------------------------------------
    async def tick(self) -> int:
        """Escalate what is overdue, announce what was resolved late; returns the alerts published."""
        now = self.clock.now().timestamp()
        published = 0
        for instance in await self.store.due(now):
            state = instance.state
            if state == "open":
                if not await self.store.mark_overdue(instance.instance, now):
                    continue
                if self.metrics is not None:
                    self.metrics.escalated(instance.step)
                state, overdue_at = "overdue", now
            else:
                overdue_at = instance.overdue_at or now
            if not instance.alerted:
                if not await self._alert(instance, "active", overdue_at, now):
                    continue
                published += 1
            if state == "late" and not instance.resolution_alerted:
                published += await self._alert(instance, "resolved", overdue_at, now)
        return published

    async def _alert(self, instance: Instance, status: str, overdue_at: float, now: float) -> bool:
        resolved = status == "resolved"
        until = instance.resolved_at if resolved and instance.resolved_at is not None else now
        data: dict[str, Any] = {
            "alert_id": alert_id(instance.instance),
            "alert_status": status,
            "sop_id": self.sop.id,
            "sop_version": self.sop.version,
            "step_id": instance.step,
            "subject_type": instance.trigger_message,
            "responsible_party": instance.responsible,
            "coordinating_party": self.sop.coordinator,
            "trigger_event": {"source": instance.trigger_source, "id": instance.trigger_id},
            "due_at": _rfc3339(instance.due),
            "overdue_since": _rfc3339(max(overdue_at, instance.due)),
            "hours_overdue": max(0, int((until - instance.due) // 3600)),
        }
        data["case_id" if instance.kind == "case" else "subject_alert_id"] = instance.subject
        if instance.place:
            data["location_id"] = instance.place
        if (
            resolved
            and instance.resolved_at is not None
            and instance.resolved_id
            and instance.resolved_source
        ):
            data["resolved_at"] = _rfc3339(instance.resolved_at)
            data["resolving_event"] = {"source": instance.resolved_source, "id": instance.resolved_id}
        event_id = str(uuid.uuid5(_NAMESPACE, f"{instance.instance}:{status}"))
        if self._publish is not None:
            try:
                await self._publish(ALERT_TYPE, data, event_id=event_id)
            except GatewayError as exc:  # outbox full, stopping...: the next tick tries again, same id
                _log.warning("sop.alert-not-published", reason=str(exc.reason), step=instance.step)
                return False
        await self.store.mark_alerted(instance.instance, resolution=resolved)
        self.published.append((event_id, data))
        _log.info(
            "sop.alert",
            status=status,
            step=instance.step,
            subject=instance.subject,
            responsible=instance.responsible,
            hours_overdue=data["hours_overdue"],
        )
        return True


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
