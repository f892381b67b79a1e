"""The SOP engine with an injected clock: each step fires once when overdue and resolves once; a late event
closes the breach; out-of-order events are recorded and reported, never crash the projection."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contract.schemas import SchemaStore
from gateway.coordination.clock import ManualClock
from gateway.coordination.config import CoordinationConfig
from gateway.coordination.service import Coordinator
from gateway.coordination.store import Store
from gateway.errors import GatewayError, Reason
from tests.world import World

KBRI, KEMENSOS = "kemlu.kbri-kuching", "kemensos"


class Alerts:
    """Stands in for the publisher: records alerts; can refuse like a full outbox."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.refuse = 0

    async def __call__(self, event_type: str, data: Mapping[str, Any], *, event_id: str) -> None:
        if self.refuse:
            self.refuse -= 1
            raise GatewayError(Reason.OUTBOX_FULL, "test")
        self.events.append((event_id, dict(data)))

    def statuses(self, step: str) -> list[str]:
        return [data["alert_status"] for _, data in self.events if data["step_id"] == step]


def _zulu(clock: ManualClock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def coordinator(store: Store, clock: ManualClock, world: World, alerts: Alerts, **config: Any) -> Coordinator:
    return Coordinator(
        CoordinationConfig(sop_alerts=True, **config),
        party=KEMENSOS,
        registry=world.registry,
        schemas=world.schemas,
        publish=alerts,
        clock=clock,
        store=store,
    )


async def referral(c: Coordinator, clock: ManualClock, case_id: str, to: str = KEMENSOS) -> str:
    event_id = str(uuid.uuid4())
    clear = {"case_id": case_id, "cas_ReferredOrganisation": to, "legal_basis": "consent"}
    await c.record(
        event_type="id.trafficking.case.referral",
        source=KBRI,
        event_id=event_id,
        subject=case_id,
        time=_zulu(clock),
        clear=clear,
    )
    return event_id


async def response(
    c: Coordinator, clock: ManualClock, case_id: str, referral_id: str, by: str = KEMENSOS
) -> None:
    clear = {"case_id": case_id, "status": "accepted", "referral_event": {"source": KBRI, "id": referral_id}}
    await c.record(
        event_type="id.trafficking.case.referral-response",
        source=by,
        event_id=str(uuid.uuid4()),
        subject=case_id,
        time=_zulu(clock),
        clear=clear,
    )


async def test_an_overdue_referral_is_escalated_once_and_resolved_once(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    referral_id = await referral(c, clock, "KBRI-KCH-2020-000124")
    clock.advance(hours=23, minutes=59)
    await c.tick()
    assert alerts.events == []  # not yet due
    clock.advance(hours=3)
    await c.tick()
    await c.tick()
    clock.advance(hours=5)
    await c.tick()
    assert alerts.statuses("referral-answered") == ["active"]  # fired once, however often the clock ticks
    active = alerts.events[0][1]
    assert active["case_id"] == "KBRI-KCH-2020-000124"
    assert active["responsible_party"] == KEMENSOS
    assert active["coordinating_party"] == KEMENSOS
    assert active["hours_overdue"] == 2
    world.schemas.latest("id.trafficking.alert.sop-overdue").validate(active)

    await response(c, clock, "KBRI-KCH-2020-000124", referral_id)  # late: closes the breach
    await c.tick()
    clock.advance(days=3)
    await c.tick()
    assert alerts.statuses("referral-answered") == ["active", "resolved"]
    resolved = alerts.events[1][1]
    assert resolved["alert_id"] == active["alert_id"]
    assert resolved["hours_overdue"] == 7
    world.schemas.latest("id.trafficking.alert.sop-overdue").validate(resolved)
    assert [i.state for i in await store.instances() if i.step == "referral-answered"] == ["late"]


async def test_an_answer_in_time_publishes_nothing(store: Store, clock: ManualClock, world: World) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    referral_id = await referral(c, clock, "KBRI-KCH-2020-000125")
    clock.advance(hours=5)
    await response(c, clock, "KBRI-KCH-2020-000125", referral_id)
    clock.advance(days=10)
    await c.tick()
    assert alerts.statuses("referral-answered") == []
    assert {i.step: i.state for i in await store.instances()}["referral-answered"] == "met"


async def test_only_the_responsible_party_answering_that_referral_closes_the_step(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    referral_id = await referral(c, clock, "KBRI-KCH-2020-000126")
    await response(c, clock, "KBRI-KCH-2020-000126", referral_id, by="iom")  # not the referred party
    await response(c, clock, "KBRI-KCH-2020-000126", "another-referral")  # not this referral
    clock.advance(hours=25)
    await c.tick()
    assert alerts.statuses("referral-answered") == ["active"]


async def test_a_refused_publish_is_retried_with_the_same_event_id(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    await referral(c, clock, "KBRI-KCH-2020-000127")
    clock.advance(hours=30)
    alerts.refuse = 1
    await c.tick()
    assert alerts.events == []
    await c.tick()
    await c.tick()
    assert alerts.statuses("referral-answered") == ["active"]


async def test_capacity_below_the_threshold_is_raised_at_once_and_resolved_when_beds_free_up(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)

    async def snapshot(free: int) -> None:
        clear = {
            "alert_id": "CAP-RPTC-PONTIANAK",
            "shelter_id": "rptc-pontianak",
            "as_of": _zulu(clock),
            "capacity_beds": 60,
            "occupied_beds": 60 - free,
            "available_beds": free,
        }
        await c.record(
            event_type="id.trafficking.alert.shelter-capacity",
            source=KEMENSOS,
            event_id=str(uuid.uuid4()),
            subject="CAP-RPTC-PONTIANAK",
            time=_zulu(clock),
            clear=clear,
        )

    await snapshot(4)
    await c.tick()
    await snapshot(3)  # still low: the open step is not opened twice
    clock.advance(hours=2)
    await c.tick()
    await snapshot(12)
    clock.advance(hours=1)
    await c.tick()
    assert alerts.statuses("shelter-capacity-low") == ["active", "resolved"]
    assert alerts.events[0][1]["location_id"] == "rptc-pontianak"
    assert alerts.events[0][1]["subject_alert_id"] == "CAP-RPTC-PONTIANAK"


async def test_a_data_incident_deadline_runs_from_detection(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    detected = clock.now()
    clock.advance(hours=10)  # published ten hours after detection
    clear = {
        "alert_id": "ALR-KEMENSOS-2020-000007",
        "status": "detected",
        "detected_at": detected.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    await c.record(
        event_type="id.trafficking.alert.data-incident",
        source=KEMENSOS,
        event_id="i-1",
        subject="ALR-KEMENSOS-2020-000007",
        time=_zulu(clock),
        clear=clear,
    )
    clock.advance(hours=61)  # 71 h after detection
    await c.tick()
    assert alerts.statuses("data-incident-notified") == []
    clock.advance(hours=2)  # 73 h
    await c.tick()
    assert alerts.statuses("data-incident-notified") == ["active"]


async def test_out_of_order_events_are_recorded_and_reported(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    case = "KBRI-KCH-2020-000128"
    closed = await c.record(
        event_type="id.trafficking.case.closure",
        source=KEMENSOS,
        event_id="c-1",
        subject=case,
        time="2020-08-18T09:00:00Z",
        clear={"case_id": case, "closed_on": "2020-08-18", "closure_reason_code": "reintegrated"},
    )
    admitted = await c.record(
        event_type="id.trafficking.case.shelter-admission",
        source=KEMENSOS,
        event_id="a-1",
        subject=case,
        time="2020-08-19T09:00:00Z",
        clear={"case_id": case, "shelter_id": "rptc-pontianak", "admitted_at": "2020-08-19T09:00:00Z"},
    )
    assert closed is None
    assert admitted == "shelter-admission after closure"
    assert await store.anomalies() == [(case, "shelter-admission", "shelter-admission after closure")]
    assert [e["stage"] for e in await store.events(case)] == ["closure", "shelter-admission"]
    again = await c.record(
        event_type="id.trafficking.case.shelter-admission",
        source=KEMENSOS,
        event_id="a-1",
        subject=case,
        time="2020-08-19T09:00:00Z",
        clear={"case_id": case},
    )
    assert again is None  # a redelivery changes nothing
    assert len(await store.events(case)) == 2


async def test_an_answer_recorded_before_its_referral_closes_the_step(
    store: Store, clock: ManualClock, world: World
) -> None:
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    referral_id = str(uuid.uuid4())
    await response(c, clock, "KBRI-KCH-2020-000129", referral_id)
    await c.record(
        event_type="id.trafficking.case.referral",
        source=KBRI,
        event_id=referral_id,
        subject="KBRI-KCH-2020-000129",
        time=_zulu(clock),
        clear={"case_id": "KBRI-KCH-2020-000129", "cas_ReferredOrganisation": KEMENSOS},
    )
    clock.advance(days=2)
    await c.tick()
    assert alerts.events == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
async def test_every_step_alerts_at_most_once_per_status(
    seed: int, tmp_path_factory: Any, world: World
) -> None:
    """Random referrals, answers (some late, some never) and ticks: per instance at most one ``active`` and
    at most one ``resolved`` alert, ``resolved`` only after ``active``, and only for late answers."""
    rng = random.Random(seed)
    clock = ManualClock(datetime.fromisoformat("2020-08-01T00:00:00+00:00"))
    store = Store.sqlite(tmp_path_factory.mktemp("engine") / "c.db")
    await store.open()
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts)
    pending: list[tuple[str, str, float]] = []
    for n in range(20):
        action = rng.random()
        if action < 0.4:
            case = f"KBRI-KCH-2020-{n:06d}"
            pending.append((case, await referral(c, clock, case), clock.now().timestamp()))
        elif action < 0.7 and pending:
            case, referral_id, _ = pending.pop(rng.randrange(len(pending)))
            await response(c, clock, case, referral_id)
        elif action < 0.8:
            alerts.refuse = rng.randint(0, 2)
        clock.advance(hours=rng.choice([1, 6, 20, 30]))
        await c.tick()
    alerts.refuse = 0
    await c.tick()
    by_alert: dict[str, list[str]] = {}
    for _, data in alerts.events:
        by_alert.setdefault(data["alert_id"], []).append(data["alert_status"])
    assert all(statuses in (["active"], ["active", "resolved"]) for statuses in by_alert.values())
    states = {i.instance: i.state for i in await store.instances()}
    assert sum(s in ("overdue", "late") for s in states.values()) == len(by_alert)
    assert sum(s == "late" for s in states.values()) == sum(
        v == ["active", "resolved"] for v in by_alert.values()
    )
    await store.close()


def test_schemas_know_the_new_types(schemas: SchemaStore) -> None:
    assert {"id.trafficking.alert.sop-overdue", "id.trafficking.alert.statistics"} <= set(schemas.types())


_ = pytest
