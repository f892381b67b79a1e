"""Signed delivery receipts on a real broker (issue 13; gateway/bus/receipts.py).

Four gateways (KBRI Kuching and Kuala Lumpur, Kemensos, IOM) exchange a sealed referral and an alert; each
recipient signs a receipt for every event it finishes and the sender's ledger matches them to its outbox:
``gateway status EVENT_ID`` answers delivered per recipient. Then receipts that must never mark anything
delivered, each published by a registered party whose signature verifies (the strongest forger there is):
a receipt for an event the sender never sent, one naming a record that differs from the one sent, and one
from a party that may not read the event's topic. Each is dead-lettered at the sender with its own reason
code, and the event's state is unchanged. Takes about 15 s on the embedded broker.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.bus.dlq import Selection, read_dead_letters
from gateway.bus.kafka import KafkaSettings
from gateway.bus.receipts import delivery_status
from gateway.cli.main import main
from gateway.contract.instants import format_utc
from gateway.contract.policy import dlq_topic
from gateway.contract.receipt import RECEIPT_TYPE, receipt_data
from tests.integration.exchange import Node, eventually, exchange, metric_total
from tests.world import example

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KCH, KL = "kemlu.kbri-kuching", "kemlu.kbri-kuala-lumpur"
PARTIES = [KCH, KL, "kemensos", "iom"]


def state(node: Node, event_id: str) -> dict[str, str]:
    found = delivery_status(node.gateway.config.data_dir / "outbox.db", event_id)
    return {} if found is None else found.state()


async def forge(node: Node, *, event_id: str, digest: str, topic: str) -> str:
    """``node`` signs and publishes a receipt with this content (its own key: the signature verifies)."""
    from datetime import UTC, datetime  # noqa: PLC0415 - local to the helper

    data: dict[str, Any] = receipt_data(
        event_id=event_id, event_source=KCH, event_type="id.trafficking.case.referral", digest=digest,
        read_from=(topic, 0, 0), outcome="delivered", reason=None, finished_at=format_utc(datetime.now(UTC)),
    )  # fmt: skip
    event = await node.gateway.publisher.publish(
        RECEIPT_TYPE, data, event_id=str(uuid.uuid4()), internal=True
    )
    return event.id


async def test_senders_get_signed_receipts_and_forged_ones_mark_nothing(
    tmp_path: Path, isolated_kafka: KafkaSettings
) -> None:
    async with exchange(tmp_path, PARTIES, isolated_kafka) as nodes:
        kch = nodes[KCH]
        referral = await kch.gateway.publisher.publish(
            "id.trafficking.case.referral", example("case.referral", "1.0")[0][1], recipients=["kemensos"]
        )
        alert = await kch.gateway.publisher.publish(
            "id.trafficking.alert.network", example("alert.network", "1.0")[0][1]
        )
        # the referral is sealed for Kemensos: its receipt is the one expected; the alert's readers are
        # every party the registry lets read KBRI Kuching's alert topic, of which Kemensos and IOM run here
        await eventually(
            lambda: (
                state(kch, referral.id).get("kemensos") == "delivered"
                and state(kch, alert.id).get("kemensos") == "delivered"
                and state(kch, alert.id).get("iom") == "delivered"
            ),
            what="signed receipts back at the sender",
        )
        assert state(kch, referral.id)["kemensos"] == "delivered"
        config = str(kch.sandbox.config)
        assert main(["status", "--config", config, referral.id]) == 0
        sent = delivery_status(kch.gateway.config.data_dir / "outbox.db", referral.id)
        assert sent is not None
        assert sent.expected == ("kemensos",)  # sealed for Kemensos: its receipt is the one that counts
        assert sent.complete

        # forged receipts, each signed by a registered party with its own key
        unknown = await forge(nodes["iom"], event_id=str(uuid.uuid4()), digest="0" * 64, topic=sent.topic)
        mismatch = await forge(nodes["kemensos"], event_id=alert.id, digest="1" * 64, topic=sent.topic)
        # KBRI Kuala Lumpur may not read KBRI Kuching's case topic: it cannot have received the referral
        not_recipient = await forge(
            nodes[KL], event_id=referral.id, digest=sent.record_sha256, topic=sent.topic
        )
        forged = {
            unknown: "receipt.unknown-event",
            mismatch: "receipt.digest-mismatch",
            not_recipient: "receipt.not-a-recipient",
        }

        async def dead_letters() -> dict[str, str]:
            letters = await read_dead_letters(kch.gateway.kafka, dlq_topic(KCH), select=Selection())
            return {str(letter.header("ce_id")): letter.reason for letter in letters}

        found: dict[str, str] = {}
        for _ in range(100):
            found = await dead_letters()
            if set(forged) <= set(found):
                break
        assert {rid: found.get(rid) for rid in forged} == forged
        assert metric_total(kch, "xchg_rejected_total", reason="receipt.unknown-event") == 1
        # nothing forged changed what the sender knows
        assert state(kch, referral.id)["kemensos"] == "delivered"
        assert KL not in state(kch, referral.id)
        assert state(kch, alert.id).get("kemensos") == "delivered"
        servers = ",".join(isolated_kafka.bootstrap_servers)
        listing = ["dlq", "list", "--config", config, "--bootstrap-servers", servers]
        # the CLI runs its own event loop: in a thread, as from a shell
        assert await asyncio.to_thread(main, [*listing, "--reason", "receipt.unknown-event"]) == 0
