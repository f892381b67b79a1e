"""Delivery receipts, the contract part: what a receipt says, how its digest and id are computed. Pure.

X-Road gives both sides of an exchange signed evidence of it; here the recipient gateway signs, for every
event it finishes, an ``id.trafficking.delivery.receipt`` (``schemas/delivery.receipt/``): the event's
``source`` and ``id``, the digest of the Kafka record it read (:func:`record_digest`, the
``record_sha256`` of the audit log's leaf for that record), where it read it, the outcome (``delivered``;
``withheld``: verified, but not handed to the agency system because the person withdrew or narrowed
consent; ``rejected`` or ``dead-lettered``) with the reason code, and the time. It is published like any
event of the recipient (signed, to ``xchg.<recipient>.delivery.v1``, logged by the notary) and read by the
sender, whose gateway matches it to its outbox (:mod:`gateway.bus.receipts`).

The receipt's CloudEvents ``id`` is derived (:func:`receipt_id`) from who issues it, the event, the outcome
and the record digest, so a receipt issued again (a record read again after a crash, a re-drive) has the
same id: the recipient's outbox and the sender's ledger keep it once, and an auditor can find the receipt
for a logged event from the log alone. A re-driven event that is delivered after being dead-lettered gets a
second receipt (another outcome, another id).

No personal data: ids, a digest, a position, codes and a time. Not even the case id: the receipt is keyed
by the event id, so a party that reads another's receipts learns nothing it could not read on the topic.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Iterable
from typing import Any, Final, Literal, get_args

from gateway.contract.canonical import canonical_json

__all__ = [
    "OUTCOMES",
    "RECEIPT_TYPE",
    "ReceiptOutcome",
    "receipt_data",
    "receipt_id",
    "record_digest",
]

RECEIPT_TYPE: Final = "id.trafficking.delivery.receipt"
ReceiptOutcome = Literal["delivered", "withheld", "rejected", "dead-lettered"]
OUTCOMES: Final[tuple[ReceiptOutcome, ...]] = get_args(ReceiptOutcome)

#: The namespace of receipt ids (UUID version 5 of ``urn:id.trafficking:delivery-receipt``).
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:id.trafficking:delivery-receipt")
_EVENT_TYPE: Final = re.compile(r"id\.trafficking\.[a-z][a-z0-9-]*\.[a-z][a-z0-9-]*")


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def record_digest(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]]) -> str:
    """Hex SHA-256 binding a whole Kafka record: ``JCS({"headers": [[name, b64|null]...], "key": b64|null,
    "value": b64|null})``, headers in record order. The audit log's leaves hold the same digest
    (``record_sha256``), the sender computes it over what it published, the recipient over what it read."""
    document = {
        "headers": [[name, _b64(raw)] for name, raw in headers],
        "key": _b64(key),
        "value": _b64(value),
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()


def receipt_id(recipient: str, source: str, event_id: str, outcome: str, digest: str) -> str:
    """The CloudEvents ``id`` of ``recipient``'s receipt with ``outcome`` for the record ``digest`` of
    ``source``'s event ``event_id``: a UUID version 5, the same whenever it is issued again."""
    name = "\n".join((recipient, source, event_id, outcome, digest))
    return str(uuid.uuid5(_NAMESPACE, name))


def receipt_data(
    *,
    event_id: str,
    event_source: str,
    event_type: str | None,
    digest: str,
    read_from: tuple[str, int, int],
    outcome: ReceiptOutcome,
    reason: str | None,
    finished_at: str,
) -> dict[str, Any]:
    """The payload of a receipt (``schemas/delivery.receipt``); ``event_type`` is left out when it does not
    have the shape of a type name (a rejected record may carry anything), ``reason`` for ``delivered``."""
    topic, partition, offset = read_from
    data: dict[str, Any] = {
        "event_id": event_id,
        "event_source": event_source,
        "record_sha256": digest,
        "read_from": {"topic": topic, "partition": partition, "offset": offset},
        "outcome": outcome,
        "finished_at": finished_at,
    }
    if event_type is not None and len(event_type) <= 128 and _EVENT_TYPE.fullmatch(event_type):
        data["event_type"] = event_type
    if outcome != "delivered":
        data["reason"] = reason or "gateway.internal-error"
    return data
