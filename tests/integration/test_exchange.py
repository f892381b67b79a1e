"""Several party gateways on one real broker: who receives what, exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gateway.bus.kafka import KafkaSettings
from tests.integration.exchange import eventually, exchange, metric_total, received_ids
from tests.world import example

KBRI_KCH, KBRI_KL = "kemlu.kbri-kuching", "kemlu.kbri-kuala-lumpur"
PARTIES = [KBRI_KCH, KBRI_KL, "kemensos", "iom"]


async def test_each_event_reaches_each_permitted_party_exactly_once(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    async with exchange(tmp_path, PARTIES, isolated_kafka) as nodes:
        referral = example("case.referral", "1.0")[0][1]
        published = {
            "kch-referral": await nodes[KBRI_KCH].gateway.publisher.publish(
                "id.trafficking.case.referral", referral, recipients=["kemensos", "iom"]
            ),
            "kl-referral": await nodes[KBRI_KL].gateway.publisher.publish(
                "id.trafficking.case.referral", referral, recipients=["kemensos"]
            ),
            "admission": await nodes["kemensos"].gateway.publisher.publish(
                "id.trafficking.case.shelter-admission",
                example("case.shelter-admission", "1.0")[0][1],
                recipients=[KBRI_KCH],
            ),
            "supply": await nodes["iom"].gateway.publisher.publish(
                "id.trafficking.alert.supply", example("alert.supply", "1.0")[0][1]
            ),
        }
        ids = {name: event.id for name, event in published.items()}
        ours = set(ids.values())
        expected = {  # from deploy/registry.example.toml's read permissions
            "kemensos": {ids["kch-referral"], ids["kl-referral"], ids["supply"]},
            "iom": {ids["kch-referral"], ids["kl-referral"], ids["admission"]},
            KBRI_KCH: {ids["admission"], ids["supply"]},
            KBRI_KL: {ids["admission"], ids["supply"]},
        }

        def complete() -> bool:
            return all(set(received_ids(nodes[p], ours)) >= expected[p] for p in expected)

        await eventually(complete, what="every permitted party to receive its events")
        for party, wanted in expected.items():
            counts = Counter(received_ids(nodes[party], ours))
            assert set(counts) == wanted, party  # nothing a party may not read
            assert all(n == 1 for n in counts.values()), (party, counts)  # exactly once

        # sealed identity opened for the named recipients only
        kemensos_view = next(a for a in nodes["kemensos"].sink.events if a.event.id == ids["kl-referral"])
        iom_view = next(a for a in nodes["iom"].sink.events if a.event.id == ids["kl-referral"])
        assert kemensos_view.payload()["identity"] == referral["identity"]
        assert "identity" not in iom_view.payload()
        for node in nodes.values():
            assert metric_total(node, "xchg_rejected_total") == 0
