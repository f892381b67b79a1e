"""The coordination layer's Prometheus metrics, driven by an injected clock on SQLite and PostgreSQL: a step
opens, goes overdue (gauge and escalation counter move), is closed late or in time (they move back), and
the monthly statistics leave their count and timestamps. Labels are SOP step ids only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from gateway.bus.metrics import GatewayMetrics
from gateway.coordination.clock import ManualClock
from gateway.coordination.config import CoordinationConfig
from gateway.coordination.metrics import CoordinationMetrics
from gateway.coordination.service import Coordinator
from gateway.coordination.store import Store
from gateway.runtime.status import read_metrics
from tests.unit.coordination.test_engine import KEMENSOS, Alerts, coordinator, referral, response
from tests.world import World

STEP = "referral-answered"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_an_overdue_step_moves_the_gauges_and_counters_and_its_resolution_moves_them_back(
    store: Store, clock: ManualClock, world: World
) -> None:
    gateway = GatewayMetrics(party="kemensos")  # on the gateway's registry, as the runtime wires it
    c = Coordinator(
        CoordinationConfig(sop_alerts=True), party=KEMENSOS, registry=world.registry, schemas=world.schemas,
        publish=Alerts(), clock=clock, store=store, metrics=CoordinationMetrics(gateway.registry),
    )  # fmt: skip
    r = gateway.registry
    assert value(r, "xchg_sop_steps_open", step=STEP) == 0  # every step of the SOP exists at 0
    assert value(r, "xchg_sop_steps_overdue", step="data-incident-notified") == 0

    first = await referral(c, clock, "KBRI-KCH-2020-000301")
    second = await referral(c, clock, "KBRI-KCH-2020-000302")
    assert value(r, "xchg_sop_steps_open", step=STEP) == 2  # counted in the commit that opened them
    assert value(r, "xchg_sop_steps_overdue", step=STEP) == 0
    clock.advance(hours=23)
    await c.tick()
    assert value(r, "xchg_sop_steps_overdue", step=STEP) == 0
    assert value(r, "xchg_sop_escalations_total", step=STEP) == 0

    await response(c, clock, "KBRI-KCH-2020-000302", second)  # in time
    assert value(r, "xchg_sop_resolutions_total", step=STEP, outcome="met") == 1
    assert value(r, "xchg_sop_steps_open", step=STEP) == 1

    clock.advance(hours=2)  # the first referral is now 25 h old
    await c.tick()
    await c.tick()  # once per step, however often the clock ticks
    assert value(r, "xchg_sop_steps_overdue", step=STEP) == 1
    assert value(r, "xchg_sop_steps_open", step=STEP) == 1  # overdue steps are still open
    assert value(r, "xchg_sop_escalations_total", step=STEP) == 1

    await response(c, clock, "KBRI-KCH-2020-000301", first)  # late: closes the breach
    assert value(r, "xchg_sop_steps_overdue", step=STEP) == 0
    assert value(r, "xchg_sop_steps_open", step=STEP) == 0
    assert value(r, "xchg_sop_resolutions_total", step=STEP, outcome="late") == 1
    assert value(r, "xchg_sop_resolutions_total", step=STEP, outcome="met") == 1
    assert value(r, "xchg_sop_escalations_total", step=STEP) == 1  # a counter never moves back

    exported = gateway.render().decode()
    assert "KBRI-KCH" not in exported  # no case id, as label or otherwise
    labels = {k for (name, lb) in read_metrics(r) if name.startswith("xchg_sop_") for k, _ in lb}
    assert labels == {"step", "outcome"}


async def test_a_restarted_coordinator_recounts_the_gauges_from_the_store(
    store: Store, clock: ManualClock, world: World
) -> None:
    c = coordinator(store, clock, world, Alerts())
    await referral(c, clock, "KBRI-KCH-2020-000303")
    clock.advance(days=2)
    await c.tick()
    assert value(c.metrics.registry, "xchg_sop_steps_overdue", step=STEP) == 1

    restarted = coordinator(store, clock, world, Alerts())  # fresh metrics at 0, same store
    assert value(restarted.metrics.registry, "xchg_sop_steps_overdue", step=STEP) == 0
    await restarted.tick()
    assert value(restarted.metrics.registry, "xchg_sop_steps_overdue", step=STEP) == 1
    assert value(restarted.metrics.registry, "xchg_sop_escalations_total", step=STEP) == 0  # not again


async def test_published_statistics_leave_their_count_period_and_time(store: Store, world: World) -> None:
    clock = ManualClock(datetime(2020, 9, 2, 6, 0, tzinfo=UTC))
    alerts = Alerts()
    c = coordinator(store, clock, world, alerts, statistics=True)
    r = c.metrics.registry
    assert value(r, "xchg_statistics_published_total") == 0
    await c.tick()
    await c.tick()  # the same figures are not published twice
    assert value(r, "xchg_statistics_published_total") == 1
    assert (
        value(r, "xchg_statistics_period_timestamp_seconds") == datetime(2020, 8, 1, tzinfo=UTC).timestamp()
    )
    assert value(r, "xchg_statistics_published_timestamp_seconds") == clock.now().timestamp()

    alerts.refuse = 1  # a refused publish is not counted
    clock.advance(days=30)
    await c.tick()
    assert value(r, "xchg_statistics_published_total") == 1
    await c.tick()
    assert value(r, "xchg_statistics_published_total") == 2
    assert (
        value(r, "xchg_statistics_period_timestamp_seconds") == datetime(2020, 9, 1, tzinfo=UTC).timestamp()
    )


def test_outcomes_are_met_or_late_only() -> None:
    metrics = CoordinationMetrics()
    metrics.declare(["referral-answered", "return-planned"])
    metrics.resolved("referral-answered", "met")
    with pytest.raises(ValueError, match="outcome"):
        metrics.resolved("referral-answered", "KBRI-KCH-2020-000301")
    outcomes = {dict(lb)["outcome"] for (name, lb) in read_metrics(metrics.registry) if "resolutions" in name}
    assert outcomes == {"met", "late"}
