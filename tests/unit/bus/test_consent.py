"""Consent at delivery: after a withdrawal or narrowing, later case events outside the remaining scope are
withheld from the agency sink; the change itself (and an erasure request) always reaches it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.bus.consent import ConsentGate, ConsentRegister, withholds
from gateway.bus.database import Database
from gateway.contract.verify import Accepted
from gateway.sandbox.memory import MemorySink
from tests.world import World, example

CASE = "KBRI-KCH-2020-000123"


def _accepted(world: World, name: str, data: dict[str, Any], by: str = "kemlu.kbri-kuching") -> Accepted:
    event = world.event(f"id.trafficking.{name}", data, by=by, recipients=["kemensos"])
    verdict = world.verifier("kemensos").verify_structured(event.to_structured())
    assert isinstance(verdict, Accepted), verdict
    return verdict


def _change(**fields: Any) -> dict[str, Any]:
    return {
        "case_id": CASE,
        "change": "withdrawn",
        "con_Consent": False,
        "scope": [],
        "effective_at": "2020-08-20T10:00:00+07:00",
        **fields,
    }


def _admission() -> dict[str, Any]:
    return {"case_id": CASE, "shelter_id": "rptc-pontianak", "admitted_at": "2020-08-21T10:00:00+07:00"}


def _plan() -> dict[str, Any]:
    plan = copy.deepcopy(example("case.repatriation-plan", "1.0")[0][1])
    plan["case_id"] = CASE
    return {k: v for k, v in plan.items() if k not in ("identity", "health", "child")}


async def _gate(
    tmp_path: Path,
) -> tuple[ConsentGate, MemorySink, ConsentRegister, Database, CollectorRegistry]:
    db = Database(tmp_path / "consent.db", durable=True)
    await db.open()
    register = ConsentRegister(db)
    await register.attach()
    sink, registry = MemorySink("agency"), CollectorRegistry()
    return ConsentGate(sink, register, ConsentGate.counter(registry)), sink, register, db, registry


async def test_withdrawal_stops_later_deliveries_and_reaches_the_sink(world: World, tmp_path: Path) -> None:
    gate, sink, _, db, metrics = await _gate(tmp_path)
    await gate.deliver(_accepted(world, "case.shelter-admission", _admission(), by="kemensos"))
    await gate.deliver(_accepted(world, "case.consent-change", _change(erasure_requested=True)))
    await gate.deliver(
        _accepted(
            world, "case.shelter-admission", {**_admission(), "shelter_id": "rptc-bambu-apus"}, by="kemensos"
        )
    )
    await gate.deliver(_accepted(world, "case.repatriation-plan", _plan()))
    assert [a.event.type.rsplit(".", 1)[1] for a in sink.events] == ["shelter-admission", "consent-change"]
    assert sink.events[1].data["erasure_requested"] is True  # the delete instruction reached the agency
    assert metrics.get_sample_value("xchg_withheld_total", {"reason": "privacy.consent-withdrawn"}) == 2
    await db.close()


async def test_narrowed_scope_keeps_what_remains_and_another_ground_overrides(
    world: World, tmp_path: Path
) -> None:
    gate, sink, register, db, _ = await _gate(tmp_path)
    await gate.deliver(
        _accepted(
            world,
            "case.consent-change",
            _change(
                change="scope-narrowed",
                con_Consent=True,
                scope=["data-sharing", "case-management"],
                withdrawn_scope=["repatriation"],
            ),
        )
    )
    await gate.deliver(_accepted(world, "case.shelter-admission", _admission(), by="kemensos"))
    await gate.deliver(_accepted(world, "case.repatriation-plan", _plan()))
    assert [a.event.type.rsplit(".", 1)[1] for a in sink.events] == ["consent-change", "shelter-admission"]
    # a later change naming a legal obligation (e.g. a criminal investigation) lets processing continue
    await gate.deliver(
        _accepted(
            world,
            "case.consent-change",
            _change(effective_at="2020-08-22T10:00:00+07:00", legal_basis="legal-obligation"),
        )
    )
    await gate.deliver(_accepted(world, "case.repatriation-plan", {**_plan(), "plan_status": "changed"}))
    assert sink.events[-1].event.type == "id.trafficking.case.repatriation-plan"
    # the register survives a restart
    reopened = ConsentRegister(db)
    await reopened.attach()
    assert reopened.state(CASE) == register.state(CASE)
    await db.close()


async def test_an_older_change_arriving_late_does_not_override_a_newer_one(
    world: World, tmp_path: Path
) -> None:
    gate, sink, register, db, _ = await _gate(tmp_path)
    await gate.deliver(
        _accepted(world, "case.consent-change", _change(effective_at="2020-08-25T10:00:00+07:00"))
    )
    await gate.deliver(
        _accepted(
            world,
            "case.consent-change",
            _change(
                change="given",
                con_Consent=True,
                scope=["data-sharing", "case-management"],
                effective_at="2020-08-19T10:00:00+07:00",
            ),
        )
    )
    state = register.state(CASE)
    assert state is not None
    assert state.scope == frozenset()
    assert len(sink.events) == 2  # both changes reach the agency system
    await db.close()


async def test_withholds_answers_as_the_gate_decides(world: World, tmp_path: Path) -> None:
    """The subscriber asks :func:`withholds` for the receipt's outcome: it must agree with the gate."""
    gate, sink, register, db, _ = await _gate(tmp_path)
    before = _accepted(world, "case.shelter-admission", _admission(), by="kemensos")
    change = _accepted(world, "case.consent-change", _change())
    after = _accepted(world, "case.repatriation-plan", _plan())
    answers = [withholds(register, before)]
    await gate.deliver(before)
    await gate.deliver(change)
    answers += [withholds(register, change), withholds(register, after)]
    await gate.deliver(after)
    assert answers == [False, False, True]
    assert [a.event.id for a in sink.events] == [before.event.id, change.event.id]
    await db.close()
