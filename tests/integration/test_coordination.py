"""Case coordination and privacy rules between real gateways on a real broker, with the agency SIMULATORS.

KBRI Kuching refers a case to Kemensos (and IOM gets it too). Kemensos' gateway runs the SOP with an
injected clock: 26 hours later the unanswered referral is escalated by a signed ``alert.sop-overdue`` that
KBRI's gateway receives; Kemensos' late answer resolves it. Then the person withdraws consent and asks for
erasure: the consent change reaches the (simulated) Kemensos case system and IOM case system as a delete
instruction and both delete what they hold; a repatriation plan published afterwards is withheld from the
Kemensos case system (consent no longer covers it) while the gateway still records it.
"""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from adapters.simulators.iom import IomCaseSystemSimulator
from adapters.simulators.kemensos import KemensosCaseSystemSimulator
from gateway.bus.kafka import KafkaSettings
from gateway.bus.subscriber import Route
from gateway.coordination.clock import ManualClock
from gateway.runtime.config import GatewayConfig
from gateway.runtime.gateway import Gateway
from gateway.sandbox.deployment import create_sandbox
from gateway.sandbox.memory import MemorySink
from tests.integration.exchange import Node, eventually, kafka_table, metric_total
from tests.world import example

KBRI, KEMENSOS, IOM = "kemlu.kbri-kuching", "kemensos", "iom"
CASE = "KBRI-KCH-2020-000901"


def _of(node: Node, suffix: str) -> list[Any]:
    return [a for a in node.sink.events if a.event.type.endswith(suffix)]


async def test_sop_escalation_and_consent_withdrawal_with_erasure(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    clock = ManualClock(datetime.now(UTC))
    async with KemensosCaseSystemSimulator() as kemensos_system, IomCaseSystemSimulator() as iom_system:
        per_party: dict[str, dict[str, Any]] = {
            KBRI: {"sources": []},
            KEMENSOS: {
                "sources": [],
                "sinks": [
                    {
                        "kind": "kemensos-case-system",
                        "url": kemensos_system.url,
                        "types": ["id.trafficking.case.referral", "id.trafficking.case.repatriation-plan"],
                    }
                ],
                "coordination": {"sop_alerts": True, "tick_seconds": 0.2, "profiles": True},
            },
            IOM: {
                "sources": [],
                "sinks": [
                    {"kind": "iom-htcds", "url": iom_system.url, "types": ["id.trafficking.case.referral"]}
                ],
            },
        }
        sandbox = create_sandbox(
            tmp_path,
            list(per_party),
            bootstrap_servers=isolated_kafka.bootstrap_servers,
            settings={"kafka": kafka_table(isolated_kafka), "shutdown": {"timeout_seconds": 10.0}},
        )
        nodes: dict[str, Node] = {}
        try:
            for party, tables in per_party.items():
                config_path = sandbox[party].config
                config_path.write_text(
                    tomli_w.dumps({**tomllib.loads(config_path.read_text("utf-8")), **tables})
                )
                sink = MemorySink(f"{party}-observer")
                gateway = Gateway(GatewayConfig.load(config_path), routes=[Route(sink)], clock=clock)
                await gateway.start()
                nodes[party] = Node(party, sandbox[party], sink, gateway)
            kbri, kemensos = nodes[KBRI], nodes[KEMENSOS]

            referral = copy.deepcopy(example("case.referral", "1.0")[0][1])
            referral["case_id"] = CASE
            sent = await kbri.gateway.publisher.publish(
                "id.trafficking.case.referral", referral, recipients=[KEMENSOS, IOM]
            )
            await eventually(
                lambda: len(kemensos_system.cases) == 1 and len(iom_system.referrals) == 1,
                what="the referral at both case systems",
            )

            # 26 hours without an answer: Kemensos' gateway escalates, KBRI receives the signed alert
            clock.advance(hours=26)
            await eventually(
                lambda: len(_of(kbri, "alert.sop-overdue")) == 1, what="the overdue alert at KBRI"
            )
            [overdue] = _of(kbri, "alert.sop-overdue")
            assert overdue.event.source == KEMENSOS
            data = overdue.payload()
            assert (data["alert_status"], data["step_id"], data["case_id"]) == (
                "active",
                "referral-answered",
                CASE,
            )
            assert data["responsible_party"] == KEMENSOS
            assert data["hours_overdue"] >= 1

            # the late answer closes the breach: one resolved alert with the same alert id
            await kemensos.gateway.publisher.publish(
                "id.trafficking.case.referral-response",
                {"case_id": CASE, "referral_event": {"source": KBRI, "id": sent.id}, "status": "accepted"},
            )
            await eventually(
                lambda: len(_of(kbri, "alert.sop-overdue")) == 2, what="the resolved alert at KBRI"
            )
            resolved = _of(kbri, "alert.sop-overdue")[1].payload()
            assert (resolved["alert_status"], resolved["alert_id"]) == ("resolved", data["alert_id"])
            clock.advance(hours=48)
            assert kemensos.gateway.coordinator is not None
            states = [i.state for i in await kemensos.gateway.coordinator.store.instances()]
            assert states.count("late") == 1
            # the same story in the gateway's /metrics (step ids only), and never at KBRI (no coordination)
            step = {"step": "referral-answered"}
            assert metric_total(kemensos, "xchg_sop_escalations_total", **step) == 1
            assert metric_total(kemensos, "xchg_sop_resolutions_total", outcome="late", **step) == 1
            assert metric_total(kemensos, "xchg_sop_steps_overdue", **step) == 0
            assert CASE not in kemensos.gateway.metrics.render().decode()
            assert metric_total(kbri, "xchg_sop_escalations_total") == 0

            # withdrawal with erasure: every agency system gets it as a delete instruction
            await kbri.gateway.publisher.publish(
                "id.trafficking.case.consent-change",
                {
                    "case_id": CASE,
                    "change": "withdrawn",
                    "con_Consent": False,
                    "scope": [],
                    "effective_at": clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "erasure_requested": True,
                },
            )
            await eventually(
                lambda: kemensos_system.erased == [CASE] and iom_system.erased == [CASE],
                what="the erasure at both case systems",
            )
            assert kemensos_system.cases == {}  # the Kemensos case system deleted the referral
            assert iom_system.referrals == []
            assert kemensos_system.consent_changes[0]["hapus_data"] is True
            assert iom_system.consent_changes[0]["xchg"]["erasure_requested"] is True

            # a later plan is recorded by the gateway but withheld from the Kemensos case system
            plan = {
                k: v
                for k, v in copy.deepcopy(example("case.repatriation-plan", "1.0")[0][1]).items()
                if k not in ("identity", "health", "child")
            }
            plan["case_id"] = CASE
            await kbri.gateway.publisher.publish("id.trafficking.case.repatriation-plan", plan)
            await eventually(
                lambda: len(_of(kemensos, "case.repatriation-plan")) == 1, what="the plan at Kemensos"
            )
            await eventually(
                lambda: metric_total(kemensos, "xchg_withheld_total") == 1, what="the plan withheld"
            )
            assert kemensos_system.cases == {}
            assert kemensos.gateway.coordinator is not None
            assert tuple(c for c, _ in await kemensos.gateway.coordinator.store.erasures()) == (CASE,)
            for node in nodes.values():
                assert metric_total(node, "xchg_rejected_total") == 0
        finally:
            for node in nodes.values():
                await node.gateway.stop()
